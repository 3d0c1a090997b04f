"""`job-notifications`: one message when a job reaches a terminal status.

Published from inside the transaction that makes the job terminal, before it commits
(`JobStore.apply_event(before_commit=...)`): a failed publish writes nothing, so the
caller's retry (a redelivered event, a retried cancel) ends the job and notifies again.
At least once, never lost; a consumer tells duplicates apart by job id and status.
"""

from __future__ import annotations

import logging

from tuning.events import JobNotification
from tuning.gcp.firestore import Transition
from tuning.services import Services

logger = logging.getLogger(__name__)


def notify_if_ending(transition: Transition, *, services: Services) -> str | None:
    """Publish that the job reaches a terminal status, if it does; the message id."""
    if not transition.became_terminal:
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
