"""Attention one document at a time: packed rows without a varlen kernel and without a dense mask.

A packed row holds several documents, each with its own position ids from 0. With SDPA or
eager attention, transformers isolates them with a dense (row x row) block-diagonal mask: every
layer scores each token against the whole row, and SDPA's fused causal kernels do not take
such a mask. Measured on CPU (bench/trainer_throughput.py), that made packing slower than not
packing at all. Here each document of a packed row attends on its own (causal, and the layer's
sliding window where the document is longer than it), so attention costs what the documents
cost, as FlashAttention's varlen kernel does, with the kernels already present. The documents
come from the collator's `cu_seq_lens_q` (TRL's padding-free collator sends it) or, failing that,
from where the position ids restart, as transformers finds packed documents
(`masking_utils.find_packed_sequence_indices`).

Batches with a padding mask (unpacked rows, evaluation) and decoding with a cache go to the
underlying implementation unchanged, with the mask transformers makes for it.

    register()  # once per process, before a model is set to use it
    model.set_attn_implementation(document_attention_name("sdpa"))  # "document_sdpa"

Imported lazily (it needs torch and transformers).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from typing import Any, cast

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from trainer.batching import DOCUMENT_ATTENTION


def document_attention_name(attention: str) -> str:
    """The registered name of `attention` run one document at a time."""
    if attention not in DOCUMENT_ATTENTION:
        raise ValueError(f"no document-wise variant of {attention!r}: {sorted(DOCUMENT_ATTENTION)}")
    return DOCUMENT_ATTENTION[attention]


def register() -> None:
    """Register the document-wise variants with transformers (idempotent)."""
    mask_functions = AttentionMaskInterface._global_mapping
    for base, name in DOCUMENT_ATTENTION.items():
        AttentionInterface.register(name, _attention(base))
        base_mask = cast("Callable[..., Any]", mask_functions[base])
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, _mask(base_mask))


def document_bounds(
    seq_len: int,
    position_ids: torch.Tensor | None,
    cu_seq_lens: torch.Tensor | None,
    batch_size: int,
) -> list[list[tuple[int, int]]]:
    """Per row of the batch, the (start, end) of each document."""
    if cu_seq_lens is not None and batch_size == 1:
        cached = _cache.get("cu")
        if cached is not None and cached[0] is cu_seq_lens:
            return cached[1]
        edges = [int(edge) for edge in cu_seq_lens.tolist()]
        if edges[0] == 0 and edges[-1] == seq_len:
            bounds = [[(a, b) for a, b in itertools.pairwise(edges) if b > a]]
            # Every layer of one forward pass gets the same tensor: one host transfer per pass.
            _cache["cu"] = (cu_seq_lens, bounds)
            return bounds
    if position_ids is None:
        return [[(0, seq_len)]] * batch_size
    cached = _cache.get("positions")
    if cached is not None and cached[0] is position_ids:
        return cached[1]
    positions = position_ids.expand(batch_size, -1)
    # A document starts wherever the position is not the previous one plus one.
    restarts = torch.ones_like(positions, dtype=torch.bool)
    restarts[:, 1:] = positions[:, 1:] != positions[:, :-1] + 1
    bounds = []
    for row in restarts.cpu():
        starts = row.nonzero().flatten().tolist()
        bounds.append(list(zip(starts, [*starts[1:], seq_len], strict=True)))
    _cache["positions"] = (position_ids, bounds)
    return bounds


# The last bounds computed, keyed by the tensor they came from (held, so its id is not reused).
_cache: dict[str, tuple[torch.Tensor, list[list[tuple[int, int]]]]] = {}


def _attention(base: str) -> Callable[..., tuple[torch.Tensor, None]]:
    def attention(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, Any]:
        batch_size, _, q_length, _ = query.shape
        base_attention = _base_attention(base, module)
        unchanged = (
            attention_mask is not None  # padded batch: its mask already says everything
            or q_length != key.shape[2]  # decoding with a cache
            or not getattr(module, "is_causal", True)  # e.g. a vision tower
        )
        if unchanged:
            return base_attention(module, query, key, value, attention_mask, **kwargs)
        window = kwargs.pop("sliding_window", None)
        bounds = document_bounds(
            q_length, kwargs.get("position_ids"), kwargs.get("cu_seq_lens_q"), batch_size
        )
        rows = []
        for row, documents in enumerate(bounds):
            pieces = []
            for start, end in documents:
                q = query[row : row + 1, :, start:end]
                k = key[row : row + 1, :, start:end]
                v = value[row : row + 1, :, start:end]
                mask = _document_mask(base, end - start, window, query)
                output, _ = base_attention(
                    module, q, k, v, mask, sliding_window=window, is_causal=mask is None, **kwargs
                )
                pieces.append(output)
            rows.append(torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0])
        return (torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]), None

    return attention


def _base_attention(base: str, module: torch.nn.Module) -> Callable[..., Any]:
    if base == "sdpa":
        return sdpa_attention_forward
    # Eager attention is the model's own function (Gemma 2's softcaps its scores).
    return sys.modules[type(module).__module__].eager_attention_forward


def _document_mask(
    base: str, length: int, window: int | None, like: torch.Tensor
) -> torch.Tensor | None:
    """The mask of one document alone: None where SDPA's own causal flag is exact."""
    if base == "sdpa" and (window is None or length <= window):
        return None
    query_index = torch.arange(length, device=like.device)[:, None]
    key_index = torch.arange(length, device=like.device)[None, :]
    allowed = key_index <= query_index
    if window is not None and length > window:
        # transformers' sliding window: a key is seen while q - k < window (sliding_window_overlay).
        allowed &= key_index > query_index - window
    allowed = allowed[None, None]
    if base == "sdpa":
        return allowed
    # Eager attention adds its mask to the scores.
    blocked = torch.finfo(like.dtype).min
    return torch.zeros(allowed.shape, dtype=like.dtype, device=like.device).masked_fill(
        ~allowed, blocked
    )


def _mask(base_mask: Callable[..., Any]) -> Callable[..., Any]:
    def mask(*args: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        if attention_mask is None:
            return None  # no padding: the attention isolates the documents itself
        return base_mask(*args, attention_mask=attention_mask, **kwargs)

    return mask
