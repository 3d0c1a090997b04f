"""Secrets on the bus: a published request carrying a token's value is refused and leaves none.

Each request is published on the emulator's training-requests topic and pulled back, so
dispatch sees a real message (its id and attributes); returning from `dispatch_message`
is what acknowledges a push delivery, raising is what redelivers it.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from tests.emulator.event_core_fixtures import Core, start_core
from tuning.dispatching import SECRET_IN_MESSAGE, DispatchOutcome, DispatchResult, dispatch_message
from tuning.errors import TuningError
from tuning.jobs import ErrorType, JobStatus
from tuning.services import Services
from tuning.tenancy import USABLE_BY_ANNOTATION

OWNER = "nightly-runs@example.com"


@pytest.fixture
def secrets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "secrets.json"
    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(path))
    return path


@pytest.fixture
def core(secrets_file: Path, unique: str) -> Core:
    return start_core(unique, MAX_CONCURRENT_JOBS="2")


def token() -> str:
    """A value that cannot occur anywhere by chance."""
    return f"hf_{uuid.uuid4().hex}{uuid.uuid4().hex}"


def request(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "processed_dataset_id": "dataset_abc123",
        "job_name": "published nightly",
        "training_config": {"base_model_id": "google/gemma-3-1b-it", "method": "LoRA"},
    }
    body.update(changes)
    return body


def publish_and_pull(core: Core, body: dict[str, Any], **attributes: str) -> tuple[bytes, str]:
    """Publish on training-requests as another service would; the message as delivered."""
    message_id = core.services.publisher.publish(core.settings.requests_topic, body, **attributes)
    ((data, _),) = core.admin.pull(core.requests_subscription, 1)
    return data, message_id


def deliver(core: Core, data: bytes, message_id: str, services: Services | None = None) -> Any:
    return dispatch_message(
        data=data,
        message_id=message_id,
        attributes={"owner": OWNER},
        services=services or core.services,
    )


def every_document(client: firestore.Client) -> list[str]:
    """Every document of the emulator's database, subcollections included, as text."""
    found: list[str] = []
    pending = list(client.collections())
    while pending:
        for snapshot in pending.pop().stream():
            found.append(f"{snapshot.reference.path} {snapshot.to_dict()!r}")
            pending.extend(snapshot.reference.collections())
    return found


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records)


def test_a_published_hf_token_fails_the_job_as_a_user_error_and_is_stored_nowhere(
    core, caplog, secrets_file
):
    secret = token()
    data, message_id = publish_and_pull(core, request(hf_token=secret), owner=OWNER)

    with caplog.at_level(logging.DEBUG):
        result = deliver(core, data, message_id)
        again = deliver(core, data, message_id)  # a duplicate delivery changes nothing

    # Returned, not raised: the delivery is acknowledged, never redelivered nor dead-lettered.
    assert result.outcome is again.outcome is DispatchOutcome.REJECTED
    assert result.job_id is not None and again.job_id == result.job_id
    job = core.services.jobs.get(result.job_id)
    assert job.status is JobStatus.FAILED
    assert job.owner == OWNER  # the publisher's user sees why
    assert job.error is not None
    assert (job.error.type, job.error.code) == (ErrorType.USER, SECRET_IN_MESSAGE)
    assert job.error.message.startswith("hf_token: ")
    assert "hf_token_secret" in job.error.message
    assert USABLE_BY_ANNOTATION in job.error.message
    assert core.launcher.launched == [] and job.execution is None
    assert not core.services.storage.exists(core.settings.layout.config_uri(job.job_id))
    # Not in any Firestore document, log line, event or notification; not even stored as
    # a secret (a value read off the bus is never taken in).
    assert [doc for doc in every_document(core.services.jobs.client) if secret in doc] == []
    assert secret not in logged(caplog)
    assert "hf_token" in logged(caplog)  # the refusal itself is logged, by field
    assert core.pulled(core.events_subscription, 1, timeout=2) == []
    notices = core.pulled(core.notifications_subscription, 2, timeout=3)
    assert [json.loads(n)["status"] for n in notices] == ["failed"]
    assert all(secret.encode() not in notice for notice in notices)
    assert not secrets_file.exists() or secret not in secrets_file.read_text()


def test_a_published_wandb_key_is_refused_naming_its_field_even_in_an_invalid_request(core, caplog):
    secret = token()
    config = {
        "base_model_id": "google/gemma-3-1b-it",
        "wandb_config": {"api_key": secret, "project": "nightly"},
    }
    # Wrong elsewhere too (a dataset id with a slash): the secret is what the error names,
    # so that fixing the request starts with taking the value off the bus.
    body = request(processed_dataset_id="a/b", training_config=config)
    data, message_id = publish_and_pull(core, body, owner=OWNER)

    with caplog.at_level(logging.DEBUG):
        result = deliver(core, data, message_id)

    assert result.outcome is DispatchOutcome.REJECTED
    job = core.services.jobs.get(result.job_id or "")
    assert job.error is not None and job.error.code == SECRET_IN_MESSAGE
    assert job.error.message.startswith("training_config.wandb_config.api_key: ")
    assert "training_config.wandb_config.api_key_secret" in job.error.message
    assert core.launcher.launched == []
    assert [doc for doc in every_document(core.services.jobs.client) if secret in doc] == []
    assert secret not in logged(caplog)


def test_a_refusal_that_cannot_be_recorded_is_still_acknowledged(core, caplog, unique):
    """A redelivery would keep the token in the subscription, then days in the dead-letter
    store: the message is acknowledged though its failed job could not be written."""
    unannounced = core.settings.model_copy(update={"notifications_topic": f"gone-{unique}"})
    broken = Services(unannounced, launcher=core.launcher)
    secret = token()
    data, message_id = publish_and_pull(core, request(hf_token=secret), owner=OWNER)

    with caplog.at_level(logging.DEBUG):
        result = deliver(core, data, message_id, services=broken)

    assert result.outcome is DispatchOutcome.REJECTED
    assert core.services.jobs.find(result.job_id or "") is None
    assert core.launcher.launched == []
    assert f"message {message_id}" in logged(caplog) and secret not in logged(caplog)
    # Without a secret, the same failure is retried as before: it can still be recorded.
    plain, plain_id = publish_and_pull(core, request(processed_dataset_id="a/b"), owner=OWNER)
    with pytest.raises(TuningError):
        deliver(core, plain, plain_id, services=broken)


def test_a_published_request_naming_its_secrets_by_reference_still_launches(core):
    reference = core.services.secrets.create_user_secret(
        f"team-token-{uuid.uuid4().hex[:8]}", token(), owners=[OWNER]
    )
    body = request(hf_token=None, hf_token_secret=reference)
    data, message_id = publish_and_pull(core, body, owner=OWNER)

    result: DispatchResult = deliver(core, data, message_id)

    assert result.outcome is DispatchOutcome.LAUNCHED
    assert core.services.jobs.get(result.job_id or "").owner == OWNER
