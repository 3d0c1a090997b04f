"""The dispatch function: each message on `training-requests` starts at most one execution.

Pub/Sub pushes to it (dead-letter topic and retry policy on the subscription).
Returning acknowledges; a 429 (all trainer slots taken) or an error (only
transient ones are raised) makes Pub/Sub redeliver with backoff. Run it locally with:

    functions-framework --source functions/dispatch/main.py \
        --target dispatch_training_request --signature-type cloudevent
"""

from __future__ import annotations

import base64
import binascii

import functions_framework
from cloudevents.http import CloudEvent
from werkzeug.exceptions import TooManyRequests

from tuning.dispatching import dispatch_message
from tuning.errors import CapacityError
from tuning.logs import setup_logging
from tuning.services import Services
from tuning.settings import LauncherSettings

logger = setup_logging("dispatch")
SERVICES = Services(LauncherSettings.from_env())  # clients are created on first use


@functions_framework.cloud_event
def dispatch_training_request(cloud_event: CloudEvent) -> None:
    """Entry point: decode the pushed Pub/Sub message and dispatch it."""
    message = (cloud_event.data or {}).get("message") or {}
    try:
        data = base64.b64decode(message.get("data") or "", validate=True)
    except (binascii.Error, ValueError):
        data = b""  # not base64: an invalid message, acknowledged and logged by the core
    message_id = str(message.get("messageId") or cloud_event["id"])
    try:
        result = dispatch_message(
            data=data,
            message_id=message_id,
            attributes=message.get("attributes") or {},
            services=SERVICES,
        )
    except CapacityError as error:
        # Waiting is normal, not a crash: a 429 nacks the message without a stack trace.
        logger.info("message %s: at capacity (%s)", message_id, error.message)
        raise TooManyRequests(error.message) from None
    logger.info("message %s: %s", message_id, result.outcome.value)
