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
  on from the job's, so they start afresh like a retried task;
- a pause (`handoff` with reason `paused`, or any handoff of a job whose owner asked to
  pause it) makes the job `paused`: it carries its attempt's final snapshot, and a paused
  job takes no later event but its owner's cancel. After a resume (`resumed`: queued again,
  without an execution) the trainer's events of the paused attempt are still ignored; the
  next execution's attempts are numbered on from it, so they start afresh.

Pause and resume themselves are the owner's requests, decided here (`pause_refusal`,
`pauses_at_once`, `with_pause_requested`, `resume_refusal`, `resumed`) and written by the
delete function in a transaction.

`apply` does not touch `updated_at`: the store stamps the write.
"""

from __future__ import annotations

from datetime import datetime
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

PAUSING_REASON = (
    "pausing: the trainer checkpoints at its next job check (TRAINER_JOB_CHECK_SECONDS) "
    "and stops; then the job is paused"
)
RESUMED_REASON = "resumed: waiting for a trainer slot to continue from the latest checkpoint"


def apply(job: JobRecord, event: JobEvent) -> JobRecord:
    """The record after `event`; the same record object when the event changes nothing."""
    if event.job_id != job.job_id:
        raise ValueError(f"event for {event.job_id} applied to job {job.job_id}")
    if job.status.is_terminal or event.attempt < job.attempt:
        return job
    if job.status is JobStatus.PAUSED and not _owner_cancels(event):
        return job  # at rest until resumed; its attempt's snapshot came with the pause
    if _of_paused_attempt(job, event):
        return job  # a late event of the attempt a pause stopped: resumed since, it has no say
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


def _owner_cancels(event: JobEvent) -> bool:
    return isinstance(event, CancelledEvent) and event.source == "user"


def _of_paused_attempt(job: JobRecord, event: JobEvent) -> bool:
    """A trainer's event of the attempt that a pause ended (or of an older one)."""
    ended = job.last_attempt_end
    return (
        event.source == "trainer"
        and ended is not None
        and ended.reason is AttemptEnding.PAUSED
        and event.attempt <= ended.attempt
    )


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
            # Any handoff of a job asked to pause (a deadline or SIGTERM meeting the request)
            # is its pause: the job waits for its owner, not for a new execution.
            pausing = payload.reason is AttemptEnding.PAUSED or job.pause_requested_at is not None
            ended = AttemptEnd(
                attempt=event.attempt,
                reason=AttemptEnding.PAUSED if pausing else payload.reason,
                step=payload.step,
                checkpoint_step=payload.checkpoint_step,
                execution=event.execution or job.execution,
                at=event.timestamp,
            )
            if pausing:
                changes.update(_paused(job, ended, payload, event))
            else:
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


def _paused(
    job: JobRecord, ended: AttemptEnd, snapshot: FinalSnapshot, event: JobEvent
) -> dict[str, Any]:
    """A pause: the attempt's final snapshot, and no continuation asked for."""
    changes = _final(snapshot, event)
    del changes["finished_at"]
    if ended.checkpoint_step is not None:
        where = f"from its checkpoint at step {ended.checkpoint_step}"
    else:
        where = "from its latest complete checkpoint (or from the start if it has none)"
    changes.update(
        status=JobStatus.PAUSED,
        status_reason=f"paused at step {ended.step}; a resume continues it {where}",
        handoff=None,  # nothing continues it until its owner resumes it
        paused_at=event.timestamp,
        pause_requested_at=job.pause_requested_at or event.timestamp,
    )
    if job.executions:  # an attempt ran (or was started): its late events are to be ignored
        changes["last_attempt_end"] = ended
    return changes


# Pause and resume: the owner's requests -------------------------------------------------


def is_continuation(job: JobRecord) -> bool:
    """The job handed off from its current execution and waits for the next one."""
    return (
        not job.status.is_terminal
        and job.handoff is not None
        and job.execution is not None
        and job.handoff.execution is not None
        and same_execution(job.handoff.execution, job.execution)
    )


def is_pausing(job: JobRecord) -> bool:
    """Asked to pause while training: the trainer is to checkpoint and stop."""
    return job.pause_requested_at is not None and job.status is JobStatus.TRAINING


def pause_refusal(job: JobRecord) -> str | None:
    """Why the job cannot be paused (a 409), or None."""
    if job.status.is_terminal:
        return f"the job is already {job.status.value}"
    if job.status is JobStatus.EXPORTING:
        return "the job has finished training and is exporting its model: it cannot be paused"
    return None


def pauses_at_once(job: JobRecord) -> bool:
    """Nothing is training for the job (queued, preparing, between two executions, or no
    execution recorded): it is paused without its trainer, and its execution if any stopped.
    Else its trainer checkpoints and stops, and its `handoff` pauses the job."""
    if job.status in (JobStatus.QUEUED, JobStatus.VALIDATING, JobStatus.PREPARING):
        return True
    return job.execution is None or is_continuation(job)


def with_pause_requested(job: JobRecord, *, now: datetime) -> JobRecord | None:
    """The training job marked for its trainer to pause; None when it cannot be or already is."""
    if job.status is not JobStatus.TRAINING or pauses_at_once(job) or is_pausing(job):
        return None
    return job.model_copy(update={"pause_requested_at": now, "status_reason": PAUSING_REASON})


def resume_refusal(job: JobRecord) -> str | None:
    """Why the job cannot be resumed (a 409), or None (paused, or resumed already)."""
    if job.status.is_terminal:
        return f"the job is already {job.status.value}"
    if is_pausing(job):
        return (
            "the job is still pausing (its trainer is saving a checkpoint): resume it "
            "once it is paused"
        )
    if job.status is not JobStatus.PAUSED and job.paused_at is None:
        return f"the job is {job.status.value}, not paused"
    return None


def resumed(job: JobRecord) -> JobRecord | None:
    """The paused job queued again, without an execution, so that dispatch starts a new one
    (its attempts numbered on from the paused one: `tuning.launchers.trainer_environment`);
    None when it is not paused."""
    if job.status is not JobStatus.PAUSED:
        return None
    return job.model_copy(
        update={
            "status": JobStatus.QUEUED,
            "status_reason": RESUMED_REASON,
            "pause_requested_at": None,
            "execution": None,
            "handoff": None,
            "dispatch_claim": None,
            "dispatch_claimed_at": None,
            "requeued_at": None,
        }
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
