"""How training batches are formed, chosen by the attention kernel actually loaded.

Measured on CPU (see ENVIRONMENT.md): TRL's packing turns on padding-free
mode, which flattens the whole micro-batch into one sequence; without a varlen
kernel (FlashAttention) attention then spans the whole concatenation and is
slower than not packing at all. One packed row per micro-batch, with the
accumulation scaled to keep the rows per optimizer step, bounds attention to
one `max_length` row and wins again; without packing, length-grouped batches
cut the padding and win the most.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.hardware import FLASH_ATTENTION


@dataclass(frozen=True)
class BatchingPlan:
    packing: bool
    per_device_batch_size: int
    gradient_accumulation_steps: int
    group_by_length: bool
    eval_packing: bool
    reason: str


def plan_batching(
    *, packing: bool, batch_size: int, gradient_accumulation_steps: int, attention: str
) -> BatchingPlan:
    if not packing:
        return BatchingPlan(
            packing=False,
            per_device_batch_size=batch_size,
            gradient_accumulation_steps=gradient_accumulation_steps,
            group_by_length=True,
            eval_packing=False,
            reason="no packing: length-grouped batches to cut padding",
        )
    if attention == FLASH_ATTENTION:
        return BatchingPlan(
            packing=True,
            per_device_batch_size=batch_size,
            gradient_accumulation_steps=gradient_accumulation_steps,
            group_by_length=False,
            eval_packing=True,
            reason="packing, padding-free with the FlashAttention varlen kernel",
        )
    return BatchingPlan(
        packing=True,
        per_device_batch_size=1,
        gradient_accumulation_steps=gradient_accumulation_steps * batch_size,
        group_by_length=False,
        # Evaluation keeps padded batches: packed eval rows would span the flattened batch too.
        eval_packing=False,
        reason=f"packing without a varlen kernel ({attention}): one packed row per micro-batch",
    )
