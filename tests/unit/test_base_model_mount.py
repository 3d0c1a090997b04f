"""Where the trainer reads a base model from (trainer/base_model.py): the models volume's path
mapping, the settings that configure it, and the fall-back to a download."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from trainer import base_model
from trainer.base_model import ModelsMount, ModelsMountMissing, obtain_base_model
from trainer.errors import ModelNotFoundError, UserError
from trainer.hub_staging import staging_rule
from tuning.gcp.access_boundary import Operation, StorageBoundary
from tuning.gcp.storage import GcsStore
from tuning.settings import SettingsError, TrainerSettings
from tuning.tenancy import BaseModelLocations

ENVIRONMENT = {
    "PROJECT_ID": "proj",
    "GCS_CONFIG_BUCKET_NAME": "cfg-bucket",
    "GCS_DATA_BUCKET_NAME": "data-bucket",
    "GCS_MODELS_BUCKET_NAME": "models-bucket",
    "JOB_ID": "job-1",
}


def settings(**extra: str) -> TrainerSettings:
    return TrainerSettings.from_env({**ENVIRONMENT, **extra})


class NoStorage:
    """A store that must not be touched: reading in place goes through the volume."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store was used ({name}) for a model on the volume")


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every call of today's download (trainer.modeling.fetch_base_model), recorded."""
    calls: list[dict[str, Any]] = []

    def fetch(base_model_id: str, **kwargs: Any) -> Path:
        calls.append({"base_model_id": base_model_id, **kwargs})
        return cast(Path, kwargs["directory"])

    monkeypatch.setattr(base_model, "fetch_base_model", fetch)
    return calls


def obtain(model: str, mount: ModelsMount | None, work_dir: Path, **kwargs: Any) -> Path:
    arguments: dict[str, Any] = {
        "storage": cast(GcsStore, NoStorage()),
        "work_dir": work_dir,
        "token": None,
        "locations": BaseModelLocations.from_settings(settings()),
        "mount": mount,
    }
    arguments.update(kwargs)
    return obtain_base_model(model, **arguments)


def write_model(directory: Path, config: bytes = b'{"model_type": "gemma3_text"}') -> None:
    directory.mkdir(parents=True)
    (directory / "config.json").write_bytes(config)
    (directory / "model.safetensors").write_bytes(b"weights")


# The mapping -------------------------------------------------------------------------------

MOUNT = ModelsMount(path=Path("/mnt/models"), bucket="models-bucket", only_dir="base_models")


@pytest.mark.parametrize(
    ("uri", "local"),
    [
        ("gs://models-bucket/base_models/gemma/", "/mnt/models/gemma"),
        ("gs://models-bucket/base_models/team/gemma", "/mnt/models/team/gemma"),
        ("gs://models-bucket/base_models/hub/google/g/sha/", "/mnt/models/hub/google/g/sha"),
    ],
)
def test_a_folder_the_volume_shows_maps_below_the_mount(uri: str, local: str) -> None:
    assert MOUNT.local_path(uri) == Path(local)


@pytest.mark.parametrize(
    "uri",
    [
        "gs://other-bucket/base_models/gemma/",  # another allowed bucket: downloaded
        "gs://models-bucket/merged_models/job/",  # outside only-dir: the volume hides it
        "gs://models-bucket/base_models2/gemma/",  # a sibling whose name starts the same
        "gs://models-bucket/base_models/",  # the folder itself is no model
        "gs://models-bucket/",
    ],
)
def test_anything_else_is_not_on_the_volume(uri: str) -> None:
    assert MOUNT.local_path(uri) is None


def test_a_volume_of_the_whole_bucket_maps_object_paths_as_they_are() -> None:
    whole = ModelsMount(path=Path("/mnt/models"), bucket="models-bucket")

    assert whole.local_path("gs://models-bucket/base_models/g/") == Path(
        "/mnt/models/base_models/g"
    )


def test_the_settings_configure_the_mount() -> None:
    assert ModelsMount.from_settings(settings()) is None
    assert ModelsMount.from_settings(settings(MODELS_MOUNT_PATH="")) is None
    mount = ModelsMount.from_settings(
        settings(MODELS_MOUNT_PATH="/mnt/models", MODELS_MOUNT_ONLY_DIR="base_models")
    )
    assert mount == MOUNT


@pytest.mark.parametrize(
    "extra",
    [
        {"MODELS_MOUNT_PATH": "mnt/models"},  # relative
        {"MODELS_MOUNT_PATH": "/mnt/models", "MODELS_MOUNT_ONLY_DIR": "base_models/.."},
        {"MODELS_MOUNT_PATH": "/mnt/models", "MODELS_MOUNT_ONLY_DIR": "a//b"},
    ],
)
def test_bad_mount_settings_fail_at_start_naming_the_variable(extra: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="MODELS_MOUNT"):
        settings(**extra)


# Reading in place, and falling back ----------------------------------------------------------


def test_a_gs_model_on_the_volume_is_read_in_place(
    tmp_path: Path, downloads: list[dict[str, Any]]
) -> None:
    mount = ModelsMount(path=tmp_path / "mnt", bucket="models-bucket", only_dir="base_models")
    write_model(tmp_path / "mnt" / "tiny")
    checked: list[dict[str, Any]] = []

    model_dir = obtain(
        "gs://models-bucket/base_models/tiny/",
        mount,
        tmp_path / "work",
        check_config=checked.append,
    )

    assert model_dir == tmp_path / "mnt" / "tiny"
    assert checked == [{"model_type": "gemma3_text"}]
    assert downloads == []
    assert not (tmp_path / "work").exists()  # not a byte of it in the task's memory


def test_without_a_mount_the_model_is_downloaded(
    tmp_path: Path, downloads: list[dict[str, Any]]
) -> None:
    for model in ("gs://models-bucket/base_models/tiny/", "google/gemma-3-1b-it"):
        obtain(model, None, tmp_path / "work")

    assert [call["base_model_id"] for call in downloads] == [
        "gs://models-bucket/base_models/tiny/",
        "google/gemma-3-1b-it",
    ]
    assert all(call["directory"] == tmp_path / "work" / "base" for call in downloads)


def test_a_model_in_another_allowed_bucket_is_downloaded(
    tmp_path: Path, downloads: list[dict[str, Any]]
) -> None:
    mount = ModelsMount(path=tmp_path / "mnt", bucket="models-bucket", only_dir="base_models")
    locations = BaseModelLocations.from_settings(
        settings(ALLOWED_BASE_MODEL_LOCATIONS="gs://shared-models/")
    )

    obtain("gs://shared-models/gemma/", mount, tmp_path / "work", locations=locations)

    assert [call["base_model_id"] for call in downloads] == ["gs://shared-models/gemma/"]


def test_a_hub_model_is_downloaded_when_the_volume_does_not_show_the_staging_folder(
    tmp_path: Path, downloads: list[dict[str, Any]]
) -> None:
    mount = ModelsMount(path=tmp_path / "mnt", bucket="models-bucket", only_dir="base_models/team")

    obtain("google/gemma-3-1b-it", mount, tmp_path / "work")

    assert [call["base_model_id"] for call in downloads] == ["google/gemma-3-1b-it"]


def test_a_refused_location_fails_before_the_volume_is_read(
    tmp_path: Path, downloads: list[dict[str, Any]]
) -> None:
    # A volume of the whole bucket shows other jobs' outputs: the location check guards them.
    mount = ModelsMount(path=tmp_path / "mnt", bucket="models-bucket")
    write_model(tmp_path / "mnt" / "merged_models" / "victim", config=b"{not read")

    with pytest.raises(UserError, match=r"training_config\.base_model_id"):
        obtain("gs://models-bucket/merged_models/victim/", mount, tmp_path / "work")

    assert downloads == []


def test_a_mount_path_without_a_volume_fails_once_as_a_system_error(
    tmp_path: Path, downloads: list[dict[str, Any]]
) -> None:
    mount = ModelsMount(path=tmp_path / "absent", bucket="models-bucket", only_dir="base_models")

    with pytest.raises(ModelsMountMissing, match="MODELS_MOUNT_PATH") as raised:
        obtain("gs://models-bucket/base_models/tiny/", mount, tmp_path / "work")

    assert raised.value.error_type.value == "system"
    assert downloads == []


def test_a_folder_without_config_json_is_not_a_model(
    tmp_path: Path, downloads: list[dict[str, Any]]
) -> None:
    (tmp_path / "mnt" / "empty").mkdir(parents=True)
    mount = ModelsMount(path=tmp_path / "mnt", bucket="models-bucket", only_dir="base_models")

    with pytest.raises(ModelNotFoundError):
        obtain("gs://models-bucket/base_models/empty/", mount, tmp_path / "work")


def test_a_hub_jobs_boundary_reads_its_own_repo_s_staged_copies_only() -> None:
    boundary = StorageBoundary(rules=(staging_rule("models-bucket", "google/gemma-3-1b-it"),))
    mine = "gs://models-bucket/base_models/hub/google/gemma-3-1b-it/" + "a" * 40 + "/"

    assert boundary.allows(Operation.READ, f"{mine}complete.json")
    assert boundary.allows(Operation.LIST, f"{mine}stage-x/")
    # Writing is the stager's, through its own narrower store (review finding F5).
    assert not boundary.allows(Operation.CREATE, f"{mine}complete.json")
    assert not boundary.allows(Operation.DELETE, f"{mine}stage-x/model.safetensors")
    assert not boundary.allows(
        Operation.READ, "gs://models-bucket/base_models/hub/google/gemma-3-1b-it-x/c.json"
    )
    assert not boundary.allows(Operation.READ, "gs://models-bucket/base_models/hub/google/other/")
