"""Pause and resume a job (the delete function, beside cancel).

`POST /jobs/{job_id}/pause`:

- a job that is training is marked `pause_requested_at` in a transaction (it is *pausing*);
  its trainer sees the mark at its next job check (`TRAINER_JOB_CHECK_SECONDS`), saves a
  checkpoint, waits for its upload and publishes a `handoff` with reason `paused`, which
  on_job_event applies: the job is `paused` with the step it stopped at, and its GPU slot
  is free for the next claim (`tuning.capacity`);
- a job with nothing training (queued, preparing, between two executions) is paused at
  once: its execution, if any, is cancelled first, then a `handoff` (reason `paused`, source
  `user`) is applied here, so the answer is the paused job;
- a paused or pausing job answers 200 as it is (a repeated or redelivered pause); a job
  that ended, or is exporting (its training is over), answers 409.

`POST /jobs/{job_id}/resume` queues a paused job again (status `queued`, no execution) and
publishes its `JobReference` on `training-requests` before the transaction commits, as submit
queues a job: the next free slot takes it, and the trainer resumes from the job's latest
complete checkpoint as any new execution does. A job resumed already answers 200 as it is; a
job pausing, never paused or ended answers 409. Both are owner-scoped (404 for another
caller's job), as cancel is.

A resume racing a cancel ends cancelled: cancel applies to a paused job and to a resumed one
alike (the owner's cancel is the one event a paused job takes), and a resume of a job that
is cancelled by then is a 409.
"""

from __future__ import annotations

import logging
import uuid

from tuning.api.models import JobDetail
from tuning.api.queries import visible_job
from tuning.errors import ConflictError, NotFoundError, TransientError
from tuning.events import HandoffEvent, HandoffPayload
from tuning.gcp.firestore import Transition
from tuning.jobs import AttemptEnding, JobRecord, JobStatus, utcnow
from tuning.notifications import notify_if_ending
from tuning.services import Services
from tuning.spec import JobReference
from tuning.state import (
    is_continuation,
    is_pausing,
    pause_refusal,
    pauses_at_once,
    resume_refusal,
    resumed,
    with_pause_requested,
)

logger = logging.getLogger(__name__)


def pause_job(job_id: str, *, services: Services, owner: str | None) -> JobDetail:
    """Pause the job (at once, or by asking its trainer); the job as it now is."""
    job = visible_job(job_id, services=services, owner=owner)
    if job.status is JobStatus.PAUSED or is_pausing(job):
        return JobDetail.from_record(job)  # a repeated pause: nothing more to do
    if refusal := pause_refusal(job):
        raise ConflictError(refusal, field="job_id")
    if pauses_at_once(job):
        after = _pause_at_once(job, services=services)
    else:
        now = utcnow()
        transition = services.jobs.update(
            job_id, lambda current: with_pause_requested(current, now=now)
        )
        if transition is None:
            raise NotFoundError("job not found", field="job_id")
        after = transition.after
    if after.status is JobStatus.PAUSED or is_pausing(after):
        logger.info("job %s %s", job_id, after.status_reason)
        return JobDetail.from_record(after)
    if refusal := pause_refusal(after):
        raise ConflictError(refusal, field="job_id")
    # It moved on between our read and the write (a new attempt, a new execution): the
    # caller's retry decides again on what it is then.
    raise TransientError("the job changed while pausing it; retry")


def _pause_at_once(job: JobRecord, *, services: Services) -> JobRecord:
    """Stop the job's execution (if one may be running) and apply its pause."""
    if job.execution and not is_continuation(job):  # a continuation's execution has ended
        services.launcher_for(job).cancel(job.execution)
    pending = job.handoff if is_continuation(job) else None
    event = HandoffEvent(
        # One id per request: pause, resume and pause again are each in the history.
        event_id=f"{job.job_id}-user-a{job.attempt}-pause-{uuid.uuid4().hex[:12]}",
        job_id=job.job_id,
        attempt=job.attempt,
        seq=0,
        timestamp=utcnow(),
        source="user",
        execution=job.execution,
        payload=HandoffPayload(
            reason=AttemptEnding.PAUSED,
            step=job.progress.step if job.progress else 0,
            checkpoint_step=pending.checkpoint_step if pending else None,
        ),
    )
    # Notified before the commit, as cancel is: a failed publish pauses nothing (503).
    transition = services.jobs.apply_event(
        event, before_commit=lambda change: notify_if_ending(change, services=services)
    )
    if transition is None:
        raise NotFoundError("job not found", field="job_id")
    return transition.after


def resume_job(job_id: str, *, services: Services, owner: str | None) -> JobDetail:
    """Queue a paused job again and ask dispatch for it; the job as it now is."""
    job = visible_job(job_id, services=services, owner=owner)
    if refusal := resume_refusal(job):
        raise ConflictError(refusal, field="job_id")
    if job.status is not JobStatus.PAUSED:
        return JobDetail.from_record(job)  # resumed already (a repeated resume)

    def queue(transition: Transition) -> None:
        # Before the commit: a failed publish resumes nothing, and the 503 invites a retry.
        services.publisher.publish(
            services.settings.requests_topic, JobReference(job_id=job_id), job_id=job_id
        )

    transition = services.jobs.update(job_id, resumed, before_commit=queue)
    if transition is None:
        raise NotFoundError("job not found", field="job_id")
    after = transition.after
    if not transition.changed and (refusal := resume_refusal(after)):
        raise ConflictError(refusal, field="job_id")  # cancelled meanwhile, say
    logger.info("job %s resumed", job_id)
    return JobDetail.from_record(after)
