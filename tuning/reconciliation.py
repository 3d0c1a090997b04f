"""Reconcile: nothing stays non-terminal forever (run by Cloud Scheduler).

For every job that is not terminal and has not been heard from for
`RECONCILE_STALE_SECONDS`:

- with an execution: ask the launcher. One that ended without the job's final
  event (OOM kill, timeout, crash, deleted) gets a `failed` event with a system
  error that says so (`cancelled` if it was cancelled behind our back). It acts
  only once the execution has been over for the same threshold, so a final
  event still on its way through Pub/Sub wins. One still running but silent for
  `RECONCILE_STALLED_SECONDS` (when set) is hung: it is cancelled and the job
  failed, so that it stops holding a GPU until the task's timeout.
- queued without an execution (claimed by a dispatcher that died, or its
  message dead-lettered while waiting for a slot): re-publish its
  `JobReference`; dispatch takes over a claim older than the threshold.
- handed off (its attempt checkpointed before the task deadline) but not continued in a
  new execution within the threshold: re-publish its `JobReference`, as for a queued job;
- active without a recorded execution (the dispatcher died after launching):
  nothing can be asked, so a job silent that long is failed;
- pausing (its owner asked to pause it while it trained) but its trainer never paused it:
  an execution that ended without the pause (it died, or its `handoff` was lost) or that
  hangs past `RECONCILE_STALLED_SECONDS` (cancelled first) gets a `handoff` with reason
  `paused` instead of a failure, so the job ends up paused, as its owner asked, and a resume
  continues it from its latest complete checkpoint. Paused jobs are at rest: reconcile
  never looks at them (a resumed one is queued and handled as any queued job).

Failures are *published* on `job-events` like any producer's (source
"reconcile"), not written directly: on_job_event stays the one writer of
transitions and sends the terminal notification, and a trainer's own final
event racing with ours is resolved by the state machine (first terminal wins).

One job's error never stops the pass for the others. A transient one (Pub/Sub or
Cloud Run unavailable) is logged and reported; the next pass tries again. Any other
(a permission Cloud Run refused, a bug) is logged with its traceback, reported, and
recorded on the job as a warning `message` event, so that its owner and the operator
see why it is stuck. That warning has one id per job attempt and problem: a problem
that persists pass after pass stays one entry of the job's history. Reconcile's events
do not reset the job's silence clock (`tuning.state`), so the warning cannot hide a hang.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from tuning.capacity import is_continuation
from tuning.dispatching import launcher_settings
from tuning.errors import TransientError, TuningError
from tuning.events import MessageEvent, MessagePayload
from tuning.jobs import (
    ACTIVE_STATUSES,
    AttemptEnding,
    ErrorType,
    JobRecord,
    JobStatus,
    stable_suffix,
    utcnow,
)
from tuning.launchers import ExecutionState, ExecutionStatus
from tuning.logs import job_context
from tuning.reporting import EventReporter
from tuning.services import Services
from tuning.spec import JobReference
from tuning.state import is_pausing

logger = logging.getLogger(__name__)
ENDED_WITHOUT_RESULT = "execution_ended_without_result"
STALLED = "execution_stalled"


class Action(StrEnum):
    FAILED = "failed"
    CANCELLED = "cancelled"
    REQUEUED = "requeued"
    RUNNING = "running"  # stale but its execution still runs: left alone
    STALLED = "stalled"  # silent past the stall threshold: its execution cancelled, job failed
    PAUSED = "paused"  # pausing, but its trainer ended or hung without pausing: paused for it


@dataclass
class ReconcileReport:
    checked: int = 0
    actions: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    # Jobs whose error was transient: only for these can an early retry of the pass help.
    transient: set[str] = field(default_factory=set)

    @property
    def retry_can_help(self) -> bool:
        return bool(self.transient)

    def add(self, action: Action, job_id: str) -> None:
        self.actions.setdefault(action.value, []).append(job_id)

    def jobs(self, action: Action) -> list[str]:
        return self.actions.get(action.value, [])

    def to_dict(self) -> dict[str, object]:
        return {"checked": self.checked, **self.actions, "errors": self.errors}


def reconcile_jobs(*, services: Services, now: datetime | None = None) -> ReconcileReport:
    """One pass over every non-terminal job; a job that errors is reported, not fatal."""
    settings = launcher_settings(services)
    stale = timedelta(seconds=settings.stale_after_seconds)
    stalled = timedelta(seconds=settings.stalled_after_seconds) or None
    now = now or utcnow()
    report = ReconcileReport()
    for job in non_terminal_jobs(services):
        report.checked += 1
        with job_context(job.job_id):
            try:
                action = reconcile_job(
                    job, services=services, now=now, stale=stale, stalled=stalled
                )
            except TransientError as error:
                logger.warning("job %s not reconciled this time: %s", job.job_id, error.message)
                report.errors[job.job_id] = error.message
                report.transient.add(job.job_id)
                continue
            except Exception as error:  # one job's fault must not stop the pass
                report.errors[job.job_id] = record_problem(job, error, services=services, now=now)
                continue
        if action is not None:
            logger.info("job %s reconciled: %s", job.job_id, action.value)
            report.add(action, job.job_id)
    return report


# Before any execution: waiting for dispatch to validate the job or give it a slot.
WAITING = (JobStatus.QUEUED, JobStatus.VALIDATING)


def non_terminal_jobs(services: Services) -> Iterator[JobRecord]:
    for status in (JobStatus.QUEUED, JobStatus.VALIDATING, *ACTIVE_STATUSES):
        token = None
        while True:
            page = services.jobs.list_jobs(status=status, limit=100, page_token=token)
            yield from page.jobs
            token = page.next_page_token
            if token is None:
                break


def reconcile_job(
    job: JobRecord,
    *,
    services: Services,
    now: datetime,
    stale: timedelta,
    stalled: timedelta | None = None,
) -> Action | None:
    """What one job needs, done; None when it is fine as it is."""
    if is_continuation(job):
        # Handed off, and its next execution not started since: the continuation request
        # was lost or ran out of deliveries. Asking again is safe (dispatch claims once).
        waiting_since = max(filter(None, (job.requeued_at, job.last_event_at, job.updated_at)))
        if now - waiting_since < stale:
            return None
        return requeue(job, services=services, now=now)
    if job.execution:
        last_heard = job.last_event_at or job.dispatched_at or job.updated_at
        if now - last_heard < stale:
            return None
        status = services.launcher_for(job).status(job.execution)
        if not status.state.is_finished:
            if stalled is not None and now - last_heard >= stalled:
                return stop_stalled(job, silent_for=now - last_heard, services=services)
            return Action.RUNNING
        if status.finished_at is not None and now - status.finished_at < stale:
            return None  # the trainer's final event may still be in flight
        return end_job(job, status, services=services)
    if now - job.updated_at < stale:
        return None
    if job.status in WAITING:  # a lost request, or a validation that ended unfinished
        return requeue(job, services=services, now=now)
    reporter(job, services).failed(
        f"no execution is recorded for this job and nothing was heard from it for "
        f"{int(stale.total_seconds())} s",
        error_type=ErrorType.SYSTEM,
        code=ENDED_WITHOUT_RESULT,
    )
    return Action.FAILED


def end_job(job: JobRecord, status: ExecutionStatus, *, services: Services) -> Action:
    """Publish the final event the trainer never sent."""
    if is_pausing(job):
        return pause_for_trainer(job, f"its execution ended ({status.state.value})", services)
    if status.state is ExecutionState.CANCELLED:
        reporter(job, services).cancelled(
            f"the trainer execution was cancelled outside the service ({status.message})"
        )
        return Action.CANCELLED
    reporter(job, services).failed(
        describe_ending(job.execution or "", status),
        error_type=ErrorType.SYSTEM,
        code=ENDED_WITHOUT_RESULT,
    )
    return Action.FAILED


def stop_stalled(job: JobRecord, *, silent_for: timedelta, services: Services) -> Action:
    """Cancel a hung execution, then publish the job's failure (the cancel alone would be
    reported as `cancelled` by the next pass, which is not what happened)."""
    execution = job.execution or ""
    services.launcher_for(job).cancel(execution)
    if is_pausing(job):
        silent = int(silent_for.total_seconds())
        return pause_for_trainer(job, f"it hung for {silent} s and was cancelled", services)
    reporter(job, services).failed(
        f"the trainer execution {execution} was still running but had reported nothing for "
        f"{int(silent_for.total_seconds())} s; it was cancelled as hung",
        error_type=ErrorType.SYSTEM,
        code=STALLED,
    )
    return Action.STALLED


def pause_for_trainer(job: JobRecord, what: str, services: Services) -> Action:
    """The pause the trainer of a pausing job never published, with the step it last
    reported; no checkpoint of its own, so a resume goes on from the latest complete one."""
    step = job.progress.step if job.progress else 0
    logger.warning("job %s was pausing but its trainer never paused it: %s", job.job_id, what)
    reporter(job, services).handoff(AttemptEnding.PAUSED, step=step, checkpoint_step=None)
    return Action.PAUSED


def describe_ending(execution: str, status: ExecutionStatus) -> str:
    if status.state is ExecutionState.NOT_FOUND:
        return f"the trainer execution {execution} no longer exists and never reported a result"
    detail = f"{status.state.value}: {status.message}" if status.message else status.state.value
    return f"the trainer execution {execution} ended ({detail}) without reporting a result"


def requeue(job: JobRecord, *, services: Services, now: datetime) -> Action:
    """Publish the job's reference again, then stamp it so the next pass waits again."""
    services.publisher.publish(
        services.settings.requests_topic, JobReference(job_id=job.job_id), job_id=job.job_id
    )

    def stamp(current: JobRecord) -> JobRecord | None:
        waiting = current.status in WAITING and not current.execution
        if not (waiting or is_continuation(current)):
            return None
        return current.model_copy(update={"requeued_at": now})

    services.jobs.update(job.job_id, stamp)
    return Action.REQUEUED


def record_problem(job: JobRecord, error: Exception, *, services: Services, now: datetime) -> str:
    """Log a job's non-transient error, show it on the job, and return it for the report."""
    logger.error("job %s not reconciled: %s", job.job_id, describe_error(error), exc_info=error)
    problem = describe_error(error, for_owner=True)
    text = f"reconcile could not settle this job and tries again on its next pass: {problem}"
    try:
        warning = MessageEvent(
            # One entry per attempt and problem, however many passes meet it again.
            event_id=f"{job.job_id}-reconcile-a{job.attempt}-problem-{stable_suffix(problem)}",
            job_id=job.job_id,
            attempt=job.attempt,
            seq=0,
            timestamp=now,
            source="reconcile",
            execution=job.execution,
            payload=MessagePayload(text=text, level="warning"),
        )
        reporter(job, services).publish(warning)
    except Exception as failure:  # recording is best effort; the pass goes on
        logger.error(
            "job %s: its reconcile problem could not be recorded on it: %s",
            job.job_id,
            describe_error(failure),
        )
        return f"{describe_error(error)} (not recorded on the job: {type(failure).__name__})"
    return describe_error(error)


def describe_error(error: Exception, *, for_owner: bool = False) -> str:
    """The package's own errors say what went wrong in words meant to be shown; anything
    else is named by its type for the owner, and with its text for the operator's log."""
    if isinstance(error, TuningError):
        return error.message
    if for_owner:
        return f"an internal error ({type(error).__name__}); the operator's logs have the details"
    return f"{type(error).__name__}: {error}"[:1000]


def reporter(job: JobRecord, services: Services) -> EventReporter:
    """Events on behalf of the job's current attempt and execution, so they are not ignored."""
    return EventReporter(
        services.publisher,
        services.settings.events_topic,
        job_id=job.job_id,
        attempt=job.attempt,
        execution=job.execution,
        source="reconcile",
    )
