"""The local stack's tooling: bootstrap (Terraform's wiring) and function servers."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import requests

from tuning.gcp.pubsub import PubSubAdmin
from tuning.gcp.storage import GcsStore
from tuning.local.bootstrap import DeliveryPolicy, bootstrap
from tuning.local.functions import (
    FunctionServerError,
    FunctionSpec,
    start_function,
    stop_function,
)
from tuning.local.scratch import unique_names
from tuning.settings import ServiceSettings

BUCKETS = {  # settings that parse; these servers never reach a bucket
    "GCS_CONFIG_BUCKET_NAME": "unused-config",
    "GCS_DATA_BUCKET_NAME": "unused-data",
    "GCS_MODELS_BUCKET_NAME": "unused-models",
}


@pytest.fixture
def settings(unique: str) -> ServiceSettings:
    return ServiceSettings.from_env(unique_names(unique))


def test_bootstrap_wires_topics_subscriptions_and_buckets_idempotently(settings, unique):
    admin = PubSubAdmin(settings.project_id)
    project = settings.project_id

    bootstrap(settings, dispatch_url="http://127.0.0.1:1", events_url="http://127.0.0.1:2")
    resources = bootstrap(  # again, as a restarted stack with new ports and policies
        settings,
        dispatch_url="http://127.0.0.1:3/",
        events_url="http://127.0.0.1:4",
        events_policy=DeliveryPolicy(
            ack_deadline_seconds=45,
            max_delivery_attempts=7,
            min_backoff_seconds=5,
            max_backoff_seconds=300,
        ),
    )

    def get(name: str) -> Any:
        path = f"projects/{project}/subscriptions/{name}"
        return admin.subscriber.get_subscription(request={"subscription": path})

    dispatch = get(resources.requests_subscription)
    assert dispatch.push_config.push_endpoint == (
        f"http://127.0.0.1:3/projects/{project}/topics/requests-{unique}"
    )
    assert dispatch.dead_letter_policy.dead_letter_topic == (
        f"projects/{project}/topics/requests-{unique}-dead-letter"
    )
    assert dispatch.dead_letter_policy.max_delivery_attempts == 100
    assert not type(dispatch).pb(dispatch).HasField("retry_policy")  # see DeliveryPolicy
    events = get(resources.events_subscription)
    assert events.ack_deadline_seconds == 45
    assert events.dead_letter_policy.max_delivery_attempts == 7
    assert events.retry_policy.maximum_backoff.total_seconds() == 300
    for name in (resources.requests_dead_letters, resources.events_dead_letters):
        assert get(name).topic.endswith("-dead-letter")
    assert get(resources.notifications_subscription).topic.endswith(f"notifications-{unique}")
    storage = GcsStore()
    for bucket in (settings.config_bucket, settings.data_bucket, settings.models_bucket):
        assert storage.client.lookup_bucket(bucket) is not None


def test_a_function_server_answers_until_stopped(tmp_path):
    server = start_function("reconcile", environ={**os.environ, **BUCKETS}, log_dir=tmp_path)
    try:
        assert requests.get(f"{server.url}/health", timeout=5).json() == {"status": "ok"}
    finally:
        stop_function(server)

    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", server.port)) != 0
    assert server.log_path.parent == tmp_path


def test_a_function_that_cannot_start_says_why(tmp_path):
    broken = FunctionSpec("dispatch", "no_such_entry_point", "cloudevent")
    environ = {**os.environ, **BUCKETS}

    with pytest.raises(FunctionServerError, match="no_such_entry_point"):
        start_function("broken", environ=environ, log_dir=tmp_path, spec=broken)
