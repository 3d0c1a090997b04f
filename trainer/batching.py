"""How training batches are formed, chosen by the attention kernel actually loaded.

Packing (text SFT) always trains padding-free: TRL's BFD packing fills rows of up to
`max_length` tokens, and its collator flattens a micro-batch of `batch_size` rows into one
sequence with the documents' boundaries (`cu_seq_lens`) and restarting position ids. What
keeps the documents apart is the attention: FlashAttention's varlen kernel where the GPU has
it, else the document-wise variant of the loaded kernel (trainer/document_attention.py),
which runs SDPA or eager attention on each document alone, documents of similar length
batched into one kernel call.

Measured on CPU (bench/trainer_throughput.py): with transformers' dense block-diagonal mask
instead, each token of a packed row was scored against the whole flattened batch, and packing
needed one packed row per micro-batch to stay level with unpacked training; with one kernel
call per document, packing was level with unpacked training (0.84x-1.12x, per-call overhead
on a busy machine); with a call per length group it beats it. Without packing,
length-grouped batches cut the padding.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from trainer.hardware import EAGER, FLASH_ATTENTION, SDPA

# The document-wise variant of each kernel that has one, by its registered name.
DOCUMENT_ATTENTION = {SDPA: "document_sdpa", EAGER: "document_eager"}


@dataclass(frozen=True)
class BatchingPlan:
    packing: bool
    per_device_batch_size: int
    gradient_accumulation_steps: int
    group_by_length: bool
    eval_packing: bool
    reason: str
    # The attention implementation to train with when it is not the one loaded (packing on
    # SDPA or eager: their document-wise variants); None keeps the loaded one.
    training_attention: str | None = None


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
    if attention == FLASH_ATTENTION or attention in DOCUMENT_ATTENTION:
        # Documents stay apart in evaluation as in training, so eval rows pack too.
        return BatchingPlan(
            packing=True,
            per_device_batch_size=batch_size,
            gradient_accumulation_steps=gradient_accumulation_steps,
            group_by_length=False,
            eval_packing=True,
            reason="packing, padding-free with the FlashAttention varlen kernel"
            if attention == FLASH_ATTENTION
            else f"packing, padding-free, {attention} attention one document at a time",
            training_attention=DOCUMENT_ATTENTION.get(attention),
        )
    # An attention kernel with no document-wise variant: one packed row per micro-batch
    # (transformers masks the documents of a row apart), as many rows per optimizer step.
    return BatchingPlan(
        packing=True,
        per_device_batch_size=1,
        gradient_accumulation_steps=gradient_accumulation_steps * batch_size,
        group_by_length=False,
        eval_packing=False,
        reason=f"packing with {attention} attention: one packed row per micro-batch",
    )


def spread_over_processes(plan: BatchingPlan, processes: int) -> tuple[BatchingPlan, str | None]:
    """The plan for `processes` training processes (one per GPU) that keeps the job's batch.

    Each optimizer step averages `per_device_batch_size x gradient_accumulation_steps x
    processes` rows. The job's batch (batch_size x gradient_accumulation_steps, as on one GPU)
    stays what it asked for, so that its learning rate and step count mean the same on every
    tier: the accumulation steps are divided among the processes where they divide, else the
    micro-batch. Where neither divides, the batch grows with the processes, and the returned
    warning says so.
    """
    if processes <= 1:
        return plan, None
    accumulation, micro_batch = plan.gradient_accumulation_steps, plan.per_device_batch_size
    if accumulation % processes == 0:
        spread = replace(plan, gradient_accumulation_steps=accumulation // processes)
    elif micro_batch % processes == 0:
        spread = replace(plan, per_device_batch_size=micro_batch // processes)
    else:
        rows = accumulation * micro_batch
        return plan, (
            f"batch_size x gradient_accumulation_steps ({rows} rows per step) cannot be split "
            f"evenly over the tier's {processes} GPUs: each step trains on {rows * processes} "
            f"rows instead; make one of them a multiple of {processes} to keep {rows}"
        )
    return replace(spread, reason=f"{plan.reason}; spread over {processes} processes"), None
