"""`job-notifications`: one message when a job reaches a terminal status, or `paused` (a
pause takes effect when its trainer has checkpointed, later than the request).

Published from inside the transaction that makes the job terminal, before it commits
(`JobStore.apply_event(before_commit=...)`): a failed publish writes nothing, so the
caller's retry (a redelivered event, a retried cancel) ends the job and notifies again.
At least once, never lost; a consumer tells duplicates apart by job id and status.

The same hook asks dispatch to continue a job that handed off from its execution (a
`JobReference` on `training-requests`), so that a failed publish leaves the handoff event to
be redelivered and published again; reconcile re-publishes for a job whose handoff waits
too long.
"""

from __future__ import annotations

import logging

from tuning.events import JobNotification
from tuning.gcp.firestore import Transition
from tuning.services import Services
from tuning.spec import JobReference

logger = logging.getLogger(__name__)


def notify_if_ending(transition: Transition, *, services: Services) -> str | None:
    """Publish that the job reaches a terminal status or `paused`, if it does; the message id."""
    if not (transition.became_terminal or transition.became_paused):
        return None
    job = transition.after
    notification = JobNotification.for_job(job, transition.before.status)
    message_id = services.publisher.publish(
        services.settings.notifications_topic,
        notification,
        job_id=job.job_id,
        status=job.status.value,
    )
    logger.info("job %s ends %s: notified (%s)", job.job_id, job.status.value, message_id)
    return message_id


def continue_if_handed_off(transition: Transition, *, services: Services) -> str | None:
    """Ask dispatch for the next execution when the job has just handed off; the message id."""
    if transition.after.handoff is None or transition.before.handoff is not None:
        return None
    job = transition.after
    message_id = services.publisher.publish(
        services.settings.requests_topic, JobReference(job_id=job.job_id), job_id=job.job_id
    )
    logger.info("job %s handed off: continuation requested (%s)", job.job_id, message_id)
    return message_id


def after_event(transition: Transition, *, services: Services) -> None:
    """What on_job_event publishes before an applied event commits."""
    notify_if_ending(transition, services=services)
    continue_if_handed_off(transition, services=services)
