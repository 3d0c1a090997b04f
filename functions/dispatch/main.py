"""The dispatch function: each message on `training-requests` starts at most one execution.

Pub/Sub pushes to it (dead-letter topic and retry policy on the subscription).
Returning acknowledges; a 429 (all trainer slots taken) or an error (only
transient ones are raised) makes Pub/Sub redeliver with backoff. Run it locally with:

    functions-framework --source functions/dispatch/main.py \
        --target dispatch_training_request --signature-type cloudevent
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent
from werkzeug.exceptions import TooManyRequests

from tuning.dispatching import dispatch_message
from tuning.errors import CapacityError
from tuning.logs import setup_logging
from tuning.pushed import decode_pushed_message
from tuning.services import Services
from tuning.settings import LauncherSettings

logger = setup_logging("dispatch")
SERVICES = Services(LauncherSettings.from_env())  # clients are created on first use


@functions_framework.cloud_event
def dispatch_training_request(cloud_event: CloudEvent) -> None:
    """Entry point: decode the pushed Pub/Sub message and dispatch it."""
    message = decode_pushed_message(cloud_event)
    message_id = message.message_id
    try:
        result = dispatch_message(
            data=message.data,
            message_id=message_id,
            attributes=message.attributes,
            services=SERVICES,
        )
    except CapacityError as error:
        # Waiting is normal, not a crash: a 429 nacks the message without a stack trace.
        logger.info("message %s: at capacity (%s)", message_id, error.message)
        raise TooManyRequests(error.message) from None
    logger.info("message %s: %s", message_id, result.outcome.value)
