"""Create locally what Terraform creates in GCP: topics, push subscriptions, buckets.

Idempotent: run it again (a restarted stack has new ports) and every resource
converges to the settings given. The wiring mirrors what Terraform provisions:

    training-requests --push--> dispatch       (dead letters: training-requests-dead-letter)
    job-events        --push--> on_job_event   (dead letters: job-events-dead-letter)
    job-notifications                          (for anyone; a pull subscription keeps them)

Each dead-letter topic has a pull subscription, so rejected messages are kept
for inspection instead of being dropped by a topic nobody subscribes to. Push
endpoints end in `/projects/P/topics/T`: functions-framework fills the
CloudEvent's `source` from that path, as Eventarc does in GCP.

    python -m tuning.local.bootstrap --dispatch-url http://127.0.0.1:8101 \
        --events-url http://127.0.0.1:8102
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from google.protobuf import field_mask_pb2
from google.pubsub_v1 import types

from tuning.gcp.errors import google_api_errors
from tuning.gcp.pubsub import PubSubAdmin
from tuning.gcp.storage import GcsStore
from tuning.settings import ServiceSettings

DEAD_LETTER_SUFFIX = "-dead-letter"


@dataclass(frozen=True)
class DeliveryPolicy:
    """How Pub/Sub pushes to one function: deadline, retries and when to give up.

    Without backoff bounds the subscription gets no retry policy. Locally that is
    the only choice that works: the Pub/Sub emulator (0.8.20) stops redelivering a
    rejected push message after two or three attempts when the subscription has a
    retry policy, while without one it redelivers about once a second (and still
    dead-letters after `max_delivery_attempts`). In GCP, Terraform sets exponential
    backoff.
    """

    ack_deadline_seconds: int
    max_delivery_attempts: int  # then the message goes to the dead-letter topic
    min_backoff_seconds: int | None = None
    max_backoff_seconds: int | None = None


# Dispatch waits out full GPU slots by being redelivered, so it gets the most attempts;
# a message dead-lettered while waiting is re-published by reconcile.
DISPATCH_POLICY = DeliveryPolicy(ack_deadline_seconds=60, max_delivery_attempts=100)
EVENTS_POLICY = DeliveryPolicy(ack_deadline_seconds=30, max_delivery_attempts=10)


@dataclass(frozen=True)
class LocalResources:
    """The names bootstrap made, for the stack and tests to use."""

    requests_subscription: str
    events_subscription: str
    notifications_subscription: str
    requests_dead_letters: str  # pull subscriptions on the dead-letter topics
    events_dead_letters: str


def dead_letter_topic(topic: str) -> str:
    return f"{topic}{DEAD_LETTER_SUFFIX}"


def push_endpoint(base_url: str, project: str, topic: str) -> str:
    """The URL Pub/Sub pushes to: functions-framework reads the topic from the path."""
    return f"{base_url.rstrip('/')}/projects/{project}/topics/{topic}"


def bootstrap(
    settings: ServiceSettings,
    *,
    dispatch_url: str,
    events_url: str,
    dispatch_policy: DeliveryPolicy = DISPATCH_POLICY,
    events_policy: DeliveryPolicy = EVENTS_POLICY,
    admin: PubSubAdmin | None = None,
    storage: GcsStore | None = None,
) -> LocalResources:
    """Create or converge the topics, subscriptions and buckets the functions need."""
    admin = admin or PubSubAdmin(settings.project_id)
    storage = storage or GcsStore()
    project = settings.project_id
    for bucket in dict.fromkeys(
        (settings.config_bucket, settings.data_bucket, settings.models_bucket)
    ):
        storage.create_bucket_if_absent(bucket)
    for topic in (settings.requests_topic, settings.events_topic, settings.notifications_topic):
        admin.ensure_topic(topic)
    resources = LocalResources(
        requests_subscription=f"{settings.requests_topic}-dispatch",
        events_subscription=f"{settings.events_topic}-on-job-event",
        notifications_subscription=f"{settings.notifications_topic}-local",
        requests_dead_letters=f"{dead_letter_topic(settings.requests_topic)}-inspect",
        events_dead_letters=f"{dead_letter_topic(settings.events_topic)}-inspect",
    )
    pushes = (
        (resources.requests_subscription, settings.requests_topic, dispatch_url, dispatch_policy),
        (resources.events_subscription, settings.events_topic, events_url, events_policy),
    )
    for subscription, topic, url, policy in pushes:
        dead_letters = admin.ensure_topic(dead_letter_topic(topic))
        admin.ensure_pull_subscription(
            f"{dead_letter_topic(topic)}-inspect", dead_letters, ack_deadline_seconds=60
        )
        path = admin.ensure_push_subscription(
            subscription,
            topic,
            push_endpoint(url, project, topic),
            ack_deadline_seconds=policy.ack_deadline_seconds,
            dead_letter_topic=dead_letters,
            max_delivery_attempts=policy.max_delivery_attempts,
            min_backoff_seconds=policy.min_backoff_seconds or 10,
            max_backoff_seconds=policy.max_backoff_seconds or 600,
        )
        if policy.min_backoff_seconds is None or policy.max_backoff_seconds is None:
            clear_retry_policy(admin, path)
    admin.ensure_pull_subscription(
        resources.notifications_subscription, settings.notifications_topic
    )
    return resources


def clear_retry_policy(admin: PubSubAdmin, subscription: str) -> None:
    """Remove the subscription's retry policy (see `DeliveryPolicy` for why)."""
    with google_api_errors("Pub/Sub", subscription):
        admin.subscriber.update_subscription(
            request={
                "subscription": types.Subscription(name=subscription),
                "update_mask": field_mask_pb2.FieldMask(paths=["retry_policy"]),
            }
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dispatch-url", required=True, help="the dispatch function's base URL")
    parser.add_argument("--events-url", required=True, help="the on_job_event function's URL")
    args = parser.parse_args(argv)
    resources = bootstrap(
        ServiceSettings.from_env(), dispatch_url=args.dispatch_url, events_url=args.events_url
    )
    print(resources)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
