"""What a request may name: base model locations and shared secrets (tuning/tenancy.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tuning.errors import InvalidRequestError
from tuning.gcp.secrets import LocalSecretStore
from tuning.settings import ServiceSettings, SettingsError
from tuning.spec import parse_train_request
from tuning.tenancy import (
    BASE_MODEL_FIELD,
    EVERY_CALLER,
    HF_TOKEN_SECRET_FIELD,
    USABLE_BY_ANNOTATION,
    WANDB_KEY_SECRET_FIELD,
    BaseModelLocations,
    check_base_model,
    check_request,
    may_use,
    parse_location,
)

ENVIRONMENT = {
    "PROJECT_ID": "proj-a",
    "GCS_CONFIG_BUCKET_NAME": "cfg-bucket",
    "GCS_DATA_BUCKET_NAME": "data-bucket",
    "GCS_MODELS_BUCKET_NAME": "models-bucket",
}


def settings(locations: str = "") -> ServiceSettings:
    return ServiceSettings.from_env({**ENVIRONMENT, "ALLOWED_BASE_MODEL_LOCATIONS": locations})


def refusal(base_model_id: str, locations: str = "") -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as raised:
        check_base_model(base_model_id, settings(locations))
    return raised.value


# Base models ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "gs://models-bucket/base_models/gemma-3-1b/",
        "gs://models-bucket/base_models/team/gemma-3-1b/",
        "gs://models-bucket/base_models/gemma-3-1b",  # the trainer reads it as a folder
        "google/gemma-3-1b-it",  # Hub ids are not storage paths
        "gemma-3-1b-it",
    ],
)
def test_base_models_prefix_and_hub_ids_are_accepted(model: str) -> None:
    check_base_model(model, settings())


@pytest.mark.parametrize(
    "model",
    [
        "gs://models-bucket/base_models_evil/x/",  # shares a prefix string, not a segment
        "gs://models-bucket/base_modelsx/",
        "gs://models-bucket/base/x/",
        "gs://other-bucket/base_models/x/",
        "gs://data-bucket/processed_datasets/ds/",
        "gs://models-bucket/base_models/../merged_models/job/",
        "gs://models-bucket/base_models//x/",
        "gs://models-bucket/base_models/./x/",
    ],
)
def test_anything_else_is_refused_naming_the_field_and_the_way_in(model: str) -> None:
    error = refusal(model)

    assert error.http_status == 422
    assert error.field == BASE_MODEL_FIELD
    assert "gs://models-bucket/base_models/" in error.message
    assert "tuning models upload" in error.message
    assert "ALLOWED_BASE_MODEL_LOCATIONS" in error.message


@pytest.mark.parametrize(
    "model",
    [
        "gs://models-bucket/trained_adapters/victim-job/",
        "gs://models-bucket/merged_models/victim-job/",
        "gs://models-bucket/gguf_models/victim-job/",
        "gs://models-bucket/checkpoints/victim-job/checkpoint-4/",
        "gs://models-bucket/evaluations/victim-job/",  # its samples (review finding F6)
        "gs://models-bucket/merged_models/",
        "gs://cfg-bucket/configs/",
        "gs://cfg-bucket/configs/victim-job.json/",
    ],
)
def test_job_outputs_stay_refused_even_when_the_operator_lists_their_buckets(model: str) -> None:
    error = refusal(model, "gs://models-bucket/,gs://cfg-bucket/")

    assert error.field == BASE_MODEL_FIELD
    assert "outputs" in error.message


def test_listed_locations_are_matched_segment_by_segment() -> None:
    listed = "gs://shared-models/gemma/, gs://whole-bucket/"

    check_base_model("gs://shared-models/gemma/gemma-3-4b-it/", settings(listed))
    check_base_model("gs://shared-models/gemma/", settings(listed))  # the listed folder itself
    check_base_model("gs://whole-bucket/any/model/", settings(listed))
    check_base_model("gs://models-bucket/base_models/m/", settings(listed))  # still allowed
    for model in (
        "gs://shared-models/gemma2/x/",
        "gs://shared-models/x/",
        "gs://shared-modelsx/g/",
    ):
        assert refusal(model, listed).field == BASE_MODEL_FIELD
    error = refusal("gs://elsewhere/m/", listed)
    assert "gs://shared-models/gemma/" in error.message and "gs://whole-bucket/" in error.message


@pytest.mark.parametrize("model", ["gs://whole-bucket", "gs://whole-bucket/"])
def test_a_bucket_without_an_object_path_is_refused_even_when_listed(model: str) -> None:
    error = refusal(model, "gs://whole-bucket/")

    assert error.field == BASE_MODEL_FIELD
    assert "without an object path" in error.message


@pytest.mark.parametrize("model", ["gs://bucket-name", "gs://bucket-name/"])
def test_the_request_model_refuses_a_bucket_without_an_object_path(model: str) -> None:
    data = {"processed_dataset_id": "ds", "training_config": {"base_model_id": model}}

    with pytest.raises(InvalidRequestError) as raised:
        parse_train_request(data)

    assert raised.value.field == "training_config.base_model_id"
    assert "gs://bucket/prefix/" in raised.value.message


def test_locations_know_the_deployment_buckets() -> None:
    locations = BaseModelLocations.from_settings(settings("gs://shared-models/"))

    assert [str(where) for where in locations.allowed] == [
        "gs://models-bucket/base_models/",
        "gs://shared-models/",
    ]
    assert [str(where) for where in locations.refused] == [
        "gs://models-bucket/trained_adapters/",
        "gs://models-bucket/merged_models/",
        "gs://models-bucket/gguf_models/",
        "gs://models-bucket/checkpoints/",
        "gs://models-bucket/evaluations/",
        "gs://cfg-bucket/configs/",
        "gs://models-bucket/base_models/hub/",
    ]


@pytest.mark.parametrize(
    "model",
    [
        "gs://models-bucket/base_models/hub/google/gemma-3-1b-it/" + "a" * 40 + "/stage-1/",
        "gs://models-bucket/base_models/hub/",
        "gs://models-bucket/base_models/",  # would hold the staged copies too
    ],
)
def test_hub_copies_the_trainer_staged_are_never_a_base_model(model: str) -> None:
    locations = BaseModelLocations.from_settings(settings())

    with pytest.raises(InvalidRequestError) as raised:
        locations.check(model)

    assert raised.value.field == "training_config.base_model_id"
    assert "base_models/hub/" in raised.value.message


@pytest.mark.parametrize(
    "bad",
    ["gs://shared-models", "gs://shared-models/gemma", "s3://bucket/", "gs://b/", "gs://bucket//"],
)
def test_the_setting_is_validated_at_start_up(bad: str) -> None:
    with pytest.raises(SettingsError) as raised:
        settings(f"gs://fine-bucket/, {bad}")

    assert "ALLOWED_BASE_MODEL_LOCATIONS" in raised.value.message
    assert bad in raised.value.message


def test_parse_location_refuses_dot_segments() -> None:
    with pytest.raises(ValueError, match="'\\.\\.' segment"):
        parse_location("gs://bucket-name/a/../")


# Secrets ----------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> LocalSecretStore:
    return LocalSecretStore(tmp_path / "secrets.json", project="proj-a")


def request_naming(hf: str | None = None, wandb: str | None = None) -> Any:
    data: dict[str, Any] = {
        "processed_dataset_id": "ds",
        "training_config": {"base_model_id": "google/gemma-3-1b-it"},
    }
    if hf is not None:
        data["hf_token_secret"] = hf
    if wandb is not None:
        data["training_config"]["wandb_config"] = {"project": "p", "api_key_secret": wandb}
    return parse_train_request(data)


def secret_refusal(request: Any, owner: str | None, store: LocalSecretStore) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as raised:
        check_request(request, owner=owner, settings=settings(), secrets=store)
    return raised.value


def test_a_secret_marked_for_the_owner_or_for_everyone_is_accepted(store: LocalSecretStore) -> None:
    mine = store.create_user_secret("alice-hf", "hf_value", owners=["alice@example.com"])
    shared = store.create_user_secret("team-wandb", "wandb_value", owners=[EVERY_CALLER])

    check_request(
        request_naming(hf=mine, wandb=shared),
        owner="alice@example.com",
        settings=settings(),
        secrets=store,
    )
    check_request(request_naming(wandb=shared), owner=None, settings=settings(), secrets=store)


def test_missing_unmarked_and_others_secrets_answer_alike(store: LocalSecretStore) -> None:
    unmarked = store.create_user_secret("unmarked", "v1")
    bobs = store.create_user_secret("bobs", "v2", owners=["bob@example.com", "carol@example.com"])
    missing = "projects/proj-a/secrets/never-created/versions/1"
    other_project = "projects/proj-b/secrets/bobs/versions/1"

    errors = [
        secret_refusal(request_naming(hf=reference), "alice@example.com", store)
        for reference in (unmarked, bobs, missing, other_project)
    ]

    assert {error.field for error in errors} == {HF_TOKEN_SECRET_FIELD}
    # Apart from the reference the caller sent, one message: nothing about existence or owners.
    texts = {
        error.message.replace(ref, "REF")
        for error, ref in zip(errors, (unmarked, bobs, missing, other_project), strict=True)
    }
    assert len(texts) == 1
    text = texts.pop()
    assert "bob@example.com" not in text and "carol" not in text
    assert f"--update-annotations={USABLE_BY_ANNOTATION}=" in text


def test_an_owner_less_request_needs_a_secret_marked_for_every_caller(
    store: LocalSecretStore,
) -> None:
    alices = store.create_user_secret("alices", "v", owners=["alice@example.com"])

    error = secret_refusal(request_naming(wandb=alices), None, store)

    assert error.field == WANDB_KEY_SECRET_FIELD


@pytest.mark.parametrize("project", ["proj-a", "any-other-project"])
def test_per_job_secrets_are_never_accepted_even_if_marked(
    store: LocalSecretStore, project: str
) -> None:
    reference = store.put("victim-job", "hf_token", "victims_token")
    # Even an annotation on a per-job secret (there is none; this forges one) changes nothing.
    data = store._read()
    data["secrets"]["tuning-victim-job-hf_token"]["annotations"] = {USABLE_BY_ANNOTATION: "*"}
    store._write(data)

    error = secret_refusal(
        request_naming(hf=reference.replace("proj-a", project)), "alice@example.com", store
    )

    assert error.field == HF_TOKEN_SECRET_FIELD
    assert "victims_token" not in error.message


@pytest.mark.parametrize(
    ("value", "owner", "allowed"),
    [
        ("alice@example.com bob@example.com", "bob@example.com", True),
        ("alice@example.com,bob@example.com", "bob@example.com", True),
        ("alice@example.com", "alice@example.co", False),
        ("alice@example.com", "alice@example.com.evil", False),
        ("*", None, True),
        ("*", "anyone", True),
        ("", "alice@example.com", False),
        ("alice@example.com", None, False),
    ],
)
def test_the_mark_names_owners_exactly(value: str, owner: str | None, allowed: bool) -> None:
    assert may_use({USABLE_BY_ANNOTATION: value}, owner) is allowed


def test_other_annotations_are_no_mark() -> None:
    assert not may_use({"owner": "alice@example.com", "usable-by": "*"}, "alice@example.com")


def test_every_folder_a_job_writes_is_refused_as_a_base_model() -> None:
    """A prefix added to a job's outputs is refused without being listed anywhere else."""
    layout = settings("gs://models-bucket/").layout
    for prefix in layout.job_prefixes("victim-job"):
        assert refusal(prefix, "gs://models-bucket/").field == BASE_MODEL_FIELD, prefix
