"""on_job_event: apply one lifecycle event to its job and announce the job's end.

The event goes through the state machine in a transaction that also appends it
to the job's history (`JobStore.apply_event`), so duplicates and any delivery
order leave the same record. An event that can never apply (malformed) is
acknowledged and logged; one for a deleted job is dropped. When an event makes
the job terminal, a `JobNotification` is published before the transaction
commits (`tuning.notifications`), so a failed publish leaves the event to be
redelivered and applied again.
"""

from __future__ import annotations

import logging

from tuning.errors import InvalidRequestError
from tuning.events import parse_event
from tuning.gcp.firestore import Transition
from tuning.logs import job_context
from tuning.notifications import notify_if_ending
from tuning.services import Services

logger = logging.getLogger(__name__)


def record_job_event(*, data: bytes, message_id: str, services: Services) -> Transition | None:
    """Apply the event in `data`; None when there was nothing to apply it to."""
    try:
        event = parse_event(data)
    except InvalidRequestError as error:
        logger.error("event message %s acknowledged without effect: %s", message_id, error.message)
        return None
    with job_context(event.job_id):
        transition = services.jobs.apply_event(
            event, before_commit=lambda change: notify_if_ending(change, services=services)
        )
        if transition is None:
            logger.info("event %s dropped: the job no longer exists", event.event_id)
            return None
        return transition
