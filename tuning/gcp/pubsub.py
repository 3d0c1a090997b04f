"""Pub/Sub adapters: a confirming publisher, and idempotent admin helpers for tests and local use.

Both work unchanged against the emulator: the google-cloud-pubsub clients switch to it (insecure
channel, no credentials) when PUBSUB_EMULATOR_HOST is set.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import time
from collections.abc import Mapping
from typing import Any

import google.cloud.pubsub_v1 as pubsub_v1
from google.api_core import exceptions as api_exceptions
from google.protobuf import field_mask_pb2
from google.pubsub_v1 import types
from pydantic import BaseModel

from tuning.errors import ConflictError, NotFoundError, TuningError
from tuning.gcp.errors import google_api_errors
from tuning.gcp.permissions import requires

# Resource ids: start with a letter, 3-255 characters, not starting with "goog".
_RESOURCE_ID = re.compile(r"^(?!goog)[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$")
_FULL_PATH = re.compile(r"^projects/[^/]+/(?P<kind>topics|subscriptions)/(?P<id>[^/]+)$")


Message = bytes | Mapping[str, Any] | BaseModel


def resource_path(project: str, kind: str, name: str) -> str:
    """`projects/{project}/{kind}/{name}` for a short name; a full path is checked and kept."""
    match = _FULL_PATH.fullmatch(name)
    if match is not None:
        if match["kind"] != kind:
            raise TuningError(f"expected a {kind} path, got {name!r}")
        short = match["id"]
    else:
        short = name
        name = f"projects/{project}/{kind}/{short}"
    if not _RESOURCE_ID.fullmatch(short):
        raise TuningError(f"invalid Pub/Sub {kind[:-1]} id: {short!r}")
    return name


def topic_path(project: str, topic: str) -> str:
    """Full topic path from a short name or a full path."""
    return resource_path(project, "topics", topic)


def subscription_path(project: str, subscription: str) -> str:
    """Full subscription path from a short name or a full path."""
    return resource_path(project, "subscriptions", subscription)


def encode_message(message: Message) -> bytes:
    """Message bytes: bytes as they are, models and mappings as compact UTF-8 JSON."""
    if isinstance(message, bytes | bytearray):
        return bytes(message)
    if isinstance(message, BaseModel):
        return message.model_dump_json().encode("utf-8")
    if isinstance(message, Mapping):
        return json.dumps(dict(message), separators=(",", ":"), ensure_ascii=False).encode()
    raise TypeError(f"cannot publish a {type(message).__name__}: use bytes, a dict or a model")


def _api_errors(what: str) -> contextlib.AbstractContextManager[None]:
    return google_api_errors("Pub/Sub", what)


class Publisher:
    """Publishes one message and returns only once Pub/Sub confirmed it (its message id)."""

    def __init__(
        self,
        project: str,
        client: pubsub_v1.PublisherClient | None = None,
        *,
        timeout: float = 30.0,
    ) -> None:
        self.project = project
        self.client = client or pubsub_v1.PublisherClient()
        self.timeout = timeout

    @requires("pubsub.topics.publish")
    def publish(self, topic: str, message: Message, **attributes: str) -> str:
        """Publish `message` with string `attributes` to `topic`; returns the message id."""
        path = topic_path(self.project, topic)
        data = encode_message(message)
        with _api_errors(path):
            future = self.client.publish(path, data, **attributes)
            # Waiting makes "published" mean "stored by Pub/Sub": a function that returns
            # before the batch is sent may be frozen (CPU throttled) and lose the message.
            return str(future.result(timeout=self.timeout))


class PubSubAdmin:
    """Idempotent topic and subscription management for tests and the local stack."""

    def __init__(
        self,
        project: str,
        publisher: pubsub_v1.PublisherClient | None = None,
        subscriber: pubsub_v1.SubscriberClient | None = None,
    ) -> None:
        self.project = project
        self.publisher = publisher or pubsub_v1.PublisherClient()
        self.subscriber = subscriber or pubsub_v1.SubscriberClient()

    def ensure_topic(self, name: str) -> str:
        """Create the topic unless it exists; returns its full path."""
        path = topic_path(self.project, name)
        with _api_errors(path), contextlib.suppress(api_exceptions.AlreadyExists):
            self.publisher.create_topic(request={"name": path})
        return path

    def ensure_pull_subscription(
        self,
        name: str,
        topic: str,
        *,
        ack_deadline_seconds: int = 60,
        dead_letter_topic: str | None = None,
        max_delivery_attempts: int = 5,
    ) -> str:
        """Create or update a pull subscription; returns its full path."""
        subscription = self._subscription(
            name, topic, ack_deadline_seconds, dead_letter_topic, max_delivery_attempts
        )
        return self._ensure(
            subscription, ["push_config", "ack_deadline_seconds", "dead_letter_policy"]
        )

    def ensure_push_subscription(
        self,
        name: str,
        topic: str,
        push_endpoint: str,
        *,
        ack_deadline_seconds: int,
        dead_letter_topic: str | None = None,
        max_delivery_attempts: int = 5,
        min_backoff_seconds: int = 10,
        max_backoff_seconds: int = 600,
    ) -> str:
        """Create or update a push subscription with retry and dead-letter policies."""
        subscription = self._subscription(
            name, topic, ack_deadline_seconds, dead_letter_topic, max_delivery_attempts
        )
        subscription.push_config = types.PushConfig(push_endpoint=push_endpoint)
        subscription.retry_policy = types.RetryPolicy(
            minimum_backoff=datetime.timedelta(seconds=min_backoff_seconds),
            maximum_backoff=datetime.timedelta(seconds=max_backoff_seconds),
        )
        return self._ensure(
            subscription,
            ["push_config", "ack_deadline_seconds", "dead_letter_policy", "retry_policy"],
        )

    def _subscription(
        self,
        name: str,
        topic: str,
        ack_deadline_seconds: int,
        dead_letter_topic: str | None,
        max_delivery_attempts: int,
    ) -> types.Subscription:
        subscription = types.Subscription(
            name=subscription_path(self.project, name),
            topic=topic_path(self.project, topic),
            ack_deadline_seconds=ack_deadline_seconds,
        )
        if dead_letter_topic is not None:
            subscription.dead_letter_policy = types.DeadLetterPolicy(
                dead_letter_topic=topic_path(self.project, dead_letter_topic),
                max_delivery_attempts=max_delivery_attempts,
            )
        return subscription

    def _ensure(self, subscription: types.Subscription, fields: list[str]) -> str:
        """Create; if it exists, converge its settings (a restarted stack moves endpoints)."""
        path = str(subscription.name)
        with _api_errors(path):
            try:
                self.subscriber.create_subscription(request=subscription)
                return path
            except api_exceptions.AlreadyExists:
                pass
            existing = self.subscriber.get_subscription(request={"subscription": path})
            if existing.topic != subscription.topic:
                raise ConflictError(f"{path} exists on another topic ({existing.topic})")
            self.subscriber.update_subscription(
                request={
                    "subscription": subscription,
                    "update_mask": field_mask_pb2.FieldMask(paths=fields),
                }
            )
        return path

    def pull(
        self, subscription: str, max_messages: int = 10, timeout: float = 10.0
    ) -> list[tuple[bytes, dict[str, str]]]:
        """Pull and acknowledge up to `max_messages`, waiting at most `timeout` seconds."""
        path = subscription_path(self.project, subscription)
        received: list[tuple[bytes, dict[str, str]]] = []
        deadline = time.monotonic() + timeout
        # One pull may return fewer messages than are available; keep pulling until enough.
        while len(received) < max_messages and (remaining := deadline - time.monotonic()) > 0:
            with _api_errors(path):
                try:
                    response = self.subscriber.pull(
                        request={
                            "subscription": path,
                            "max_messages": max_messages - len(received),
                        },
                        timeout=remaining,
                    )
                except api_exceptions.DeadlineExceeded:
                    break  # nothing arrived in time: not an error for a bounded wait
                if not response.received_messages:
                    time.sleep(0.05)  # an empty pull may return early: do not spin
                    continue
                self.subscriber.acknowledge(
                    request={
                        "subscription": path,
                        "ack_ids": [m.ack_id for m in response.received_messages],
                    }
                )
            received.extend(
                (bytes(m.message.data), dict(m.message.attributes))
                for m in response.received_messages
            )
        return received

    def delete_subscription(self, name: str) -> bool:
        """Delete the subscription; False when it did not exist."""
        path = subscription_path(self.project, name)
        try:
            with _api_errors(path):
                self.subscriber.delete_subscription(request={"subscription": path})
        except NotFoundError:
            return False
        return True

    def delete_topic(self, name: str) -> bool:
        """Delete the topic; False when it did not exist."""
        path = topic_path(self.project, name)
        try:
            with _api_errors(path):
                self.publisher.delete_topic(request={"topic": path})
        except NotFoundError:
            return False
        return True
