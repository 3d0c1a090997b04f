"""POST /train may name only what is the caller's: base models and secrets (tuning/tenancy.py).

Through the real submit function on the emulators, with the local secret store standing in
for Secret Manager (annotations included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.emulator.test_api_stack import ApiStack, seed_request
from tuning.gcp.secrets import LocalSecretStore
from tuning.tenancy import USABLE_BY_ANNOTATION

ALICE = "alice@example.com"
BOB = "bob@example.com"


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> ApiStack:
    # The functions read the environment at their first request; ApiStack.start keeps it.
    monkeypatch.setenv("ALLOWED_BASE_MODEL_LOCATIONS", f"gs://shared-{unique}/gemma/")
    return ApiStack.start(monkeypatch, tmp_path, unique)


def user_secrets(stack: ApiStack) -> LocalSecretStore:
    """The store the operator shares secrets in (the functions' own local store)."""
    return LocalSecretStore(stack.secrets_file, project=stack.settings.project_id)


def request_with_model(model: str) -> dict[str, Any]:
    body = seed_request()
    body["training_config"]["base_model_id"] = model
    return body


def request_with_secret(reference: str) -> dict[str, Any]:
    body = seed_request()
    del body["hf_token"]
    body["hf_token_secret"] = reference
    return body


def snapshot(stack: ApiStack) -> tuple[list[str], dict[str, bytes], dict[str, Any]]:
    return stack.job_ids(), stack.gcs_objects(), stack.stored_secrets()


def refused(stack: ApiStack, body: dict[str, Any], caller: str | None, field: str) -> str:
    """Submit, expect 422 naming `field` with nothing created; return the message."""
    before = snapshot(stack)

    answer = stack.submit(body, caller=caller)

    assert answer.status_code == 422, answer.get_json()
    error = answer.get_json()["error"]
    assert error["field"] == field
    assert snapshot(stack) == before  # no record, config or secret left behind
    return str(error["message"])


def accepted(stack: ApiStack, body: dict[str, Any], caller: str | None) -> str:
    answer = stack.submit(body, caller=caller)
    assert answer.status_code == 202, answer.get_json()
    return str(answer.get_json()["job_id"])


# Base models ------------------------------------------------------------------------------


def test_another_owners_merged_model_is_refused_and_nothing_is_created(stack: ApiStack) -> None:
    victim = stack.make_job("bobs-job", owner=BOB)
    merged = stack.settings.layout.merged_prefix(victim.job_id)
    stack.upload(f"{merged}config.json", b'{"model_type": "gemma3_text"}')
    stack.upload(f"{merged}model.safetensors", b"bobs weights")

    message = refused(stack, request_with_model(merged), ALICE, "training_config.base_model_id")

    assert f"gs://{stack.settings.models_bucket}/base_models/" in message
    assert "tuning models upload" in message
    assert stack.job_ids() == ["bobs-job"]


@pytest.mark.parametrize("prefix", ["trained_adapters", "checkpoints", "gguf_models"])
def test_other_job_outputs_are_refused(stack: ApiStack, prefix: str) -> None:
    model = f"gs://{stack.settings.models_bucket}/{prefix}/bobs-job/"

    refused(stack, request_with_model(model), ALICE, "training_config.base_model_id")


def test_a_lookalike_of_base_models_is_refused(stack: ApiStack) -> None:
    model = f"gs://{stack.settings.models_bucket}/base_models_evil/m/"

    refused(stack, request_with_model(model), ALICE, "training_config.base_model_id")


def test_a_model_under_base_models_is_accepted(stack: ApiStack) -> None:
    model = f"gs://{stack.settings.models_bucket}/base_models/gemma-3-1b-it/"

    job_id = accepted(stack, request_with_model(model), ALICE)

    assert stack.services.jobs.get(job_id).base_model_id == model


def test_a_listed_operator_location_is_accepted(stack: ApiStack) -> None:
    model = f"gs://shared-{stack.unique}/gemma/gemma-3-4b-it/"

    job_id = accepted(stack, request_with_model(model), ALICE)

    assert stack.services.jobs.get(job_id).owner == ALICE
    refused(
        stack,
        request_with_model(f"gs://shared-{stack.unique}/other/m/"),
        ALICE,
        "training_config.base_model_id",
    )


# Secrets ----------------------------------------------------------------------------------


def test_another_jobs_per_job_secret_is_refused(stack: ApiStack) -> None:
    victim = accepted(stack, seed_request(), BOB)
    reference = stack.services.jobs.get(victim).secret_references["hf_token"]

    message = refused(stack, request_with_secret(reference), ALICE, "hf_token_secret")

    assert seed_request()["hf_token"] not in message


def test_another_jobs_wandb_secret_is_refused_in_its_own_field(stack: ApiStack) -> None:
    victim = accepted(stack, seed_request(), BOB)
    reference = stack.services.jobs.get(victim).secret_references["wandb_api_key"]
    body = seed_request()
    wandb = body["training_config"]["wandb_config"]
    del wandb["api_key"]
    wandb["api_key_secret"] = reference

    refused(stack, body, ALICE, "training_config.wandb_config.api_key_secret")


def test_an_unmarked_secret_is_refused(stack: ApiStack) -> None:
    reference = user_secrets(stack).create_user_secret("alices-plain", "hf_alice_value")

    message = refused(stack, request_with_secret(reference), ALICE, "hf_token_secret")

    assert f"--update-annotations={USABLE_BY_ANNOTATION}=" in message
    assert "hf_alice_value" not in message


def test_a_secret_marked_for_the_owner_makes_a_job_and_is_refused_to_others(
    stack: ApiStack,
) -> None:
    reference = user_secrets(stack).create_user_secret(
        "alices-hf", "hf_alice_value", owners=[ALICE]
    )

    job_id = accepted(stack, request_with_secret(reference), ALICE)
    message = refused(stack, request_with_secret(reference), BOB, "hf_token_secret")
    anonymous = refused(stack, request_with_secret(reference), None, "hf_token_secret")

    job = stack.services.jobs.get(job_id)
    assert job.owner == ALICE and job.secret_references["hf_token"] == reference
    assert ALICE not in message and ALICE not in anonymous  # nothing about whom it is shared with
    missing = refused(
        stack,
        request_with_secret(reference.replace("alices-hf", "never-made")),
        BOB,
        "hf_token_secret",
    )
    assert missing.replace("never-made", "alices-hf") == message


def test_a_secret_marked_for_every_caller_serves_an_anonymous_caller(stack: ApiStack) -> None:
    reference = user_secrets(stack).create_user_secret("team-hf", "hf_team_value", owners=["*"])

    job_id = accepted(stack, request_with_secret(reference), None)

    assert stack.services.jobs.get(job_id).secret_references["hf_token"] == reference


def test_a_replayed_key_never_hands_over_another_callers_job(stack: ApiStack) -> None:
    """Job ids hash owner and key; were they ever to meet, the replay is refused, not served."""
    from tuning.jobs import new_job_record
    from tuning.spec import parse_train_request
    from tuning.submission import job_id_for

    body = seed_request()
    request = parse_train_request(body)
    colliding = job_id_for(request, owner=ALICE, idempotency_key="k-collide")
    bobs = new_job_record(
        request, job_id=colliding, owner=BOB, config_uri=None, secret_references={}
    )
    stack.services.jobs.create(bobs)

    answer = stack.submit(body, caller=ALICE, key="k-collide")

    assert answer.status_code == 409
    assert answer.get_json()["error"]["field"] == "Idempotency-Key"
    assert BOB not in answer.get_data(as_text=True)
    assert stack.services.jobs.get(colliding).owner == BOB
