"""Which dtype, attention kernel, batching and memory savers the hardware calls for.

The decisions are pure functions of a `Hardware` description so they can be
tested without a GPU; `detect()` is the only place that asks torch.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

FLASH_ATTENTION = "flash_attention_2"
SDPA = "sdpa"
EAGER = "eager"
# Above this many parameters activations dominate GPU memory: recomputing them costs ~20% time
# but lets the batch fit; below it (and on CPU) checkpointing only slows training down.
GRADIENT_CHECKPOINTING_MIN_PARAMETERS = 1_000_000_000


@dataclass(frozen=True)
class Hardware:
    cuda: bool
    bf16: bool  # the accelerator computes in bfloat16 natively
    flash_attention: bool  # the flash-attn package is importable (varlen kernels)
    name: str = "cpu"


def detect() -> Hardware:
    import torch

    if not torch.cuda.is_available():
        return Hardware(cuda=False, bf16=False, flash_attention=False)
    return Hardware(
        cuda=True,
        bf16=torch.cuda.is_bf16_supported(),
        flash_attention=importlib.util.find_spec("flash_attn") is not None,
        name=torch.cuda.get_device_name(0),
    )


def choose_attention(model_config: Any, *, use_fa2: bool, hardware: Hardware) -> str:
    """FlashAttention-2 whenever the GPU has it; else SDPA, or eager where Gemma 2 softcaps.

    `use_fa2` is a preference, not a requirement: the kernel is exact attention, so it is
    chosen whenever present (packed batches then train padding-free, through its varlen
    path); asking for it where it is absent only earns the job a warning (trainer/pipeline.py).
    """
    del use_fa2  # kept in the signature: callers state the user's preference
    if hardware.cuda and hardware.flash_attention:
        return FLASH_ATTENTION  # varlen kernel, and it implements softcapping
    text_config = (
        model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    )
    if getattr(text_config, "attn_logit_softcapping", None) is not None:
        return EAGER  # SDPA cannot softcap; Gemma 2 trains incorrectly without it
    return SDPA


def compute_dtype_name(hardware: Hardware) -> str:
    """bfloat16 on GPUs that have it; float32 elsewhere (CPU bf16 is emulated and slow)."""
    return "bfloat16" if hardware.cuda and hardware.bf16 else "float32"


def merge_dtype_name(hardware: Hardware) -> str:
    """The dtype a merged model is made and saved in: never float16, where Gemma overflows.

    Gemma's activations exceed float16's range (65504) and its outputs turn to NaN
    (https://github.com/huggingface/transformers/issues/36822); bfloat16 has float32's range.
    bfloat16 on a GPU that computes in it and on the CPU (torch implements it there, and the
    merge is one addition per weight); float32 on a GPU without it.
    """
    return "float32" if hardware.cuda and not hardware.bf16 else "bfloat16"


def wants_gradient_checkpointing(hardware: Hardware, parameter_count: int) -> bool:
    return hardware.cuda and parameter_count >= GRADIENT_CHECKPOINTING_MIN_PARAMETERS
