"""GGUF export of a merged 16-bit model, each file checked by loading it back.

    files = export_gguf(merged_dir, out_dir, [GgufQuantization.Q8_0], tools=LlamaCppTools.locate())

f16, bf16 and q8_0 come straight from llama.cpp's converter; q4_k_m is llama-quantize's K-quant
mix of a bf16 conversion. Before a file lands in `out_dir` as `model-{quant}.gguf` it must pass
`verify_gguf`: its metadata matches the merged config, the chat turn markers are single control
tokens, and transformers' GGUF loader gives next-token logits within a per-quantization tolerance
of the merged model's. A failed step raises `GgufExportError` naming the file and what differed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import UnsupportedError
from trainer.llama_cpp import (
    GGUF_INCOMPATIBLE_FIX,
    GgufExportError,
    GgufIncompatibleModelError,
    LlamaCppTools,
)
from tuning.spec import GgufQuantization

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "GgufExportError",
    "GgufIncompatibleModelError",
    "LogitDifference",
    "Tolerance",
    "export_gguf",
    "gguf_file_name",
    "verify_gguf",
]

logger = logging.getLogger(__name__)

Q = GgufQuantization
# The converter writes these three itself; llama-quantize makes the K-quant from a bf16 file.
CONVERTER_OUTTYPES = {Q.F16: "f16", Q.BF16: "bf16", Q.Q8_0: "q8_0"}
QUANTIZER_TYPES = {Q.Q4_K_M: "Q4_K_M"}
# `general.file_type` as llama.cpp's LlamaFileType numbers them.
FILE_TYPES = {Q.F16: 1, Q.BF16: 32, Q.Q8_0: 7, Q.Q4_K_M: 15}
# transformers model_type -> GGUF architecture, for the families this export is tested on.
ARCHITECTURES = {"gemma3_text": "gemma3", "gemma2": "gemma2"}
# What llama.cpp assumes of each, since GGUF does not say (see llama_cpp_incompatibilities).
GLOBAL_LAYER_EVERY = {"gemma3": 6, "gemma2": 2}
LAYERS_OF_27B = {"gemma3": 62, "gemma2": 46}
# Values llama.cpp uses when a key is absent (the converter omits the rope base for Gemma 2).
LLAMA_CPP_DEFAULTS = {"rope.freq_base": 10000.0}
CHAT_TOKENS = ("<start_of_turn>", "<end_of_turn>")
# gguf's TokenType: CONTROL and USER_DEFINED tokens are matched whole by llama.cpp's tokenizer;
# a NORMAL "<start_of_turn>" would be split into pieces when a prompt contains it.
SPECIAL_TOKEN_TYPES = {3: "control", 4: "user-defined"}
TOKEN_TYPE_NAMES = {1: "normal", 2: "unknown", 3: "control", 4: "user-defined", 5: "unused"}
SENTENCEPIECE_MODEL = "tokenizer.model"
TOKENIZER_CONFIG = "tokenizer_config.json"
# Fixed prompts for the round trip: plain text and a chat turn, so the turn markers' rows count.
PROMPTS = (
    "The quick brown fox jumps over the lazy dog, and then it",
    "Question: what is twelve times seven?\nAnswer:",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Les rivières de montagne sont froides au printemps, car la neige",
)
CHAT_PROMPT = ({"role": "user", "content": "Write one short sentence about the sea."},)


def gguf_file_name(quantization: GgufQuantization | str) -> str:
    """`model-{quant}.gguf`, as `StorageLayout.gguf_uri` names the uploaded file."""
    return f"model-{GgufQuantization(quantization).value}.gguf"


# ---------------------------------------------------------------------------------------------
# Tolerances


@dataclass(frozen=True)
class LogitDifference:
    """How far a GGUF's next-token logits are from the merged model's, over all prompt positions.

    Differences are relative to the standard deviation of the reference logits, so that the
    numbers mean the same for a tiny random model and a real one.
    """

    max_abs: float
    rel_max: float  # max |gguf - merged| / std(merged)
    rel_rms: float  # rms(gguf - merged) / std(merged)
    top1_agreement: float  # share of positions whose most likely next token is the same
    positions: int

    def describe(self) -> str:
        return (
            f"max |diff| {self.max_abs:.4g} ({self.rel_max:.4g} x logit std), "
            f"rms {self.rel_rms:.4g} x std, top-1 agreement {self.top1_agreement:.1%} "
            f"of {self.positions} positions"
        )


@dataclass(frozen=True)
class Tolerance:
    max_rel_rms: float
    max_rel_max: float
    min_top1_agreement: float

    def violations(self, difference: LogitDifference) -> list[str]:
        problems = []
        if not difference.rel_rms <= self.max_rel_rms:  # `not <=` also catches NaN
            problems.append(f"rms {difference.rel_rms:.4g} x std > {self.max_rel_rms}")
        if not difference.rel_max <= self.max_rel_max:
            problems.append(f"max {difference.rel_max:.4g} x std > {self.max_rel_max}")
        if not difference.top1_agreement >= self.min_top1_agreement:
            problems.append(
                f"top-1 agreement {difference.top1_agreement:.1%} < {self.min_top1_agreement:.0%}"
            )
        return problems


# Set from measurements (relative rms / relative max / top-1), with margins of 2.5-10x:
#   tiny Gemma 3 (2 layers, hidden 256), bf16 weights: f16 3e-7 / 3e-6, bf16 exact,
#     q8_0 0.015 / 0.09, q4_k_m 0.15 / 0.87, top-1 100%; float32 weights: f16 6e-4 / 3e-3,
#     bf16 4.6e-3 / 0.025;
#   Gemma 3 270M (18 layers, weights jittered off the grid of the q4_k_m file it came from):
#     f16 2e-6 / 1.4e-5, q8_0 0.041 / 0.34 / 96%, q4_k_m 0.20 / 1.5 / 88%.
# A tensor scaled or lost, a norm without its +1, or layers swapped are far beyond these; a
# quantized file's own error bounds what can be caught in it, so the 16-bit checks are tight.
TOLERANCES = {
    Q.F16: Tolerance(max_rel_rms=0.005, max_rel_max=0.05, min_top1_agreement=0.95),
    Q.BF16: Tolerance(max_rel_rms=0.03, max_rel_max=0.2, min_top1_agreement=0.9),
    Q.Q8_0: Tolerance(max_rel_rms=0.12, max_rel_max=1.0, min_top1_agreement=0.85),
    Q.Q4_K_M: Tolerance(max_rel_rms=0.5, max_rel_max=4.0, min_top1_agreement=0.6),
}


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> LogitDifference:
    """Compare [positions, vocab] logits of the merged model and of a GGUF."""
    import numpy as np

    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"logits of shape {candidate.shape}, expected {reference.shape}")
    difference = np.abs(candidate - reference)
    scale = float(reference.std()) or 1.0
    return LogitDifference(
        max_abs=float(difference.max()),
        rel_max=float(difference.max()) / scale,
        rel_rms=math.sqrt(float(np.mean(difference**2))) / scale,
        top1_agreement=float(np.mean(reference.argmax(-1) == candidate.argmax(-1))),
        positions=int(reference.shape[0]),
    )


# ---------------------------------------------------------------------------------------------
# What the file must say (pure: metadata and vocabulary as plain values)


def _rope_theta(config: Mapping[str, Any], attention: str) -> float | None:
    """A layer kind's rope base from a transformers 5 config, or from the older flat keys."""
    parameters = config.get("rope_parameters") or {}
    if isinstance(parameters.get(attention), Mapping):
        return parameters[attention].get("rope_theta")
    if attention == "full_attention":
        return config.get("rope_theta", parameters.get("rope_theta"))
    return config.get("rope_local_base_freq")


def expected_metadata(config: Mapping[str, Any]) -> dict[str, Any]:
    """The GGUF metadata values a faithful conversion of this config must carry."""
    arch = ARCHITECTURES[config["model_type"]]
    values = {
        "general.architecture": arch,
        f"{arch}.block_count": config.get("num_hidden_layers"),
        f"{arch}.embedding_length": config.get("hidden_size"),
        f"{arch}.feed_forward_length": config.get("intermediate_size"),
        f"{arch}.context_length": config.get("max_position_embeddings"),
        f"{arch}.attention.head_count": config.get("num_attention_heads"),
        f"{arch}.attention.head_count_kv": config.get("num_key_value_heads"),
        f"{arch}.attention.key_length": config.get("head_dim"),
        f"{arch}.attention.value_length": config.get("head_dim"),
        f"{arch}.attention.layer_norm_rms_epsilon": config.get("rms_norm_eps"),
        f"{arch}.attention.sliding_window": config.get("sliding_window"),
        f"{arch}.rope.freq_base": _rope_theta(config, "full_attention"),
        f"{arch}.rope.freq_base_swa": _rope_theta(config, "sliding_attention"),
        f"{arch}.attn_logit_softcapping": config.get("attn_logit_softcapping"),
        f"{arch}.final_logit_softcapping": config.get("final_logit_softcapping"),
    }
    return {key: value for key, value in values.items() if value is not None}


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def metadata_mismatches(metadata: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Each expected key that is missing or differs (floats to float32 precision)."""
    problems = []
    for key, want in expected.items():
        default = LLAMA_CPP_DEFAULTS.get(key.partition(".")[2])
        if key not in metadata and default is None:
            problems.append(f"{key} is missing (expected {_short(want)})")
            continue
        have = metadata.get(key, default)
        if isinstance(want, float) or isinstance(have, float):
            same = math.isclose(float(have), float(want), rel_tol=1e-6, abs_tol=1e-12)
        else:
            same = have == want
        if not same:
            problems.append(f"{key} is {_short(have)}, expected {_short(want)}")
    return problems


def llama_cpp_incompatibilities(config: Mapping[str, Any]) -> list[str]:
    """Settings of a Gemma config that llama.cpp would not run as transformers does.

    GGUF stores neither `query_pre_attn_scalar` nor `layer_types`: llama.cpp scales queries by
    1/sqrt(head_dim) (1/sqrt(hidden/heads) for the 27B models, which it knows by their layer
    count) and makes every sixth layer global in Gemma 3, every second in Gemma 2. Every released
    Gemma fits; a config that does not gives a GGUF that loads and runs but computes another
    model, which no round trip through transformers would show.
    """
    arch = ARCHITECTURES.get(config.get("model_type", ""))
    if arch is None:
        return []
    problems = []
    layers, hidden, heads, head_dim, scalar = (
        config.get(key)
        for key in (
            "num_hidden_layers",
            "hidden_size",
            "num_attention_heads",
            "head_dim",
            "query_pre_attn_scalar",
        )
    )
    is_27b = layers == LAYERS_OF_27B[arch]
    expected_scalar = hidden // heads if is_27b and hidden and heads else head_dim
    if scalar is not None and expected_scalar is not None and scalar != expected_scalar:
        problems.append(
            f"query_pre_attn_scalar is {scalar}, but llama.cpp scales attention by "
            f"1/sqrt({expected_scalar}) for this shape"
        )
    layer_types = config.get("layer_types")
    if layer_types and config.get("sliding_window") and layers:
        pattern = GLOBAL_LAYER_EVERY[arch]
        llama_cpp_types = [
            "full_attention" if (index + 1) % pattern == 0 else "sliding_attention"
            for index in range(layers)
        ]
        if list(layer_types) != llama_cpp_types:
            problems.append(
                f"layer_types is {list(layer_types)}, but llama.cpp makes every "
                f"{'sixth' if pattern == 6 else 'second'} layer global: {llama_cpp_types}"
            )
    return problems


def vocabulary_problems(
    tokens: Sequence[str], token_types: Sequence[int], expected_ids: Mapping[str, int]
) -> list[str]:
    """Each expected special token that is not a single control/user-defined token at its id."""
    problems = []
    for token, token_id in expected_ids.items():
        if not 0 <= token_id < len(tokens):
            problems.append(
                f"{token!r} (id {token_id}) is beyond the {len(tokens)}-token vocabulary"
            )
        elif tokens[token_id] != token:
            problems.append(f"id {token_id} is {tokens[token_id]!r}, expected {token!r}")
        elif token_types[token_id] not in SPECIAL_TOKEN_TYPES:
            kind = TOKEN_TYPE_NAMES.get(token_types[token_id], str(token_types[token_id]))
            problems.append(
                f"{token!r} (id {token_id}) has token type {kind}: llama.cpp would split it into "
                f"pieces in a prompt (expected control or user-defined)"
            )
    return problems


def completed_tokenizer_config(
    tokenizer_config: Mapping[str, Any], tokenizer_json: Mapping[str, Any]
) -> dict[str, Any]:
    """tokenizer_config.json with `added_tokens_decoder` filled in from tokenizer.json.

    transformers 5 drops `added_tokens_decoder` on save, and without it llama.cpp's converter
    types the turn markers as normal tokens. tokenizer.json still lists every added token.
    """
    from_json = {
        str(token["id"]): {
            key: token.get(key, False)
            for key in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
        }
        for token in tokenizer_json.get("added_tokens", [])
    }
    completed = dict(tokenizer_config)
    completed["added_tokens_decoder"] = from_json | dict(
        tokenizer_config.get("added_tokens_decoder") or {}
    )
    return completed


# ---------------------------------------------------------------------------------------------
# Export


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def check_exportable(merged_dir: Path) -> dict[str, Any]:
    """Refuse, before any conversion, a merged directory the export cannot turn into good GGUF."""
    config = _read_json(merged_dir / "config.json")
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise UnsupportedError(
            f"GGUF export supports {sorted(ARCHITECTURES)} models; {merged_dir} is {model_type!r}"
        )
    if not (merged_dir / SENTENCEPIECE_MODEL).is_file():
        raise GgufExportError(
            f"{merged_dir} has no {SENTENCEPIECE_MODEL}: llama.cpp reads Gemma's vocabulary from "
            f"the sentencepiece model, which transformers 5 save_pretrained does not write; copy "
            f"it from the base model snapshot into the merged directory before exporting GGUF"
        )
    if problems := llama_cpp_incompatibilities(config):
        raise incompatible_model_error(problems)
    return config


def incompatible_model_error(problems: list[str]) -> GgufIncompatibleModelError:
    """The user error for a model llama.cpp would misread: what differs, and what to change."""
    return GgufIncompatibleModelError(
        "export_config.include_gguf: llama.cpp would not run this model as transformers does "
        f"({'; '.join(problems)}), so its GGUF file would compute another model; "
        + GGUF_INCOMPATIBLE_FIX
    )


def _stage(merged_dir: Path, stage: Path) -> Path:
    """A view of merged_dir (symlinks) whose tokenizer_config.json lists the added tokens."""
    stage.mkdir(parents=True)
    for entry in merged_dir.iterdir():
        # Hidden entries include this export's own scratch dir when out_dir is merged_dir.
        if entry.name != TOKENIZER_CONFIG and not entry.name.startswith("."):
            (stage / entry.name).symlink_to(entry.resolve())
    tokenizer_config = merged_dir / TOKENIZER_CONFIG
    config = _read_json(tokenizer_config) if tokenizer_config.is_file() else {}
    tokenizer_json = merged_dir / "tokenizer.json"
    if tokenizer_json.is_file():
        config = completed_tokenizer_config(config, _read_json(tokenizer_json))
    (stage / TOKENIZER_CONFIG).write_text(json.dumps(config, ensure_ascii=False, indent=2))
    return stage


def export_gguf(
    merged_dir: Path,
    out_dir: Path,
    quantizations: Iterable[GgufQuantization | str],
    *,
    tools: LlamaCppTools,
    verify: bool = True,
    model_name: str | None = None,
    memory_limit: int | None = None,
    warn: Callable[[str], None] = logger.warning,
) -> dict[GgufQuantization, Path]:
    """Write `out_dir/model-{quant}.gguf` for each quantization, each verified; return the paths.

    `merged_dir` is a HF model directory in 16 bits with tokenizer.json and tokenizer.model.
    Only verified files are moved into `out_dir`; a failure leaves no partial file behind.
    The logits comparison holds a float32 copy of the model in memory; when that would not
    fit in `memory_limit` bytes (by default what this machine or container has free), only
    the metadata and vocabulary checks run and `warn` says so.
    """
    wanted = list(dict.fromkeys(GgufQuantization(q) for q in quantizations))
    if not wanted:
        return {}
    check_exportable(merged_dir)
    if any(q in QUANTIZER_TYPES for q in wanted):
        tools.require_quantizer()  # fail now, not after the 16-bit conversions
    out_dir.mkdir(parents=True, exist_ok=True)
    name = model_name or merged_dir.name
    check_logits = verify and _logit_check_fits(merged_dir, memory_limit, warn)
    reference = reference_logits(merged_dir) if check_logits else None
    written: dict[GgufQuantization, Path] = {}
    with tempfile.TemporaryDirectory(prefix=".gguf-export-", dir=out_dir) as scratch_name:
        scratch = Path(scratch_name)
        source = _stage(merged_dir, scratch / merged_dir.name)
        converted: dict[GgufQuantization, Path] = {}
        # Converter outputs first, so that a requested bf16 file doubles as the K-quant's input.
        for quantization in sorted(wanted, key=lambda q: q in QUANTIZER_TYPES):
            path = scratch / gguf_file_name(quantization)
            started = time.monotonic()
            if quantization in CONVERTER_OUTTYPES:
                outtype = CONVERTER_OUTTYPES[quantization]
                tools.convert(source, path, outtype, model_name=name)
            else:
                if Q.BF16 not in converted:
                    converted[Q.BF16] = scratch / "intermediate-bf16.gguf"
                    tools.convert(source, converted[Q.BF16], "bf16", model_name=name)
                tools.quantize(converted[Q.BF16], path, QUANTIZER_TYPES[quantization])
            converted[quantization] = path
            logger.info(
                "wrote %s (%d bytes) in %.1f s",
                path.name,
                path.stat().st_size,
                time.monotonic() - started,
            )
        if Q.BF16 in converted and Q.BF16 not in wanted:
            converted.pop(Q.BF16).unlink()  # the K-quant's input: a model's size in scratch space
        for quantization in wanted:
            path = converted[quantization]
            if verify:
                verify_gguf(
                    path, merged_dir, quantization, reference=reference, check_logits=check_logits
                )
            written[quantization] = out_dir / path.name
        for quantization, target in written.items():
            os.replace(converted[quantization], target)
    return written


# ---------------------------------------------------------------------------------------------
# Verification


@dataclass(frozen=True)
class GgufContents:
    """The parts of a GGUF file the checks read: scalar metadata, vocabulary, tensor names."""

    metadata: dict[str, Any]
    tokens: list[str]
    token_types: list[int]
    tensor_names: list[str]


def read_gguf(path: Path) -> GgufContents:
    """Parse a GGUF file's header; a truncated or corrupt file raises GgufExportError."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        metadata: dict[str, Any] = {}
        for key, field in reader.fields.items():
            if key.startswith("tokenizer.ggml.") and len(field.data) > 1:
                continue  # the token arrays, read below
            value = field.contents()
            if isinstance(value, str | int | float | bool):
                metadata[key] = value
        tokens = list(reader.fields["tokenizer.ggml.tokens"].contents())
        token_types = [int(t) for t in reader.fields["tokenizer.ggml.token_type"].contents()]
        names = [tensor.name for tensor in reader.tensors]
    except (ValueError, KeyError, IndexError, OSError) as error:
        raise GgufExportError(f"{path.name} is not a readable GGUF file: {error}") from error
    return GgufContents(metadata, tokens, token_types, names)


@dataclass(frozen=True)
class TokenizerFacts:
    """What the GGUF's vocabulary and metadata must say, from the merged model's tokenizer."""

    special_token_ids: dict[str, int]  # bos, eos and the turn markers: token -> id
    bos_token_id: int
    eos_token_id: int
    chat_template: str | None


@dataclass(frozen=True)
class ReferenceLogits(TokenizerFacts):
    """The merged model's next-token logits on the fixed prompts, computed once per export."""

    input_ids: list[list[int]]
    logits: Any  # numpy [positions, vocab]


def _prompt_ids(tokenizer: Any) -> list[list[int]]:
    prompts = [tokenizer(text).input_ids for text in PROMPTS]
    if tokenizer.chat_template:
        chat = tokenizer.apply_chat_template(
            list(CHAT_PROMPT), add_generation_prompt=True, tokenize=False
        )
        prompts.append(tokenizer(chat, add_special_tokens=False).input_ids)
    return prompts


def _special_token_ids(tokenizer: Any) -> dict[str, int]:
    """Ids of the tokens the GGUF must keep whole: bos, eos and the chat turn markers."""
    ids = {}
    for token in (tokenizer.bos_token, tokenizer.eos_token, *CHAT_TOKENS):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise GgufExportError(f"the merged tokenizer has no {token!r} token")
        ids[token] = token_id
    return ids


def _logits(model: Any, prompts: list[list[int]]) -> Any:
    import numpy as np
    import torch

    rows = []
    with torch.no_grad():
        for ids in prompts:
            output = model(torch.tensor([ids], device=model.device), use_cache=False)
            rows.append(output.logits[0].float().cpu().numpy())
    return np.concatenate(rows)


def _tokenizer_facts(tokenizer: Any) -> TokenizerFacts:
    return TokenizerFacts(
        special_token_ids=_special_token_ids(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        chat_template=tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None,
    )


def tokenizer_facts(merged_dir: Path) -> TokenizerFacts:
    from transformers import AutoTokenizer

    return _tokenizer_facts(AutoTokenizer.from_pretrained(merged_dir))


def reference_logits(merged_dir: Path, *, device: str = "cpu") -> ReferenceLogits:
    """Load the merged model in float32 and compute its logits on the fixed prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    prompts = _prompt_ids(tokenizer)
    model: Any = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    model.to(device).eval()
    try:
        logits = _logits(model, prompts)
    finally:
        del model
    facts = _tokenizer_facts(tokenizer)
    return ReferenceLogits(**vars(facts), input_ids=prompts, logits=logits)


# A float32 model in memory, with room for the loader's temporary copies (a GGUF is
# dequantized tensor by tensor) and the activations of a few short prompts.
FLOAT32_OVERHEAD = 1.5


def float32_bytes(merged_dir: Path) -> int:
    """What the 16-bit merged model weighs once loaded in float32."""
    return 2 * sum(path.stat().st_size for path in merged_dir.glob("*.safetensors"))


def available_memory_bytes() -> int:
    """Memory this process may still use: the container's limit when it has one, else the
    machine's available memory."""
    available = _meminfo_available()
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",  # cgroup v1
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # "max" or a huge number: no limit
            available = min(available, int(limit) - usage)
    return max(available, 0)


def _meminfo_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _logit_check_fits(
    merged_dir: Path, memory_limit: int | None, warn: Callable[[str], None]
) -> bool:
    needed = int(FLOAT32_OVERHEAD * float32_bytes(merged_dir))
    available = available_memory_bytes() if memory_limit is None else memory_limit
    if needed <= available:
        return True
    warn(
        f"GGUF files checked for metadata and vocabulary only: comparing their logits with "
        f"the merged model needs about {needed / 2**30:.1f} GiB of memory, "
        f"{available / 2**30:.1f} GiB is free"
    )
    return False


def gguf_logits(
    gguf_path: Path, merged_dir: Path, prompts: list[list[int]], device: str, label: str
) -> Any:
    """Load a GGUF with transformers (dequantized to float32) and compute the prompts' logits.

    The merged config is passed whole: GGUF does not store query_pre_attn_scalar, layer_types
    or the rope types, and `metadata_mismatches` has already checked what it does store.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(merged_dir)
    loaded: Any = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent,
        gguf_file=gguf_path.name,
        config=config,
        dtype=torch.float32,
        output_loading_info=True,
    )
    model, info = loaded
    missing = [key for key in info.get("missing_keys", ()) if key != "lm_head.weight"]
    if missing:
        raise GgufExportError(f"{label} lacks the tensors of {sorted(missing)}")
    model.to(device).eval()
    try:
        return _logits(model, prompts)
    finally:
        del model


def verify_gguf(
    gguf_path: Path,
    merged_dir: Path,
    quantization: GgufQuantization | str,
    *,
    reference: ReferenceLogits | None = None,
    device: str = "cpu",
    check_logits: bool = True,
) -> LogitDifference | None:
    """Check one GGUF against the merged model; raise GgufExportError saying what differs.

    Returns the logit difference, or None when `check_logits` is off (metadata and
    vocabulary checked only)."""
    quantization = GgufQuantization(quantization)
    label = f"{gguf_path.name} ({quantization.value})"
    config = _read_json(merged_dir / "config.json")
    if config.get("model_type") not in ARCHITECTURES:
        raise UnsupportedError(f"cannot verify GGUF of a {config.get('model_type')!r} model")
    if check_logits:
        reference = reference or reference_logits(merged_dir, device=device)
    tokens = reference or tokenizer_facts(merged_dir)
    contents = read_gguf(gguf_path)

    expected = expected_metadata(config) | {
        "general.file_type": FILE_TYPES[quantization],
        "tokenizer.ggml.bos_token_id": tokens.bos_token_id,
        "tokenizer.ggml.eos_token_id": tokens.eos_token_id,
    }
    if tokens.chat_template:  # what llama.cpp and Ollama format chats with
        expected["tokenizer.chat_template"] = tokens.chat_template
    problems = metadata_mismatches(contents.metadata, expected)
    if len(contents.tokens) != config.get("vocab_size"):
        problems.append(
            f"{len(contents.tokens)} tokens, expected vocab_size {config.get('vocab_size')}"
        )
    problems += vocabulary_problems(contents.tokens, contents.token_types, tokens.special_token_ids)
    if problems:
        raise GgufExportError(f"{label} does not match the merged model: " + "; ".join(problems))
    if not check_logits or reference is None:
        logger.info("%s matches the merged model's metadata and vocabulary", label)
        return None

    try:
        logits = gguf_logits(gguf_path, merged_dir, reference.input_ids, device, label)
    except GgufExportError:
        raise
    except Exception as error:  # any loader failure means the file is unusable; say which
        raise GgufExportError(f"{label} does not load in transformers: {error!r}") from error
    difference = compare_logits(reference.logits, logits)
    violations = TOLERANCES[quantization].violations(difference)
    if violations:
        raise GgufExportError(
            f"{label}: next-token logits differ from the merged model's beyond the "
            f"{quantization.value} tolerance ({'; '.join(violations)}); measured "
            f"{difference.describe()}"
        )
    logger.info("%s matches the merged model: %s", label, difference.describe())
    return difference
