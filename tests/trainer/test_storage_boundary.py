"""The trainer's storage narrowed to its job: what its record names, and nothing else.

The job record (Firestore) is what submit checked; the stored config is what the trainer
trains from. When the config names other paths (written by anything else that can write the
config bucket), the boundary built from the record refuses them, as the downscoped token does
in production and the store itself does here.
"""

from __future__ import annotations

from typing import Any

from tests.trainer.harness import TrainerStack, base_request, colour_rows, png, to_jsonl, vision_row
from trainer.main import main
from tuning.events import EventType, FailedEvent, JobEvent
from tuning.gcp.storage import GcsStore
from tuning.jobs import ErrorType


class RecordingStore(GcsStore):
    """The emulator-backed store, noting every object read and prefix listed (once done)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def download_bytes(self, uri: str) -> bytes:
        data = super().download_bytes(uri)
        self.reads.append(uri)
        return data

    def list(self, prefix_uri: str) -> list[str]:
        listed = super().list(prefix_uri)
        self.reads.append(prefix_uri)
        return listed


def submit_then_rewrite_config(stack: TrainerStack, change: Any) -> str:
    request = base_request()
    request["processed_dataset_id"] = "colours"
    request["training_config"]["base_model_id"] = (
        f"gs://{stack.models_bucket}/base_models/never-uploaded/"
    )
    request["training_config"]["eval_config"] = None
    job_id = stack.submit(request)
    config_uri = stack.settings(job_id).layout.config_uri(job_id)
    stored = stack.storage.download_json(config_uri)
    change(stored)
    stack.storage.upload_json(config_uri, stored)
    return job_id


def run(stack: TrainerStack, job_id: str, storage: GcsStore) -> tuple[int, list[JobEvent]]:
    services = stack.services(job_id)
    services.__dict__["storage"] = storage
    code = main(settings=stack.settings(job_id), services=services)
    return code, stack.pull_events(job_id)


def test_a_config_naming_another_dataset_is_refused_by_the_boundary(stack: TrainerStack) -> None:
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl(colour_rows(8))})
    stack.upload_dataset("victim", {"train.jsonl": to_jsonl(colour_rows(8, seed=1))})
    job_id = submit_then_rewrite_config(
        stack, lambda stored: stored.update(processed_dataset_id="victim")
    )
    storage = RecordingStore()

    code, events = run(stack, job_id, storage)

    assert code == 0  # never retried: the record names the same paths on every attempt
    assert [e.type for e in events] == [EventType.PREPARING, EventType.FAILED]
    failed = events[-1]
    assert isinstance(failed, FailedEvent)
    error = failed.payload.error
    assert (error.type, error.code) == (ErrorType.SYSTEM, "outside_access_boundary")
    assert "processed_datasets/victim/" in error.message
    assert storage.reads == [stack.settings(job_id).layout.config_uri(job_id)]  # nothing else


def test_dataset_rows_pointing_outside_the_jobs_paths_are_refused_by_the_boundary(
    stack: TrainerStack,
) -> None:
    # The record says text (no images to read); the rewritten config says vision, and its rows
    # name an image in the data bucket, outside the job's dataset prefix.
    image = f"gs://{stack.data_bucket}/images/red.png"
    stack.storage.upload_bytes(image, png("red"))
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl([vision_row("red", image)])})

    def to_vision(stored: dict[str, Any]) -> None:
        stored["training_config"]["modality"] = "vision"

    job_id = submit_then_rewrite_config(stack, to_vision)
    storage = RecordingStore()

    code, events = run(stack, job_id, storage)

    assert code == 0
    failed = events[-1]
    assert isinstance(failed, FailedEvent)
    assert EventType.TRAINING not in [e.type for e in events]
    error = failed.payload.error
    assert (error.type, error.code) == (ErrorType.USER, "invalid_dataset")
    assert f"row 0, field 'images[0]': read of {image} is outside this job's" in error.message
    assert image not in storage.reads
