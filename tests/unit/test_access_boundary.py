"""A job's storage access boundary: the rules built from its record, and what they become."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.auth import downscoped
from google.oauth2 import credentials as oauth2_credentials

from tuning.gcp.access_boundary import (
    MAX_RULES,
    READ_ROLE,
    READ_WRITE_ROLE,
    Access,
    AccessBoundaryError,
    Operation,
    StorageBoundary,
    StorageRule,
    job_storage_boundary,
)
from tuning.gcp.storage import GcsStore, LocalKeySigner, narrowed_store
from tuning.jobs import new_job_record
from tuning.layout import StorageLayout
from tuning.settings import TrainerSettings
from tuning.spec import TrainRequest
from tuning.tenancy import BaseModelLocations

REQUEST = Path(__file__).parent.parent / "fixtures" / "trainer" / "lora_request.json"
LAYOUT = StorageLayout(data_bucket="data-b", config_bucket="config-b", models_bucket="models-b")
JOB = "job-1"
MODEL = "gs://models-b/base_models/tiny/"


def record(*, base_model: str = MODEL, modality: str = "text"):  # type: ignore[no-untyped-def]
    data = json.loads(REQUEST.read_text())
    data["processed_dataset_id"] = "colours"
    data["training_config"].update(base_model_id=base_model, modality=modality)
    request = TrainRequest.model_validate(data)
    return new_job_record(
        request, job_id=JOB, owner=None, config_uri=LAYOUT.config_uri(JOB), secret_references={}
    )


def locations(*allowed: str) -> BaseModelLocations:
    settings = TrainerSettings.from_env(
        {
            "PROJECT_ID": "p",
            "GCS_DATA_BUCKET_NAME": "data-b",
            "GCS_CONFIG_BUCKET_NAME": "config-b",
            "GCS_MODELS_BUCKET_NAME": "models-b",
            "JOB_ID": JOB,
            "ALLOWED_BASE_MODEL_LOCATIONS": ",".join(allowed),
        }
    )
    return BaseModelLocations.from_settings(settings)


def test_a_text_job_may_read_its_config_dataset_and_model_and_write_its_outputs() -> None:
    boundary = job_storage_boundary(record(), LAYOUT, base_model_locations=locations())

    assert set(boundary.rules) == {
        StorageRule("config-b", "configs/job-1.json", exact=True),
        StorageRule("data-b", "processed_datasets/colours/"),
        StorageRule("models-b", "base_models/tiny/"),
        *(
            StorageRule("models-b", f"{prefix}/job-1/", access=Access.READ_WRITE)
            for prefix in (
                "trained_adapters",
                "merged_models",
                "gguf_models",
                "checkpoints",
                "evaluations",
            )
        ),
    }


@pytest.mark.parametrize(
    ("operation", "uri", "allowed"),
    [
        (Operation.READ, "gs://config-b/configs/job-1.json", True),
        (Operation.READ, "gs://config-b/configs/job-10.json", False),
        (Operation.WRITE, "gs://config-b/configs/job-1.json", False),
        (Operation.LIST, "gs://config-b/configs/", False),
        (Operation.LIST, "gs://data-b/processed_datasets/colours/", True),
        (Operation.READ, "gs://data-b/processed_datasets/colours/train.jsonl", True),
        (Operation.LIST, "gs://data-b/processed_datasets/", False),
        (Operation.LIST, "gs://data-b/processed_datasets/colours-2/", False),
        (Operation.READ, "gs://data-b/processed_datasets/other/train.jsonl", False),
        (Operation.READ, "gs://data-b/images/red.png", False),  # a text job reads no images
        (Operation.WRITE, "gs://data-b/processed_datasets/colours/train.jsonl", False),
        (Operation.LIST, "gs://models-b/base_models/tiny/", True),
        (Operation.READ, "gs://models-b/base_models/tiny/model.safetensors", True),
        (Operation.READ, "gs://models-b/base_models/tiny-2/model.safetensors", False),
        (Operation.WRITE, "gs://models-b/base_models/tiny/model.safetensors", False),
        (Operation.WRITE, "gs://models-b/checkpoints/job-1/checkpoint-6/a.bin", True),
        (Operation.DELETE, "gs://models-b/checkpoints/job-1/checkpoint-6/", True),
        (Operation.LIST, "gs://models-b/checkpoints/job-1/", True),
        (Operation.DELETE, "gs://models-b/checkpoints/job-10/checkpoint-6/a.bin", False),
        (Operation.READ, "gs://models-b/merged_models/victim/model.safetensors", False),
        (Operation.WRITE, "gs://models-b/gguf_models/job-1/model-q8_0.gguf", True),
        (Operation.WRITE, "gs://models-b/evaluations/job-1/samples.jsonl", True),
        (Operation.READ, "gs://models-b/evaluations/job-10/samples.jsonl", False),
        (Operation.READ, "gs://other-bucket/processed_datasets/colours/train.jsonl", False),
    ],
)
def test_the_boundary_allows_the_jobs_paths_only(
    operation: Operation, uri: str, allowed: bool
) -> None:
    boundary = job_storage_boundary(record(), LAYOUT, base_model_locations=locations())

    assert boundary.allows(operation, uri) is allowed
    if not allowed:
        with pytest.raises(AccessBoundaryError, match="outside this job's storage access"):
            boundary.check(operation, uri)


def test_a_vision_job_reads_images_anywhere_in_the_data_bucket_without_listing_it() -> None:
    boundary = job_storage_boundary(record(modality="vision"), LAYOUT)

    assert boundary.allows(Operation.READ, "gs://data-b/images/red.png")
    assert not boundary.allows(Operation.LIST, "gs://data-b/")
    assert not boundary.allows(Operation.LIST, "gs://data-b/images/")
    assert not boundary.allows(Operation.WRITE, "gs://data-b/images/red.png")
    assert not boundary.allows(Operation.READ, "gs://config-b/images/red.png")


def test_a_base_model_outside_the_allowed_locations_is_left_out() -> None:
    victim = "gs://models-b/merged_models/victim/"

    boundary = job_storage_boundary(
        record(base_model=victim), LAYOUT, base_model_locations=locations()
    )

    assert not boundary.allows(Operation.READ, f"{victim}config.json")
    assert not boundary.allows(Operation.LIST, victim)


def test_a_base_model_in_an_allowed_bucket_and_a_hub_model() -> None:
    shared = "gs://shared-models/gemma"

    in_bucket = job_storage_boundary(
        record(base_model=shared), LAYOUT, base_model_locations=locations("gs://shared-models/")
    )
    hub = job_storage_boundary(record(base_model="google/gemma-3-1b-it"), LAYOUT)

    assert in_bucket.allows(Operation.LIST, "gs://shared-models/gemma/")
    assert not in_bucket.allows(Operation.READ, "gs://shared-models/gemma2/config.json")
    assert len(hub.rules) == len(in_bucket.rules) - 1


def test_the_credential_access_boundary_has_one_rule_per_bucket_and_access() -> None:
    boundary = job_storage_boundary(record(modality="vision"), LAYOUT)

    built = boundary.to_credential_access_boundary()

    rules = {
        (rule.available_resource, tuple(rule.available_permissions)): (
            rule.availability_condition.expression
        )
        for rule in built.rules
    }
    assert rules == {
        ("//storage.googleapis.com/projects/_/buckets/config-b", (READ_ROLE,)): (
            "(resource.name == 'projects/_/buckets/config-b/objects/configs/job-1.json')"
        ),
        ("//storage.googleapis.com/projects/_/buckets/data-b", (READ_ROLE,)): (
            "(resource.name.startsWith('projects/_/buckets/data-b/objects/processed_datasets/"
            "colours/') || api.getAttribute('storage.googleapis.com/objectListPrefix', '')"
            ".startsWith('processed_datasets/colours/'))"
            " || (resource.name.startsWith('projects/_/buckets/data-b/objects/'))"
        ),
        ("//storage.googleapis.com/projects/_/buckets/models-b", (READ_ROLE,)): (
            "(resource.name.startsWith('projects/_/buckets/models-b/objects/base_models/tiny/')"
            " || api.getAttribute('storage.googleapis.com/objectListPrefix', '')"
            ".startsWith('base_models/tiny/'))"
        ),
        ("//storage.googleapis.com/projects/_/buckets/models-b", (READ_WRITE_ROLE,)): " || ".join(
            f"(resource.name.startsWith('projects/_/buckets/models-b/objects/{prefix}/job-1/')"
            " || api.getAttribute('storage.googleapis.com/objectListPrefix', '')"
            f".startsWith('{prefix}/job-1/'))"
            for prefix in (
                "trained_adapters",
                "merged_models",
                "gguf_models",
                "checkpoints",
                "evaluations",
            )
        ),
    }
    assert len(built.rules) <= MAX_RULES
    assert built.to_json()["accessBoundary"]["accessBoundaryRules"][0]["availablePermissions"]


def test_quotes_in_a_name_cannot_end_the_cel_string() -> None:
    rule = StorageRule("models-b", "base_models/it's\\odd/")

    assert rule.expression().startswith(
        "resource.name.startsWith('projects/_/buckets/models-b/objects/base_models/it\\'s\\\\odd/')"
    )


def test_more_buckets_than_google_allows_are_refused() -> None:
    rules = tuple(StorageRule(f"bucket-{index}", "a/") for index in range(MAX_RULES + 1))

    with pytest.raises(Exception, match="10"):
        StorageBoundary(rules).to_credential_access_boundary()


def test_production_builds_the_client_over_downscoped_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    boundary = job_storage_boundary(record(), LAYOUT)
    source = oauth2_credentials.Credentials(token="source-token")
    base = GcsStore(
        client=object(),  # type: ignore[arg-type]  # replaced by the downscoped client
        signer=LocalKeySigner(tmp_path / "key.json", endpoint="http://unused"),
    )

    store = narrowed_store(base, boundary, project="p", source_credentials=source)

    credentials = store.client._credentials
    assert isinstance(credentials, downscoped.Credentials)
    assert credentials._source_credentials is source
    assert (
        credentials._credential_access_boundary.to_json()
        == boundary.to_credential_access_boundary().to_json()
    )
    assert store.boundary == boundary and base.boundary is None  # enforced locally as well
    with pytest.raises(AccessBoundaryError):
        store.download_bytes("gs://data-b/processed_datasets/other/train.jsonl")


def test_against_the_emulator_the_store_itself_is_the_boundary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    boundary = job_storage_boundary(record(), LAYOUT)
    base = GcsStore(signer=LocalKeySigner(tmp_path / "key.json"))

    store = narrowed_store(base, boundary, project="p")

    assert store.client is base.client and store.boundary == boundary
