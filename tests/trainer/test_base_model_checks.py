"""The trainer's own checks of a job's base model: where it may come from, and its config.json.

Each ends the job once as a user error (exit 0, one `failed`), because every retry would
fail the same way; the location check comes before anything of the model is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.harness import TrainerStack, base_request, colour_rows, to_jsonl
from trainer.errors import UserError
from trainer.main import main
from trainer.modeling import fetch_base_model
from tuning.events import EventType, FailedEvent
from tuning.gcp.storage import GcsStore
from tuning.jobs import ErrorType, Placement
from tuning.model_catalog import catalog_config
from tuning.services import Services
from tuning.tenancy import BaseModelLocations


class RecordingStore(GcsStore):
    """The emulator-backed store, noting every URI the trainer reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def download_bytes(self, uri: str) -> bytes:
        self.reads.append(uri)
        return super().download_bytes(uri)

    def download_json(self, uri: str) -> Any:
        self.reads.append(uri)
        return super().download_json(uri)

    def download_dir(self, prefix_uri: str, local_dir: Path | str) -> list[Path]:
        self.reads.append(prefix_uri)
        return super().download_dir(prefix_uri, local_dir)

    def total_size(self, prefix_uri: str) -> int:
        self.reads.append(prefix_uri)
        return super().total_size(prefix_uri)

    def list(self, prefix_uri: str) -> list[str]:
        self.reads.append(prefix_uri)
        return super().list(prefix_uri)


def submit_with_model(stack: TrainerStack, model_uri: str) -> str:
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl(colour_rows(4))})
    request = base_request()
    request["processed_dataset_id"] = "colours"
    request["training_config"]["base_model_id"] = model_uri
    # TrainerStack.submit writes the record as submit would, without submit's checks: a
    # record that names anything, as if written by something else with access to the store.
    return stack.submit(request)


def run_once(stack: TrainerStack, job_id: str, storage: GcsStore | None = None) -> int:
    services = Services(
        stack.settings(job_id), secrets=stack.secrets, storage=storage or stack.storage
    )
    return main(settings=stack.settings(job_id), services=services)


def only_failure(stack: TrainerStack, job_id: str) -> FailedEvent:
    events = stack.pull_events(job_id)
    types = [e.type for e in events]
    assert set(types) == {EventType.PREPARING, EventType.FAILED}  # never training
    assert types[-1] is EventType.FAILED and types.count(EventType.FAILED) == 1
    failed = events[-1]
    assert isinstance(failed, FailedEvent)
    assert failed.payload.error.type is ErrorType.USER
    return failed


def test_another_jobs_merged_model_fails_once_before_any_of_it_is_read(
    stack: TrainerStack,
) -> None:
    victim = f"gs://{stack.models_bucket}/merged_models/victim-job/"
    stack.storage.upload_bytes(f"{victim}config.json", b'{"model_type": "gemma3_text"}')
    stack.storage.upload_bytes(f"{victim}model.safetensors", b"the victim's weights")
    job_id = submit_with_model(stack, victim)
    storage = RecordingStore()

    code = run_once(stack, job_id, storage)

    assert code == 0  # no retry: the record names the same model every time
    failed = only_failure(stack, job_id)
    assert "training_config.base_model_id" in failed.payload.error.message
    assert "merged_models" not in " ".join(storage.reads)
    assert storage.reads  # the job's config and dataset were read, so the recording works
    assert not (stack.work_dir / job_id / "base").exists()


@pytest.mark.parametrize("model", ["gs://{bucket}", "gs://{bucket}/"])
def test_a_bucket_without_an_object_path_is_refused_before_any_read(
    stack: TrainerStack, tmp_path: Path, model: str
) -> None:
    storage = RecordingStore()
    locations = BaseModelLocations.from_settings(stack.settings("any-job"))

    with pytest.raises(UserError) as raised:
        fetch_base_model(
            model.format(bucket=stack.models_bucket),
            storage=storage,
            directory=tmp_path / "base",
            token=None,
            locations=locations,
        )

    assert "without an object path" in raised.value.message
    assert storage.reads == []


def test_a_stored_config_naming_a_bare_bucket_fails_once_as_a_user_error(
    stack: TrainerStack,
) -> None:
    job_id = submit_with_model(stack, f"gs://{stack.models_bucket}/base_models/x/")
    config_uri = stack.settings(job_id).layout.config_uri(job_id)
    config = stack.storage.download_json(config_uri)
    config["training_config"]["base_model_id"] = f"gs://{stack.models_bucket}"
    stack.storage.upload_json(config_uri, config)

    code = run_once(stack, job_id)

    assert code == 0
    (failed,) = stack.pull_events(job_id)  # refused with the config, before `preparing`
    assert isinstance(failed, FailedEvent) and failed.payload.error.type is ErrorType.USER
    assert "training_config.base_model_id" in failed.payload.error.message


def test_a_config_json_that_is_not_json_fails_once_as_a_user_error(stack: TrainerStack) -> None:
    model = f"gs://{stack.models_bucket}/base_models/broken/"
    stack.storage.upload_bytes(f"{model}config.json", b"{not json")
    job_id = submit_with_model(stack, model)

    code = run_once(stack, job_id)

    assert code == 0  # before: a JSONDecodeError, retried by Cloud Run to the last attempt
    failed = only_failure(stack, job_id)
    assert failed.attempt == 0
    assert "config.json is not valid JSON" in failed.payload.error.message


def test_a_config_json_that_is_not_utf8_fails_once_as_a_user_error(stack: TrainerStack) -> None:
    model = f"gs://{stack.models_bucket}/base_models/binary/"
    stack.storage.upload_bytes(f"{model}config.json", b"\xff\xfe\x00garbage")
    job_id = submit_with_model(stack, model)

    assert run_once(stack, job_id) == 0
    assert "not valid JSON" in only_failure(stack, job_id).payload.error.message


def test_a_missing_config_json_fails_once_as_a_user_error(stack: TrainerStack) -> None:
    model = f"gs://{stack.models_bucket}/base_models/weights-only/"
    stack.storage.upload_bytes(f"{model}model.safetensors", b"weights without a config")
    job_id = submit_with_model(stack, model)

    assert run_once(stack, job_id) == 0
    failed = only_failure(stack, job_id)
    assert failed.payload.error.code == "model_not_found"
    assert "no config.json" in failed.payload.error.message


def test_a_listed_location_is_read(stack: TrainerStack, tiny_gemma3: Path, tmp_path: Path) -> None:
    shared = f"gs://{stack.data_bucket}/shared-models/"
    stack.storage.upload_dir(tiny_gemma3, f"{shared}tiny/")
    environ = {**stack.environ("any-job"), "ALLOWED_BASE_MODEL_LOCATIONS": shared}
    from tuning.settings import TrainerSettings

    locations = BaseModelLocations.from_settings(TrainerSettings.from_env(environ))

    directory = fetch_base_model(
        f"{shared}tiny",  # without the trailing '/': still read as the folder
        storage=stack.storage,
        directory=tmp_path / "base",
        token=None,
        locations=locations,
    )

    assert (directory / "config.json").is_file()
    assert {p.name for p in directory.iterdir()} == {p.name for p in tiny_gemma3.iterdir()}


def test_a_job_submit_could_not_estimate_fails_before_its_weights_when_its_tier_is_too_small(
    stack: TrainerStack,
) -> None:
    # A fine-tune of Gemma 3 27B under a name the catalog does not know: submit placed it
    # on the smallest tier without an estimate, and the trainer estimates from config.json.
    model = f"gs://{stack.models_bucket}/base_models/someones-27b/"
    config = json.dumps(catalog_config("google/gemma-3-27b-it")).encode()
    stack.storage.upload_bytes(f"{model}config.json", config)
    stack.storage.upload_bytes(f"{model}model.safetensors", b"weights that must not be fetched")
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl(colour_rows(4))})
    request = base_request()
    request["processed_dataset_id"] = "colours"
    request["training_config"]["base_model_id"] = model  # LoRA: about 59 GiB per GPU
    l4 = Placement(tier="l4", gpu_type="nvidia-l4", gpu_memory_bytes=int(22.4 * 1024**3))
    job_id = stack.submit(request, placement=l4)

    code = run_once(stack, job_id)

    assert code == 0  # no retry: the same tier would not hold it next time
    failed = only_failure(stack, job_id)
    assert failed.payload.error.code == "out_of_memory"
    assert "tier l4 (1 x nvidia-l4) holds 22.4 GiB" in failed.payload.error.message
    assert "training_config.compute.tier" in failed.payload.error.message
    fetched = [path.name for path in (stack.work_dir / job_id).rglob("*")]
    assert "model.safetensors" not in fetched
