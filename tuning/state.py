"""The job state machine: `apply(job, event) -> job`, a pure function.

Pub/Sub delivers at least once and in any order, so the record an event
stream produces must not depend on delivery order or duplicates:

- terminal statuses absorb every later event;
- events of an older task attempt, or of an execution the job no longer runs
  on, are ignored, and the first event of a newer
  attempt starts that attempt afresh (its progress, metrics and status);
- within an attempt, status and progress only move forward (the highest
  status reached, the progress of the highest step, the metrics of the latest
  evaluation), so any arrival order converges to the same record;
- terminal events carry their final snapshot, so what they leave does not
  depend on which non-terminal events arrived before them;
- a `handoff` (an attempt that checkpointed and stopped before its task deadline, or on
  SIGTERM) marks the job as waiting for a new execution to continue it; dispatch clears
  the mark when it records that execution, and the new execution's attempts are numbered
  on from the job's, so they start afresh like a retried task.

`apply` does not touch `updated_at`: the store stamps the write.
"""

from __future__ import annotations

from typing import Any

from tuning.events import (
    STATUS_REACHED,
    CancelledEvent,
    CompletedEvent,
    EvaluationEvent,
    FailedEvent,
    FinalSnapshot,
    HandoffEvent,
    JobEvent,
    ProgressEvent,
    RestartedEvent,
    TrainingEvent,
)
from tuning.jobs import AttemptEnd, AttemptEnding, JobRecord, JobStatus, Progress
from tuning.launchers import same_execution


def apply(job: JobRecord, event: JobEvent) -> JobRecord:
    """The record after `event`; the same record object when the event changes nothing."""
    if event.job_id != job.job_id:
        raise ValueError(f"event for {event.job_id} applied to job {job.job_id}")
    if job.status.is_terminal or event.attempt < job.attempt:
        return job
    if event.execution and job.execution and not same_execution(event.execution, job.execution):
        return job  # a superseded execution of this job (re-dispatched) has no say
    changes: dict[str, Any] = {}
    if event.attempt > job.attempt:
        changes.update(_fresh_attempt(job, event))
    current = job.model_copy(update=changes)
    changes.update(_changes_for(current, event))
    if not changes:
        return job
    updated = job.model_copy(update=changes)
    return job if updated == job else updated


def _fresh_attempt(job: JobRecord, event: JobEvent) -> dict[str, Any]:
    """A retried task starts over: what the older attempt reported no longer holds."""
    ended = job.last_attempt_end
    previous = event.attempt - 1
    if job.executions and (ended is None or ended.attempt != previous):
        # No handoff was heard from the attempt before: it crashed, was killed or timed out.
        # Only what every delivery order agrees on: not its last step (that depends on
        # which of its events came before the new attempt's first), nor the attempt the
        # record showed (a shuffled delivery may skip one).
        ended = AttemptEnd(attempt=previous, reason=AttemptEnding.FAILED, execution=job.execution)
    return {
        "attempt": event.attempt,
        "last_attempt_end": ended,
        "resumed_from_step": None,
        "status": JobStatus.PREPARING,
        "progress": None,
        "metrics": None,
        "wandb_url": None,
        "dataset_stats": None,
        "last_event_at": None,
    }


def _changes_for(job: JobRecord, event: JobEvent) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    # Reconcile speaks about a job, not for it: its notes must not reset the silence it measures.
    if event.source != "reconcile" and (
        job.last_event_at is None or event.timestamp > job.last_event_at
    ):
        changes["last_event_at"] = event.timestamp
    reached = STATUS_REACHED[event.type]
    if reached is not None and reached.rank > job.status.rank:
        changes["status"] = reached
        changes["status_reason"] = None
    match event:
        case TrainingEvent(payload=payload):
            if payload.wandb_url:
                changes["wandb_url"] = payload.wandb_url
            if payload.dataset_stats is not None:
                changes["dataset_stats"] = payload.dataset_stats
            if job.progress is None:
                changes["progress"] = Progress(step=0, total_steps=payload.total_steps)
        case ProgressEvent(payload=progress):
            if job.progress is None or progress.step >= job.progress.step:
                changes["progress"] = progress
        case RestartedEvent(payload=payload):
            changes["resumed_from_step"] = payload.resumed_from_step
        case HandoffEvent(payload=payload):
            ended = AttemptEnd(
                attempt=event.attempt,
                reason=payload.reason,
                step=payload.step,
                checkpoint_step=payload.checkpoint_step,
                execution=event.execution or job.execution,
                at=event.timestamp,
            )
            changes.update(handoff=ended, last_attempt_end=ended, status_reason=_waiting(ended))
        case EvaluationEvent(payload=payload):
            step = payload.metrics.step or 0
            if job.metrics is None or step >= (job.metrics.step or 0):
                changes["metrics"] = payload.metrics
        case CompletedEvent(payload=payload):
            changes.update(_final(payload, event), artifacts=payload.artifacts, error=None)
        case FailedEvent(payload=payload):
            changes.update(_final(payload, event), error=payload.error)
        case CancelledEvent(payload=payload):
            changes.update(finished_at=event.timestamp, status_reason=payload.reason)
    return changes


def _waiting(ended: AttemptEnd) -> str:
    why = {
        AttemptEnding.DEADLINE: "stopped before its task deadline",
        AttemptEnding.INTERRUPTED: "was interrupted",
    }.get(ended.reason, "ended")
    return (
        f"attempt {ended.attempt} {why} at step {ended.step}; a new execution continues "
        f"from the checkpoint at step {ended.checkpoint_step}"
    )


def _final(snapshot: FinalSnapshot, event: JobEvent) -> dict[str, Any]:
    changes: dict[str, Any] = {"finished_at": event.timestamp, "status_reason": None}
    if snapshot.progress is not None:
        changes["progress"] = snapshot.progress
    if snapshot.metrics is not None:
        changes["metrics"] = snapshot.metrics
    if snapshot.wandb_url is not None:
        changes["wandb_url"] = snapshot.wandb_url
    if snapshot.dataset_stats is not None:
        changes["dataset_stats"] = snapshot.dataset_stats
    if snapshot.resumed_from_step is not None:
        changes["resumed_from_step"] = snapshot.resumed_from_step
    return changes
