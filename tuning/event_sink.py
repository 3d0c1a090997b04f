"""on_job_event: apply one lifecycle event to its job and announce the job's end.

The event goes through the state machine in a transaction that also appends it
to the job's history (`JobStore.apply_event`), so duplicates and any delivery
order leave the same record. A malformed event is acknowledged and logged; one
for a deleted job is dropped. When an event makes the job terminal,
a `JobNotification` is published before the transaction commits
(`tuning.notifications`), so a failed publish leaves the event to be redelivered
and applied again.

A well-formed event the job store cannot hold (beyond the bounds of
`tuning.events.storage_problem_of`, or refused by Firestore itself) never goes back to
Pub/Sub: redelivery would fail the same way until the event is dead-lettered, leaving the
job `preparing` while its execution runs. Its job is failed instead (a system error naming
the cause) in a small write that succeeds, and the event is acknowledged.
"""

from __future__ import annotations

import logging

from tuning.errors import InvalidRequestError
from tuning.events import JobEvent, parse_event, storage_problem_of, unrecordable_failure
from tuning.gcp.firestore import Transition, UnwritableError
from tuning.logs import job_context
from tuning.notifications import after_event
from tuning.services import Services

logger = logging.getLogger(__name__)


def record_job_event(*, data: bytes, message_id: str, services: Services) -> Transition | None:
    """Apply the event in `data`; None when there was nothing to apply it to."""
    try:
        event = parse_event(data)
    except InvalidRequestError as error:
        logger.error("event message %s acknowledged without effect: %s", message_id, error.message)
        return None
    return record_event(event, message_id=message_id, services=services)


def record_event(event: JobEvent, *, message_id: str, services: Services) -> Transition | None:
    """Apply a parsed event; one the store cannot hold fails its job instead."""
    with job_context(event.job_id):
        problem = storage_problem_of(event)
        if problem is not None:
            return _fail_job(event, cause=problem, services=services)
        try:
            transition = services.jobs.apply_event(
                event,
                before_commit=lambda change: after_event(change, services=services),
                # A completed job's measured throughput, for later estimates (tuning/pricing.py).
                in_transaction=services.throughput.record_completion,
            )
        except UnwritableError as error:
            return _fail_job(event, cause=error.message, services=services)
        if transition is None:
            logger.info("event %s dropped: the job no longer exists", event.event_id)
        return transition


def _fail_job(event: JobEvent, *, cause: str, services: Services) -> Transition | None:
    failure = unrecordable_failure(event, cause=cause)
    logger.error(
        "event %s of job %s cannot be recorded; failing the job: %s",
        event.event_id,
        event.job_id,
        cause[:1000],
    )
    # A failure of this small fixed shape is always writable; should the store still
    # refuse it, UnwritableError propagates and the delivery is retried.
    return services.jobs.apply_event(
        failure, before_commit=lambda change: after_event(change, services=services)
    )
