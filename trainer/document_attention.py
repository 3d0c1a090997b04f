"""Attention one document at a time: packed rows without a varlen kernel and without a dense mask.

A packed row holds several documents, each with its own position ids from 0. With SDPA or
eager attention, transformers isolates them with a dense (row x row) block-diagonal mask: every
layer scores each token against the whole row, and SDPA's fused causal kernels do not take
such a mask. Measured on CPU (bench/trainer_throughput.py), that made packing slower than not
packing at all. Here each document attends on its own (causal, and the layer's sliding window
where the document is longer than it), so attention costs what the documents cost, as
FlashAttention's varlen kernel does, with the kernels already present.

The documents are not attended one kernel call each: a packed micro-batch holds some 20-30 of
them, and per-document calls (each with its slices, its backward and its zero-filled gradient
of the whole row) made packed training slower than unpacked on a busy CPU, where every small
kernel call waits for its threads. Documents of similar length are gathered instead into
padded groups, one call per group, their outputs put back in one gather (`DocumentPlan`);
padding goes at a document's end, where the causal mask keeps its real tokens from seeing it.
The documents come from the collator's `cu_seq_lens_q` (TRL's padding-free collator sends it)
or, failing that, from where the position ids restart, as transformers finds packed documents
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from trainer.batching import DOCUMENT_ATTENTION

# Documents up to this long share one group whatever their lengths: padding them costs less
# attention than a kernel call of their own.
SHORT_DOCUMENT = 32


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
        edges = [int(edge) for edge in cu_seq_lens.tolist()]
        if edges[0] == 0 and edges[-1] == seq_len:
            return [[(a, b) for a, b in itertools.pairwise(edges) if b > a]]
    if position_ids is None:
        return [[(0, seq_len)]] * batch_size
    positions = position_ids.expand(batch_size, -1)
    # A document starts wherever the position is not the previous one plus one.
    restarts = torch.ones_like(positions, dtype=torch.bool)
    restarts[:, 1:] = positions[:, 1:] != positions[:, :-1] + 1
    bounds = []
    for row in restarts.cpu():
        starts = row.nonzero().flatten().tolist()
        bounds.append(list(zip(starts, [*starts[1:], seq_len], strict=True)))
    return bounds


def length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """The documents (indices into `lengths`) attended together, longest group first.

    Longest first, a document joins the group before it while padding it to that group's
    length at most doubles its attention (length >= group length / sqrt 2), or while the group
    is short (SHORT_DOCUMENT); lengths from 1 to 512 make at most some 10 groups.
    """
    groups: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if groups:
            padded = lengths[groups[-1][0]]
            if padded <= SHORT_DOCUMENT or padded * padded <= 2 * lengths[index] ** 2:
                groups[-1].append(index)
                continue
        groups.append([index])
    return groups


@dataclass(frozen=True)
class DocumentPlan:
    """One row's documents as padded groups: where each slot comes from, where each token goes.

    The slots are the groups' padded documents one after another (group by group, each a
    `documents x length` block); `gather` is the row position each slot reads (a padding slot
    reads a token of the row that only padding slots see), `scatter` the slot of each token of
    the row.
    """

    groups: tuple[tuple[int, int], ...]  # (documents, padded length) per group, in slot order
    gather: torch.Tensor  # (slots,) row position of each slot
    scatter: torch.Tensor  # (row length,) slot of each row position

    @classmethod
    def of(cls, bounds: Sequence[tuple[int, int]], seq_len: int) -> DocumentPlan:
        lengths = [end - start for start, end in bounds]
        groups, gathers, slots, positions = [], [], [], []
        offset = 0
        for members in length_groups(lengths):
            padded = lengths[members[0]]
            starts = torch.tensor([bounds[i][0] for i in members])
            sizes = torch.tensor([lengths[i] for i in members])
            steps = torch.arange(padded)
            read = (starts[:, None] + steps).clamp(max=seq_len - 1)
            real = steps < sizes[:, None]
            gathers.append(read.flatten())
            slots.append(offset + torch.arange(read.numel()).view_as(read)[real])
            positions.append(read[real])
            groups.append((len(members), padded))
            offset += read.numel()
        scatter = torch.empty(seq_len, dtype=torch.long)
        scatter[torch.cat(positions)] = torch.cat(slots)
        return cls(tuple(groups), torch.cat(gathers), scatter)

    def to(self, device: torch.device) -> DocumentPlan:
        return DocumentPlan(self.groups, self.gather.to(device), self.scatter.to(device))


def document_plans(
    seq_len: int,
    position_ids: torch.Tensor | None,
    cu_seq_lens: torch.Tensor | None,
    batch_size: int,
    device: torch.device,
) -> list[DocumentPlan | None]:
    """Per row, its plan; None for a row that is one document (attended as it is)."""
    key = cu_seq_lens if cu_seq_lens is not None and batch_size == 1 else position_ids
    cached = _cache.get("plans")
    # Every layer of one forward pass gets the same tensors: one plan (and host transfer) a pass.
    if cached is not None and cached[0] is key and cached[1] == (seq_len, batch_size, device):
        return cached[2]
    plans: list[DocumentPlan | None] = [
        DocumentPlan.of(documents, seq_len).to(device) if len(documents) > 1 else None
        for documents in document_bounds(seq_len, position_ids, cu_seq_lens, batch_size)
    ]
    _cache["plans"] = (key, (seq_len, batch_size, device), plans)
    return plans


# The last plans made, keyed by the tensor they came from (held, so its id is not reused).
_cache: dict[str, tuple[Any, tuple[int, int, torch.device], list[DocumentPlan | None]]] = {}


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
        plans = document_plans(
            q_length,
            kwargs.get("position_ids"),
            kwargs.get("cu_seq_lens_q"),
            batch_size,
            query.device,
        )

        def causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            mask = _document_mask(base, q.shape[2], window, q)
            output, _ = base_attention(
                module, q, k, v, mask, sliding_window=window, is_causal=mask is None, **kwargs
            )
            return cast("torch.Tensor", output)

        if all(plan is None for plan in plans):  # every row one document
            return causal(query, key, value), None
        rows = []
        for row, plan in enumerate(plans):
            q, k, v = (t[row : row + 1] if batch_size > 1 else t for t in (query, key, value))
            rows.append(causal(q, k, v) if plan is None else _grouped(plan, q, k, v, causal))
        return (torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]), None

    return attention


def _grouped(
    plan: DocumentPlan,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    causal: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """One row's attention, a kernel call per group of documents: (1, row, heads, head dim)."""
    sizes = [documents * length for documents, length in plan.groups]
    # One gather and one split: slicing each group out would give each its own zero-filled
    # gradient of the whole row in the backward pass.
    pieces = [t.index_select(2, plan.gather).split(sizes, dim=2) for t in (query, key, value)]
    outputs = []
    for (documents, length), *group in zip(plan.groups, *pieces, strict=True):
        # (1, heads, documents x length, d) -> (documents, heads, length, d): views only.
        q, k, v = (t.squeeze(0).unflatten(1, (documents, length)).transpose(0, 1) for t in group)
        outputs.append(causal(q, k, v).flatten(0, 1))  # (documents x length, heads, d)
    slots = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
    return slots.index_select(0, plan.scatter).unsqueeze(0)


def _base_attention(base: str, module: torch.nn.Module) -> Callable[..., Any]:
    if base == "sdpa":
        return sdpa_attention_forward
    # Eager attention is the model's own function (Gemma 2's softcaps its scores).
    return sys.modules[type(module).__module__].eager_attention_forward


def _document_mask(
    base: str, length: int, window: int | None, like: torch.Tensor
) -> torch.Tensor | None:
    """The mask of documents `length` long: None where SDPA's own causal flag is exact."""
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
