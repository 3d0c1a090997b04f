"""The delete function's core: cancel a job, or delete it with every file, secret and event.

Deletion goes from the outside in: stop the execution, delete the GCS prefixes, the
secrets and the config, and the record (with its event history) last. Any failure
stops before the record, so the job stays findable and a retried DELETE finishes
the work; once the record is gone a DELETE answers 404 and touches nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tuning.api.models import DeleteResponse, JobDetail
from tuning.api.queries import visible_job
from tuning.errors import ConflictError, NotFoundError, TransientError, TuningError
from tuning.events import CancelledEvent, CancelledPayload
from tuning.jobs import JobStatus, utcnow
from tuning.notifications import notify_if_ending
from tuning.services import Services
from tuning.settings import ApiSettings, LauncherSettings

logger = logging.getLogger(__name__)

DELETED_MESSAGE = "Job and all associated files deleted successfully."


class DeleteSettings(ApiSettings, LauncherSettings):
    """The delete function: the API's settings plus the launcher's, to stop executions."""


def cancel_job(
    job_id: str, *, services: Services, owner: str | None, caller: str | None
) -> JobDetail:
    """Stop the job's execution and record it as cancelled; 409 when it already ended.
    A paused job is cancelled as it is (its execution ended when it paused)."""
    job = visible_job(job_id, services=services, owner=owner)
    if job.status.is_terminal:
        raise ConflictError(f"the job is already {job.status.value}", field="job_id")
    if job.execution and job.status is not JobStatus.PAUSED:  # a paused job's has ended
        services.launcher_for(job).cancel(job.execution)
    reason = f"cancelled by {caller}" if caller else "cancelled by the user"
    # seq 0 of the user's source: a retried cancel is the same event, applied once.
    event = CancelledEvent(
        job_id=job_id,
        attempt=job.attempt,
        seq=0,
        timestamp=utcnow(),
        source="user",
        payload=CancelledPayload(reason=reason),
    )
    # Notified before the commit: a failed publish cancels nothing, and the 503 it
    # answers invites a retry that cancels and notifies (the execution stop is idempotent).
    transition = services.jobs.apply_event(
        event, before_commit=lambda change: notify_if_ending(change, services=services)
    )
    if transition is None:
        raise NotFoundError("job not found", field="job_id")
    if not transition.after.status.is_terminal:
        # A newer task attempt started between our read and the write: it outranks the event.
        raise TransientError("the job moved to a new attempt while cancelling; retry")
    if not transition.became_terminal:
        raise ConflictError(f"the job is already {transition.after.status.value}", field="job_id")
    logger.info("job %s %s", job_id, reason)
    return JobDetail.from_record(transition.after)


def delete_job(job_id: str, *, services: Services, owner: str | None) -> DeleteResponse:
    """Delete everything the job left behind, the record last; 503 asks for a retry."""
    job = visible_job(job_id, services=services, owner=owner)
    if job.execution and not job.status.is_terminal and job.status is not JobStatus.PAUSED:
        services.launcher_for(job).cancel(job.execution)
    deleted: list[str] = []
    storage, layout = services.storage, services.settings.layout
    steps: list[Callable[[], list[str]]] = [
        *(_prefix_step(storage.delete_prefix, prefix) for prefix in layout.job_prefixes(job_id)),
        lambda: services.secrets.delete_job_secrets(job_id),
        lambda: [uri] if storage.delete(uri := layout.config_uri(job_id)) else [],
    ]
    failures = []
    for step in steps:
        try:
            deleted.extend(step())
        except TuningError as error:
            logger.warning("deleting job %s: %s", job_id, error.message)
            failures.append(error)
    if failures:
        raise TransientError(
            f"the job was only partly deleted ({failures[0].message}); retry DELETE to finish"
        ) from failures[0]
    if services.jobs.delete(job_id):
        deleted.append(f"{services.settings.jobs_collection}/{job_id}")
    logger.info("deleted job %s: %d resources", job_id, len(deleted))
    return DeleteResponse(
        job_id=job_id, deleted=True, message=DELETED_MESSAGE, deleted_resources=deleted
    )


def _prefix_step(delete_prefix: Callable[[str], list[str]], prefix: str) -> Callable[[], list[str]]:
    """Delete one prefix; report the prefix (as the seed did), not each object."""
    return lambda: [prefix] if delete_prefix(prefix) else []
