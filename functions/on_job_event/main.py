"""The on_job_event function: each message on `job-events` updates its job's record.

Pub/Sub pushes to it (dead-letter topic and retry policy on the subscription).
An invalid event is acknowledged and logged; only transient errors raise, so
Pub/Sub redelivers. Run it locally with:

    functions-framework --source functions/on_job_event/main.py \
        --target record_job_event --signature-type cloudevent
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from tuning import event_sink
from tuning.logs import setup_logging
from tuning.pushed import decode_pushed_message
from tuning.services import Services
from tuning.settings import ServiceSettings

logger = setup_logging("on_job_event")
SERVICES = Services(ServiceSettings.from_env())  # clients are created on first use


@functions_framework.cloud_event
def record_job_event(cloud_event: CloudEvent) -> None:
    """Entry point: decode the pushed Pub/Sub message and apply the event it carries."""
    message = decode_pushed_message(cloud_event)
    event_sink.record_job_event(data=message.data, message_id=message.message_id, services=SERVICES)
