"""Decoding the Pub/Sub message a push subscription delivers as a CloudEvent."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PushedMessage:
    data: bytes  # empty when the payload was not base64: the core rejects it as invalid
    message_id: str
    attributes: dict[str, str]


def decode_pushed_message(cloud_event: Any) -> PushedMessage:
    """The message inside a `google.cloud.pubsub.topic.v1.messagePublished` CloudEvent."""
    message = (cloud_event.data or {}).get("message") or {}
    try:
        data = base64.b64decode(message.get("data") or "", validate=True)
    except (binascii.Error, ValueError):
        data = b""
    return PushedMessage(
        data=data,
        message_id=str(message.get("messageId") or cloud_event["id"]),
        attributes=dict(message.get("attributes") or {}),
    )
