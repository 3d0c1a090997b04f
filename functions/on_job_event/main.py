"""The on_job_event function: each message on `job-events` updates its job's record.

Pub/Sub pushes to it (dead-letter topic and retry policy on the subscription).
An invalid event is acknowledged and logged; only transient errors raise, so
Pub/Sub redelivers. Run it locally with:

    functions-framework --source functions/on_job_event/main.py \
        --target record_job_event --signature-type cloudevent
"""

from __future__ import annotations

import base64
import binascii

import functions_framework
from cloudevents.http import CloudEvent

from tuning import event_sink
from tuning.logs import setup_logging
from tuning.services import Services
from tuning.settings import ServiceSettings

logger = setup_logging("on_job_event")
SERVICES = Services(ServiceSettings.from_env())  # clients are created on first use


@functions_framework.cloud_event
def record_job_event(cloud_event: CloudEvent) -> None:
    """Entry point: decode the pushed Pub/Sub message and apply the event it carries."""
    message = (cloud_event.data or {}).get("message") or {}
    try:
        data = base64.b64decode(message.get("data") or "", validate=True)
    except (binascii.Error, ValueError):
        data = b""  # not base64: an invalid event, acknowledged and logged by the core
    event_sink.record_job_event(
        data=data,
        message_id=str(message.get("messageId") or cloud_event["id"]),
        services=SERVICES,
    )
