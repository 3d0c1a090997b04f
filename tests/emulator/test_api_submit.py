"""POST /train through the submit function, against Firestore, Pub/Sub and GCS stand-ins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.emulator.test_api_stack import FIXTURES, ApiStack, fake_id_token, seed_request
from tuning.spec import JobReference

INVALID = sorted((FIXTURES / "requests" / "invalid").glob("*.json"))


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> ApiStack:
    return ApiStack.start(monkeypatch, tmp_path, unique)


def secret_values() -> list[str]:
    body = seed_request()
    return [body["hf_token"], body["training_config"]["wandb_config"]["api_key"]]


def test_submit_queues_the_job_and_persists_no_secret(stack: ApiStack) -> None:
    answer = stack.submit(seed_request(), caller="alice@example.com")

    assert answer.status_code == 202
    job_id = answer.get_json()["job_id"]
    assert answer.get_json() == {"job_id": job_id, "status": "queued"}
    assert job_id.startswith("training_dataset-abc123_gemma-2b_")
    job = stack.services.jobs.get(job_id)
    assert job.owner == "alice@example.com"
    assert set(job.secret_references) == {"hf_token", "wandb_api_key"}
    config = stack.services.storage.download_json(stack.settings.layout.config_uri(job_id))
    assert config["hf_token_secret"] == job.secret_references["hf_token"]
    assert "hf_token" not in config
    messages = stack.pull(stack.settings.requests_topic, expected=1)
    assert [JobReference.model_validate(data) for data, _ in messages] == [
        JobReference(job_id=job_id)
    ]
    # The secrets live in the secret store only: nowhere in Firestore, GCS, the message
    # or the answer.
    stored = [value for secret in stack.stored_secrets().values() for value in secret["versions"]]
    assert sorted(stored) == sorted(secret_values())
    places = {
        "firestore": stack.firestore_dump(),
        "gcs": b"".join(stack.gcs_objects().values()).decode(),
        "message": json.dumps(messages),
        "answer": answer.get_data(as_text=True),
    }
    for value in secret_values():
        assert [place for place, text in places.items() if value in text] == []


def test_caller_from_the_id_token_becomes_the_owner(stack: ApiStack) -> None:
    token = fake_id_token(email="bob@example.com", sub="1234")

    answer = stack.clients["submit"].post(
        "/train", json=seed_request(), headers={"Authorization": f"Bearer {token}"}
    )

    assert answer.status_code == 202
    assert stack.services.jobs.get(answer.get_json()["job_id"]).owner == "bob@example.com"


def test_resubmit_with_the_same_key_returns_the_job_and_creates_nothing(stack: ApiStack) -> None:
    first = stack.submit(seed_request(), caller="alice@example.com", key="retry-1")
    config_uri = stack.settings.layout.config_uri(first.get_json()["job_id"])
    objects_after_first = stack.gcs_objects()
    secrets_after_first = stack.stored_secrets()

    second = stack.submit(seed_request(), caller="alice@example.com", key="retry-1")

    assert (first.status_code, second.status_code) == (202, 200)
    assert second.get_json()["job_id"] == first.get_json()["job_id"]
    assert stack.job_ids() == [first.get_json()["job_id"]]
    assert stack.gcs_objects() == objects_after_first
    assert config_uri in objects_after_first
    assert stack.stored_secrets() == secrets_after_first
    assert len(stack.pull(stack.settings.requests_topic, expected=2, timeout=3)) == 1


def test_request_id_in_the_body_works_like_the_header(stack: ApiStack) -> None:
    body = {**seed_request(), "request_id": "body-key-7"}

    first, second = stack.submit(body), stack.submit(body)

    assert (first.status_code, second.status_code) == (202, 200)
    assert first.get_json()["job_id"] == second.get_json()["job_id"]


def test_the_same_key_from_another_caller_is_another_job(stack: ApiStack) -> None:
    alice = stack.submit(seed_request(), caller="alice@example.com", key="k1")
    bob = stack.submit(seed_request(), caller="bob@example.com", key="k1")

    assert (alice.status_code, bob.status_code) == (202, 202)
    assert alice.get_json()["job_id"] != bob.get_json()["job_id"]


def test_reusing_a_key_for_another_request_is_409(stack: ApiStack) -> None:
    stack.submit(seed_request(), key="k2")
    changed = seed_request()
    changed["training_config"]["hyperparameters"]["learning_rate"] = 0.001

    answer = stack.submit(changed, key="k2")

    assert answer.status_code == 409
    assert answer.get_json()["error"]["field"] == "Idempotency-Key"
    assert len(stack.job_ids()) == 1


def test_failed_publish_answers_503_and_leaves_nothing_half_made(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str
) -> None:
    stack = ApiStack.start(monkeypatch, tmp_path, unique, create_requests_topic=False)

    answer = stack.submit(seed_request(), caller="alice@example.com")

    assert answer.status_code == 503
    assert answer.headers["Retry-After"]
    assert answer.get_json()["error"]["code"] == "unavailable"
    assert stack.job_ids() == []
    assert stack.firestore_dump() == "[]"
    assert stack.gcs_objects() == {}
    assert stack.stored_secrets() == {}
    for value in secret_values():
        assert value not in answer.get_data(as_text=True)


@pytest.mark.parametrize("path", INVALID[::6], ids=[path.stem for path in INVALID[::6]])
def test_an_invalid_body_names_the_field_and_creates_nothing(stack: ApiStack, path: Path) -> None:
    case = json.loads(path.read_text())

    answer = stack.submit(case["request"])

    assert answer.status_code == 422
    assert answer.get_json()["error"]["field"] == case["field"]
    assert stack.job_ids() == []
    assert stack.gcs_objects() == {}
    assert stack.stored_secrets() == {}
