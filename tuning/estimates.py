"""GPU memory a training job needs, per GPU, from the base model's config.json alone.

Pure Python (the functions import it at submit time; no torch). `ModelShape.from_config`
reads a Hugging Face config dict (Gemma 2, Gemma 3 text, Gemma 3 multimodal with
`text_config` and `vision_config`) and counts the parameters exactly as transformers builds
the model; `estimate_training_memory` adds up what one training step holds on a GPU:

- weights: bfloat16 (2 B/param); QLoRA keeps the language model's linear layers in 4-bit NF4
  and everything else (embeddings, norms, the vision tower) in bfloat16; Full keeps float32
  master weights (the trainer loads them: trainer/modeling.py) plus the bfloat16 copies autocast
  caches during the forward; LoRA adapters in float32 (PEFT upcasts them).
- gradients and AdamW state (two float32 moments) for the trainable parameters only.
- activations: what autograd keeps per token and per decoder layer, Korthikanti et al. 2022
  (https://arxiv.org/abs/2205.05198, section 4.1) redone for Gemma's layer; with gradient
  checkpointing, each layer's input plus one layer recomputed (their "full recomputation").
- logits: TRL's fused LM head (SFT, DPO, GRPO) projects tiles of tokens, never the whole
  (tokens x vocabulary) matrix; ORPO materialises float32 full-vocabulary logits; GRPO adds
  the KV cache its generation fills.
- overhead: CUDA context and allocator fragmentation, plus FSDP's gathered layers.

The figures it is checked against, with their sources, are in tests/unit/test_estimates.py.
Not modelled: image activations of vision jobs (the vision tower's weights are counted),
LoRA dropout's copies of the layer inputs, and optimizers other than AdamW.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GIB = 1024**3

METHODS = ("LoRA", "QLoRA", "Full")
TRAINER_TYPES = ("sft", "dpo", "orpo", "grpo")

# bitsandbytes NF4 as the trainer configures it (trainer/modeling.py: nf4, double quantization):
# 4 bits a weight, one absmax per block of 64 weights quantized to 8 bits, and a float32
# constant per 256 of those. https://huggingface.co/docs/bitsandbytes/main/en/reference/nn/linear4bit
NF4_BYTES_PER_PARAMETER = 0.5 + 1 / 64 + 4 / (64 * 256)

# TRL's fused LM head (trl/trainer/utils.py `add_fused_lm_head`, trl/kernels/chunked_logprob.py,
# TRL 1.16) projects at most 4096 tokens x 32768 vocabulary entries at a time, in float32.
FUSED_HEAD_TOKENS = 4096
FUSED_HEAD_VOCABULARY = 32768

# CUDA context, cuBLAS workspaces and the NCCL/allocator pools a process holds before its first
# tensor, then what PyTorch's caching allocator loses to fragmentation as a share of the rest.
CUDA_CONTEXT_BYTES = GIB
FRAGMENTATION = 0.05

# transformers' defaults for the keys a Hub config leaves out (google/gemma-3-4b-it's
# config.json names neither heads, head_dim nor vocab_size: transformers fills them in).
# Values from transformers 5's Gemma3TextConfig, Gemma2Config and SiglipVisionConfig.
_TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {
        "vocab_size": 262_208,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "sliding_window": 4096,
        "tie_word_embeddings": True,
    },
    "gemma2": {
        "vocab_size": 256_000,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "sliding_window": 4096,
        "tie_word_embeddings": True,
        "attn_logit_softcapping": 50.0,
    },
}
_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 16,
    "vision_use_head": True,
}
# Gemma 3 makes every sixth layer global, the others sliding-window (Gemma3TextConfig's
# sliding_window_pattern); Gemma 2 alternates, sliding first.
_SLIDING_PATTERN = {"gemma3_text": 6, "gemma2": 2}


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a model that decide its training memory, read from its config.json."""

    parameters: int  # everything the checkpoint holds: language model, vision tower, projector
    language_parameters: int  # the language model alone (embeddings, layers, norms)
    layers: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    heads: int
    kv_heads: int
    head_dim: int
    language_linear_parameters: int = 0  # the decoder layers' projections: LoRA's and NF4's share
    sliding_window: int | None = None
    sliding_layers: int = 0  # layers whose attention (and KV cache) is limited to the window
    # Gemma 2 soft-caps attention logits, which SDPA cannot: transformers runs eager attention,
    # which keeps the (heads x seq x seq) scores for the backward pass.
    eager_attention: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelShape:
        """Read a config.json dict; raise ValueError naming a key it lacks."""
        text = config.get("text_config")
        if text is not None and not isinstance(text, Mapping):
            raise ValueError("config.json: text_config must be an object")
        text_config: Mapping[str, Any] = text if text is not None else config
        model_type = str(text_config.get("model_type") or _text_model_type(config))
        defaults = _TEXT_DEFAULTS.get(model_type, {})

        def read(key: str) -> int:
            value = text_config.get(key, defaults.get(key))
            if value is None:
                where = "text_config." if text is not None else ""
                raise ValueError(f"config.json has no {where}{key}")
            return int(value)

        hidden = read("hidden_size")
        intermediate = read("intermediate_size")
        layers = read("num_hidden_layers")
        heads = read("num_attention_heads")
        kv_heads = text_config.get("num_key_value_heads", defaults.get("num_key_value_heads"))
        kv = int(kv_heads) if kv_heads is not None else heads
        head_dim_value = text_config.get("head_dim", defaults.get("head_dim"))
        head_dim = int(head_dim_value) if head_dim_value is not None else hidden // heads
        vocab = read("vocab_size")

        q_out, kv_out = heads * head_dim, kv * head_dim
        linear_per_layer = (
            hidden * (q_out + 2 * kv_out) + q_out * hidden + 3 * hidden * intermediate
        )
        # Gemma 2 and 3: four RMSNorms around attention and MLP; Gemma 3 also normalises q and k.
        norms_per_layer = 4 * hidden + (2 * head_dim if model_type == "gemma3_text" else 0)
        tied = text_config.get("tie_word_embeddings", config.get("tie_word_embeddings", True))
        embeddings = vocab * hidden * (1 if tied in (None, True) else 2)
        linear = layers * linear_per_layer
        language = linear + layers * norms_per_layer + embeddings + hidden  # + final norm

        vision = _vision_parameters(config, hidden)
        window_value = text_config.get("sliding_window", defaults.get("sliding_window"))
        window = int(window_value) if window_value else None
        layer_types = text_config.get("layer_types")
        pattern = _SLIDING_PATTERN.get(model_type)
        sliding = 0
        if window and isinstance(layer_types, list):
            sliding = sum(1 for kind in layer_types if kind == "sliding_attention")
        elif window and pattern:
            sliding = sum(1 for index in range(layers) if (index + 1) % pattern)
        softcap = text_config.get("attn_logit_softcapping", defaults.get("attn_logit_softcapping"))
        return cls(
            parameters=language + vision,
            language_parameters=language,
            layers=layers,
            hidden_size=hidden,
            intermediate_size=intermediate,
            vocab_size=vocab,
            heads=heads,
            kv_heads=kv,
            head_dim=head_dim,
            language_linear_parameters=linear,
            sliding_window=window,
            sliding_layers=sliding,
            eager_attention=softcap is not None,
        )

    def lora_parameters(self, rank: int) -> int:
        """LoRA on every decoder linear layer ("all-linear", not the LM head): r x (in + out)."""
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
        return self.layers * rank * per_layer

    def layer_parameters(self) -> int:
        """One decoder layer's weights (what FSDP gathers at a time)."""
        return self.language_linear_parameters // max(self.layers, 1) + 4 * self.hidden_size


def _text_model_type(config: Mapping[str, Any]) -> str:
    model_type = str(config.get("model_type", ""))
    return "gemma3_text" if model_type == "gemma3" else model_type


def _vision_parameters(config: Mapping[str, Any], text_hidden: int) -> int:
    """SigLIP's vision tower and Gemma 3's projector, as transformers builds them."""
    vision = config.get("vision_config")
    if not isinstance(vision, Mapping):
        return 0

    def read(key: str) -> int:
        return int(vision.get(key, _VISION_DEFAULTS[key]))

    h, i, layers = read("hidden_size"), read("intermediate_size"), read("num_hidden_layers")
    patch, channels = read("patch_size"), read("num_channels")
    patches = (read("image_size") // patch) ** 2
    embeddings = channels * patch * patch * h + h + patches * h  # conv with bias, positions
    # Two LayerNorms (weight and bias), q/k/v/out with biases, fc1 and fc2 with biases.
    per_layer = 2 * 2 * h + 4 * (h * h + h) + (h * i + i) + (i * h + h)
    tower = embeddings + layers * per_layer + 2 * h  # + post_layernorm
    if vision.get("vision_use_head", _VISION_DEFAULTS["vision_use_head"]):
        # The attention-pooling head: probe, torch MultiheadAttention, LayerNorm, MLP.
        tower += h + (3 * h * h + 3 * h + h * h + h) + 2 * h + (h * i + i) + (i * h + h)
    # Gemma 3's multi-modal projector: a (vision x text) matrix and an RMSNorm.
    projector = h * text_hidden + h if config.get("model_type") == "gemma3" else 0
    return tower + projector


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one GPU holds at the peak of a training step, by what holds them."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    overhead: int

    @property
    def total(self) -> int:
        return (
            self.weights
            + self.gradients
            + self.optimizer
            + self.activations
            + self.logits
            + self.overhead
        )

    def describe(self) -> str:
        """One line for error messages: GiB per part and in all."""
        parts = ", ".join(
            f"{name} {getattr(self, name) / GIB:.1f}"
            for name in ("weights", "gradients", "optimizer", "activations", "logits", "overhead")
        )
        return f"about {self.total / GIB:.1f} GiB per GPU ({parts} GiB)"


def estimate_training_memory(
    shape: ModelShape,
    *,
    method: str,
    trainer_type: str,
    max_seq_length: int,
    micro_batch: int,
    lora_rank: int,
    gradient_checkpointing: bool,
    bf16: bool = True,
    gpu_count: int = 1,
    packing: bool = False,
    num_generations: int = 4,
    max_completion_length: int = 256,
    beta: float | None = None,
    generation_batch: int | None = None,
) -> MemoryEstimate:
    """Peak GPU memory per GPU for one training step of the job.

    `max_seq_length` bounds one row's tokens (DPO/ORPO: prompt plus answer, for the chosen and
    the rejected row alike; GRPO: the prompt, to which `max_completion_length` is added). Rows
    are counted at that bound: a padded batch is as long as its longest row, and `packing`
    fills every row to it, so packing changes the typical step, not the peak.
    `beta`: GRPO's KL weight (TRL's default 0 builds no reference model); DPO always has one.
    `generation_batch`: completions GRPO generates at once (batch x gradient accumulation);
    by default one group of `num_generations` or the micro-batch, whichever is larger.
    With `gpu_count` above 1 the job runs under FSDP: weights, gradients and optimizer state
    are sharded across the GPUs, activations are not.
    """
    del packing  # the bound is the same either way (see the docstring)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if trainer_type not in TRAINER_TYPES:
        raise ValueError(f"trainer_type must be one of {', '.join(TRAINER_TYPES)}")
    if min(max_seq_length, micro_batch, gpu_count) < 1:
        raise ValueError("max_seq_length, micro_batch and gpu_count must be at least 1")

    compute_bytes = 2 if bf16 else 4
    lora = shape.lora_parameters(lora_rank) if method != "Full" else 0

    # Weights.
    if method == "Full":
        # float32 masters, and the compute-dtype copy of each that torch.autocast caches until
        # the forward ends (https://pytorch.org/docs/stable/amp.html, cache_enabled). Under
        # FSDP2 the copies are per gathered layer, counted in the overhead below.
        weights = 4 * shape.parameters
        if bf16 and gpu_count == 1:
            weights += compute_bytes * shape.parameters
        trainable = shape.parameters
    elif method == "QLoRA":
        kept = shape.parameters - shape.language_linear_parameters
        weights = round(NF4_BYTES_PER_PARAMETER * shape.language_linear_parameters)
        weights += compute_bytes * kept + 4 * lora
        trainable = lora
    else:
        weights = compute_bytes * shape.parameters + 4 * lora
        trainable = lora
    reference_wanted = trainer_type == "dpo" or (trainer_type == "grpo" and bool(beta))
    if reference_wanted and method == "Full":
        # A second, frozen copy for the reference log-probs; under LoRA TRL switches the adapter
        # off instead and needs no copy.
        weights += compute_bytes * shape.parameters
    gradients = 4 * trainable  # gradients take their parameter's dtype: float32 here
    optimizer = 8 * trainable  # AdamW: exp_avg and exp_avg_sq in float32

    # Activations: rows x tokens per row.
    rows, tokens_per_row = micro_batch, max_seq_length
    if trainer_type in ("dpo", "orpo"):
        rows = 2 * micro_batch  # chosen and rejected, concatenated into one batch
    if trainer_type == "grpo":
        tokens_per_row = max_seq_length + max_completion_length
    tokens = rows * tokens_per_row
    activations = _activation_bytes(
        shape, rows, tokens_per_row, gradient_checkpointing, compute_bytes
    )

    # Logits.
    fused_tile = min(tokens, FUSED_HEAD_TOKENS) * min(shape.vocab_size, FUSED_HEAD_VOCABULARY)
    # TRL's ORPOTrainer takes the model's logits for chosen and rejected and computes the NLL
    # and log-odds from them in float32: 4 B per token per vocabulary entry. The fused head
    # holds one float32 tile and its gradient.
    logits = 4 * tokens * shape.vocab_size if trainer_type == "orpo" else 2 * 4 * fused_tile
    if trainer_type == "grpo":
        sequences = generation_batch or max(micro_batch, num_generations)
        logits += sequences * _kv_cache_bytes(shape, tokens_per_row, compute_bytes)
        logits += 4 * sequences * shape.vocab_size  # the last position's logits each step

    weights //= gpu_count
    gradients //= gpu_count
    optimizer //= gpu_count
    gathered = 0
    if gpu_count > 1:
        # FSDP2 gathers one layer for compute and prefetches the next, in compute dtype.
        gathered = 2 * compute_bytes * shape.layer_parameters()
    subtotal = weights + gradients + optimizer + activations + logits + gathered
    overhead = CUDA_CONTEXT_BYTES + gathered + round(FRAGMENTATION * subtotal)
    return MemoryEstimate(
        weights=int(weights),
        gradients=int(gradients),
        optimizer=int(optimizer),
        activations=int(activations),
        logits=int(logits),
        overhead=int(overhead),
    )


def _activation_bytes(
    shape: ModelShape,
    rows: int,
    tokens_per_row: int,
    gradient_checkpointing: bool,
    element: int,
) -> int:
    """What autograd keeps for the backward pass, in bytes.

    Per token and decoder layer, the tensors saved for backward, each `element` bytes an entry
    (Korthikanti et al.'s accounting, their 34·h for GPT with 4h MLP, redone for Gemma):
    the inputs of the four RMSNorms and of the q/k/v and gate/up projections (6h), the
    q/k/v projections before and after their norms (2·(q + 2kv)), the attention output that
    o_proj reads (q), the down projection's output (h is counted with the norms), and the
    MLP's gate, up, activation and product (4i). Memory-efficient attention (SDPA,
    FlashAttention) keeps no scores; eager attention keeps the scores and their softmax
    (2 · heads · window, per token).
    """
    h, i = shape.hidden_size, shape.intermediate_size
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    per_token_layer = element * (6 * h + 2 * (q + 2 * kv) + q + 4 * i)
    scores_per_token_layer = 0
    if shape.eager_attention:
        scores_per_token_layer = 2 * element * shape.heads * tokens_per_row
    tokens = rows * tokens_per_row
    one_layer = tokens * (per_token_layer + scores_per_token_layer)
    outside_layers = tokens * element * 4 * h  # embeddings, their scaling, the final norm
    if gradient_checkpointing:
        # Each checkpointed layer keeps its input; the backward recomputes one layer at a time.
        return tokens * element * h * shape.layers + one_layer + outside_layers
    return shape.layers * one_layer + outside_layers


def _kv_cache_bytes(shape: ModelShape, length: int, element: int) -> int:
    """One sequence's keys and values over `length` tokens; sliding layers keep only the window."""
    per_token_layer = 2 * shape.kv_heads * shape.head_dim * element
    window = shape.sliding_window or length
    global_layers = shape.layers - shape.sliding_layers
    return per_token_layer * (global_layers * length + shape.sliding_layers * min(length, window))
