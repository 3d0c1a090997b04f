"""Publisher and PubSubAdmin against the Pub/Sub emulator."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import BaseModel

from tuning.errors import NotFoundError
from tuning.gcp.pubsub import Publisher, PubSubAdmin


class Ping(BaseModel):
    job_id: str
    step: int


@pytest.fixture
def project() -> str:
    return os.environ["GOOGLE_CLOUD_PROJECT"]


@pytest.fixture
def admin(project: str) -> PubSubAdmin:
    return PubSubAdmin(project)


@pytest.fixture
def topic(admin: PubSubAdmin, unique: str) -> str:
    name = f"events-{unique}"
    admin.ensure_topic(name)
    return name


def test_publish_dict_model_and_bytes_with_attributes(
    admin: PubSubAdmin, project: str, topic: str, unique: str
) -> None:
    admin.ensure_pull_subscription(f"pull-{unique}", topic)
    publisher = Publisher(project)

    ids = [
        publisher.publish(topic, {"job_id": "a", "n": 1}, kind="dict"),
        publisher.publish(
            f"projects/{project}/topics/{topic}", Ping(job_id="b", step=2), kind="model"
        ),
        publisher.publish(topic, b"\x00raw", kind="bytes", job_id="c"),
    ]
    messages = admin.pull(f"pull-{unique}", max_messages=3, timeout=20)

    assert all(ids) and len(set(ids)) == 3
    by_kind = {attributes["kind"]: (data, attributes) for data, attributes in messages}
    assert json.loads(by_kind["dict"][0]) == {"job_id": "a", "n": 1}
    assert Ping.model_validate_json(by_kind["model"][0]) == Ping(job_id="b", step=2)
    assert by_kind["bytes"] == (b"\x00raw", {"kind": "bytes", "job_id": "c"})


def test_pulled_messages_are_acknowledged(
    admin: PubSubAdmin, project: str, topic: str, unique: str
) -> None:
    admin.ensure_pull_subscription(f"pull-{unique}", topic, ack_deadline_seconds=10)
    Publisher(project).publish(topic, b"once")

    first = admin.pull(f"pull-{unique}", max_messages=1, timeout=20)
    second = admin.pull(f"pull-{unique}", max_messages=1, timeout=2)

    assert first == [(b"once", {})]
    assert second == []


def test_publish_to_missing_topic_raises_not_found(project: str, unique: str) -> None:
    with pytest.raises(NotFoundError):
        Publisher(project).publish(f"missing-{unique}", b"x")


def test_ensure_twice_is_fine(admin: PubSubAdmin, unique: str) -> None:
    topic, dead_letter = f"req-{unique}", f"req-dl-{unique}"

    for _ in range(2):
        admin.ensure_topic(topic)
        admin.ensure_topic(dead_letter)
        admin.ensure_pull_subscription(f"pull-{unique}", topic)
        admin.ensure_push_subscription(
            f"push-{unique}",
            topic,
            "http://127.0.0.1:9/projects/p/topics/t",
            ack_deadline_seconds=30,
            dead_letter_topic=dead_letter,
            max_delivery_attempts=7,
        )

    pushed = admin.subscriber.get_subscription(
        request={"subscription": f"projects/{admin.project}/subscriptions/push-{unique}"}
    )
    assert pushed.push_config.push_endpoint == "http://127.0.0.1:9/projects/p/topics/t"
    assert pushed.ack_deadline_seconds == 30
    assert pushed.dead_letter_policy.max_delivery_attempts == 7
    assert pushed.retry_policy.minimum_backoff.total_seconds() == 10
    assert pushed.retry_policy.maximum_backoff.total_seconds() == 600


def test_ensure_push_subscription_converges_to_new_settings(
    admin: PubSubAdmin, topic: str, unique: str
) -> None:
    admin.ensure_push_subscription(
        f"push-{unique}", topic, "http://127.0.0.1:9/old", ack_deadline_seconds=30
    )

    admin.ensure_push_subscription(
        f"push-{unique}", topic, "http://127.0.0.1:10/new", ack_deadline_seconds=60
    )

    current = admin.subscriber.get_subscription(
        request={"subscription": f"projects/{admin.project}/subscriptions/push-{unique}"}
    )
    assert current.push_config.push_endpoint == "http://127.0.0.1:10/new"
    assert current.ack_deadline_seconds == 60


def test_delete_is_idempotent(admin: PubSubAdmin, topic: str, unique: str) -> None:
    admin.ensure_pull_subscription(f"pull-{unique}", topic)

    assert admin.delete_subscription(f"pull-{unique}") is True
    assert admin.delete_subscription(f"pull-{unique}") is False
    assert admin.delete_topic(topic) is True
    assert admin.delete_topic(topic) is False
