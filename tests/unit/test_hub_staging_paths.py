"""Where Hub models are staged in the models bucket, and what a job's storage rule covers."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest

from trainer.hub_staging import stager_rules, staging_prefix, staging_rule
from trainer.storage_access import hub_stager_storage
from tuning.gcp.access_boundary import (
    CREATE_ROLE,
    READ_ROLE,
    READ_WRITE_ROLE,
    Operation,
    StorageBoundary,
)
from tuning.gcp.storage import GcsStore
from tuning.settings import TrainerSettings


def test_a_repo_is_staged_under_its_owner_and_name():
    assert staging_prefix("models", "google/gemma-3-1b-it") == (
        "gs://models/base_models/hub/google/gemma-3-1b-it/"
    )


def test_a_repo_without_an_owner_cannot_cover_an_owners_repos():
    """Review finding F5: `google` alone must not grant the staged copies of google/*."""
    bare = staging_prefix("models", "google")
    rule = staging_rule("models", "google")

    assert bare == "gs://models/base_models/hub/_/google/"
    assert not staging_prefix("models", "google/gemma-3-1b-it").startswith(bare)
    assert rule.name == "base_models/hub/_/google/"


SHA = "a" * 40
FOLDER = "stage-" + "b" * 32
ROOT = f"base_models/hub/google/gemma-3-1b-it/{SHA}/"
# The forms of Google's Credential Access Boundary examples
# (https://cloud.google.com/iam/docs/downscoping-short-lived-credentials), on resource.name.
DOCUMENTED = re.compile(
    r"^\(resource\.name\.startsWith\('[^']*'\)"
    r"( \|\| api\.getAttribute\('storage\.googleapis\.com/objectListPrefix', ''\)"
    r"\.startsWith\('[^']*'\))?\)$"
)


def stager_boundary() -> StorageBoundary:
    repo = "google/gemma-3-1b-it"
    return StorageBoundary(
        rules=(staging_rule("models", repo), *stager_rules("models", repo, SHA, FOLDER))
    )


def test_a_stager_writes_its_own_folder_and_creates_its_commit_s_marker_only():
    """Review finding F5: not the repo's other copies, nor a marker once written."""
    boundary = stager_boundary()
    mine, marker = f"gs://models/{ROOT}{FOLDER}/", f"gs://models/{ROOT}complete.json"
    other = f"gs://models/{ROOT}stage-{'c' * 32}/model.safetensors"

    assert boundary.allows(Operation.WRITE, f"{mine}model.safetensors")
    assert boundary.allows(Operation.DELETE, f"{mine}model.safetensors")
    assert boundary.allows(Operation.CREATE, marker)
    assert boundary.allows(Operation.READ, marker) and boundary.allows(Operation.READ, other)
    assert not boundary.allows(Operation.WRITE, marker)  # no replacing it
    assert not boundary.allows(Operation.DELETE, marker)
    assert not boundary.allows(Operation.WRITE, other)
    assert not boundary.allows(Operation.DELETE, other)
    other_commit = f"gs://models/base_models/hub/google/gemma-3-1b-it/{'d' * 40}/complete.json"
    assert not boundary.allows(Operation.CREATE, other_commit)


def test_the_stager_s_credential_access_boundary_uses_google_s_documented_forms():
    built = stager_boundary().to_credential_access_boundary()

    by_role = {
        tuple(rule.available_permissions): rule.availability_condition.expression
        for rule in built.rules
    }
    assert by_role == {
        (READ_ROLE,): (
            "(resource.name.startsWith('projects/_/buckets/models/objects/base_models/hub/"
            "google/gemma-3-1b-it/') || api.getAttribute('storage.googleapis.com/"
            "objectListPrefix', '').startsWith('base_models/hub/google/gemma-3-1b-it/'))"
        ),
        (READ_WRITE_ROLE,): (
            f"(resource.name.startsWith('projects/_/buckets/models/objects/{ROOT}{FOLDER}/')"
            f" || api.getAttribute('storage.googleapis.com/objectListPrefix', '')"
            f".startsWith('{ROOT}{FOLDER}/'))"
        ),
        (CREATE_ROLE,): (
            f"(resource.name.startsWith('projects/_/buckets/models/objects/{ROOT}complete.json'))"
        ),
    }
    assert CREATE_ROLE == "inRole:roles/storage.objectCreator"
    assert all(DOCUMENTED.match(expression) for expression in by_role.values())


@pytest.mark.parametrize(("sha", "folder"), [("main", FOLDER), (SHA, "stage-x"), (SHA, "../x")])
def test_stager_rules_take_a_commit_and_a_staging_folder_only(sha: str, folder: str):
    with pytest.raises(ValueError):
        stager_rules("models", "google/gemma-3-1b-it", sha, folder)


def test_only_a_job_that_stages_a_hub_model_gets_a_stager_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")  # the store's own checks
    settings = TrainerSettings.from_env(
        {
            "PROJECT_ID": "p",
            "GCS_CONFIG_BUCKET_NAME": "config-b",
            "GCS_DATA_BUCKET_NAME": "data-b",
            "GCS_MODELS_BUCKET_NAME": "models",
            "JOB_ID": "job-1",
            "MODELS_MOUNT_PATH": "/mnt/models",
            "MODELS_MOUNT_ONLY_DIR": "base_models",
        }
    )

    def services(base_model_id: str) -> Any:
        record = SimpleNamespace(base_model_id=base_model_id)
        jobs = SimpleNamespace(find=lambda job_id: record)
        return SimpleNamespace(jobs=jobs, storage=GcsStore(client=object()))  # type: ignore[arg-type]

    stager = hub_stager_storage(settings, services("google/gemma-3-1b-it"))

    assert stager is not None
    store = stager(SHA, FOLDER)
    assert store.boundary == stager_boundary()
    assert hub_stager_storage(settings, services("gs://models/base_models/tiny/")) is None
