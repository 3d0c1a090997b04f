"""How a job ends when it cannot succeed: who is at fault, and whether Cloud Run retries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.trainer.harness import TrainerStack, base_request, colour_rows, to_jsonl
from trainer.callbacks import CheckpointUploadCallback
from trainer.checkpoints import CheckpointStore
from trainer.errors import InsufficientSpaceError, JobGone
from trainer.main import main
from trainer.modeling import fetch_base_model
from tuning.events import EventType, FailedEvent, ProgressEvent
from tuning.jobs import ErrorType, JobStatus
from tuning.tenancy import BaseModelLocations

ROOT = Path(__file__).resolve().parents[2]


def request_for(stack: TrainerStack, model_uri: str, rows: list[object]) -> dict[str, object]:
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl(rows)})
    request = base_request()
    request["processed_dataset_id"] = "colours"
    request["training_config"]["base_model_id"] = model_uri
    return request


def run_trainer_process(
    stack: TrainerStack, job_id: str, attempt: int = 0, **variables: str
) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        **stack.environ(job_id, attempt),
        "HF_HUB_OFFLINE": "1",
        **variables,
    }
    return subprocess.Popen(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


# `python -m trainer`, plus a line saying whether torch was ever imported.
PROBE = (
    "import sys\n"
    "from trainer.main import main\n"
    "code = main()\n"
    "print('torch imported:', 'torch' in sys.modules)\n"
    "sys.exit(code)\n"
)


def test_broken_row_fails_fast_as_a_user_error_without_retry(stack: TrainerStack) -> None:
    rows = colour_rows(6)
    rows[3]["messages"][1] = {"role": "assistant"}  # no content
    # The model does not exist: had it been looked at before the rows, that would be the error.
    missing_model = f"gs://{stack.models_bucket}/base_models/never-uploaded/"
    job_id = stack.submit(request_for(stack, missing_model, rows))
    started = time.monotonic()

    process = run_trainer_process(stack, job_id)
    output = process.communicate(timeout=120)[0].decode()

    assert process.returncode == 0, output  # 0: Cloud Run does not retry
    assert "torch imported: False" in output
    assert time.monotonic() - started < 60
    events = stack.pull_events(job_id)
    assert [e.type for e in events] == [EventType.PREPARING, EventType.FAILED]
    error = events[-1].payload.error
    assert error.type is ErrorType.USER and error.code == "invalid_dataset"
    assert "row 3" in error.message and "messages[1].content" in error.message
    assert "train" in error.message


def test_dpo_on_sft_rows_fails_before_the_model_naming_the_field(stack: TrainerStack) -> None:
    # The model does not exist: had it been looked at before the rows, that would be the error.
    request = request_for(stack, f"gs://{stack.models_bucket}/base_models/x/", colour_rows(4))
    request["training_config"]["trainer_type"] = "dpo"
    request["training_config"]["hyperparameters"]["max_prompt_length"] = 64
    job_id = stack.submit(request)

    code = main(settings=stack.settings(job_id), services=stack.services(job_id))

    events = stack.pull_events(job_id)
    assert code == 0
    assert [e.type for e in events] == [EventType.PREPARING, EventType.FAILED]
    error = events[-1].payload.error
    assert error.type is ErrorType.USER and error.code == "invalid_dataset"
    assert "row 0, field 'prompt'" in error.message
    assert "'messages': an SFT row" in error.message


def test_unsupported_combination_fails_once_without_retry(stack: TrainerStack) -> None:
    request = request_for(stack, f"gs://{stack.models_bucket}/base_models/x/", colour_rows(4))
    request["training_config"].update(trainer_type="dpo", modality="vision")
    request["training_config"]["hyperparameters"]["max_prompt_length"] = 64
    job_id = stack.submit(request)

    code = main(settings=stack.settings(job_id), services=stack.services(job_id))

    events = stack.pull_events(job_id)
    assert code == 0
    assert isinstance(events[-1], FailedEvent)
    error = events[-1].payload.error
    assert error.code == "unsupported" and error.type is ErrorType.SYSTEM
    assert "'dpo' with modality 'vision'" in error.message
    assert EventType.TRAINING not in [e.type for e in events]


def test_unexpected_error_is_retried_and_reported_on_the_last_attempt(stack: TrainerStack) -> None:
    # A config but no tokenizer or weights: loading fails in a way the trainer does not
    # classify (a broken config.json is a user error: tests/trainer/test_base_model_checks.py).
    model_uri = f"gs://{stack.models_bucket}/base_models/broken/"
    stack.storage.upload_bytes(f"{model_uri}config.json", b'{"model_type": "gemma3_text"}')
    job_id = stack.submit(request_for(stack, model_uri, colour_rows(4)))

    first = main(settings=stack.settings(job_id, attempt=0), services=stack.services(job_id))
    last = main(settings=stack.settings(job_id, attempt=2), services=stack.services(job_id))

    events = stack.pull_events(job_id)
    assert (first, last) == (1, 1)  # non-zero: the execution shows as failed
    assert [e.attempt for e in events if e.type is EventType.FAILED] == [2]
    failed = events[-1]
    assert isinstance(failed, FailedEvent) and failed.payload.error.type is ErrorType.SYSTEM


def test_cancelled_job_stops_without_events_or_files(
    stack: TrainerStack, tiny_gemma3: Path
) -> None:
    job_id = stack.submit(request_for(stack, stack.upload_model(tiny_gemma3, "m"), colour_rows(4)))
    services = stack.services(job_id)
    services.jobs.update(job_id, lambda job: job.model_copy(update={"status": JobStatus.CANCELLED}))

    code = main(settings=stack.settings(job_id), services=services)

    assert code == 0
    assert stack.pull_events(job_id, until_terminal=False, timeout=2) == []
    assert not stack.storage.list(f"gs://{stack.models_bucket}/checkpoints/")
    assert not stack.storage.list(f"gs://{stack.models_bucket}/trained_adapters/")


def test_checkpoint_upload_writes_nothing_for_a_deleted_job(
    stack: TrainerStack, tmp_path: Path
) -> None:
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights")

    def gone() -> None:
        raise JobGone("deleted")

    store = CheckpointStore(
        stack.storage, stack.settings("any-job").layout, "any-job", ensure_job_active=gone
    )

    with pytest.raises(JobGone):
        store.upload(tmp_path, step=4)
    assert store.complete_steps() == []


def test_checkpoints_count_once_marked_and_older_ones_are_dropped(
    stack: TrainerStack, tmp_path: Path
) -> None:
    layout = stack.settings("any-job").layout
    store = CheckpointStore(stack.storage, layout, "any-job", ensure_job_active=lambda: None)
    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    unmarked = layout.checkpoint_prefix("any-job", 9)
    stack.storage.upload_bytes(f"{unmarked}adapter_model.safetensors", b"half an upload")

    store.upload(tmp_path, step=2)
    store.upload(tmp_path, step=4)

    assert store.complete_steps() == [4]
    latest = store.latest()
    assert latest is not None and latest.step == 4
    restored = store.download(latest, tmp_path / "restore")
    assert restored.name == "checkpoint-4" and (restored / "trainer_state.json").is_file()


def test_an_attempt_stops_mid_training_once_its_job_is_cancelled(
    stack: TrainerStack, tiny_gemma3: Path
) -> None:
    # E.g. Cloud Run never got the cancel, or this execution was started by a dispatcher that
    # died before recording it and the job now runs elsewhere: the record is what counts.
    request = request_for(stack, stack.upload_model(tiny_gemma3, "m"), colour_rows(24))
    request["training_config"]["eval_config"] = None
    request["training_config"]["hyperparameters"].update(
        {"max_steps": 2000, "logging_steps": 1, "batch_size": 2, "save_steps": 10_000}
    )
    job_id = stack.submit(request)
    process = run_trainer_process(stack, job_id, TRAINER_JOB_CHECK_SECONDS="0")
    try:
        deadline = time.monotonic() + 120
        while not any(
            isinstance(e, ProgressEvent)
            for e in stack.pull_events(job_id, until_terminal=False, timeout=0)
        ):
            assert process.poll() is None, process.communicate()[0].decode()[-3000:]
            assert time.monotonic() < deadline, "training never started"
        stack.services(job_id).jobs.update(
            job_id, lambda job: job.model_copy(update={"status": JobStatus.CANCELLED})
        )
        output = process.communicate(timeout=60)[0].decode()
    finally:
        process.kill()

    assert process.returncode == 0, output[-3000:]
    assert "stopping without writing" in output
    events = stack.pull_events(job_id, until_terminal=False, timeout=2)
    steps = [e.payload.step for e in events if isinstance(e, ProgressEvent)]
    assert max(steps) < 2000
    assert not any(e.type in (EventType.COMPLETED, EventType.FAILED) for e in events)
    assert not stack.storage.list(f"gs://{stack.models_bucket}/trained_adapters/")


@dataclass
class SavedAt:
    """What the upload callback reads of the Trainer's arguments and state at a save."""

    output_dir: str
    global_step: int = 4
    epoch: float | None = 0.5
    log_history: list[dict[str, float]] = field(default_factory=list)


def test_a_checkpoint_uploads_in_the_background_from_a_snapshot(
    stack: TrainerStack, tmp_path: Path
) -> None:
    upload_may_start = threading.Event()
    layout = stack.settings("any-job").layout
    store = CheckpointStore(
        stack.storage, layout, "any-job", ensure_job_active=upload_may_start.wait
    )
    uploads = CheckpointUploadCallback(store, staging_dir=tmp_path / "staging")
    saved = tmp_path / "output" / "checkpoint-4"
    saved.mkdir(parents=True)
    (saved / "adapter_model.safetensors").write_bytes(b"weights at step 4")
    at = SavedAt(output_dir=str(tmp_path / "output"))

    uploads.on_save(at, at, None)  # returns while the upload waits: training goes on
    shutil.rmtree(saved)  # as the Trainer does on its next save (save_total_limit)
    assert store.complete_steps() == []
    upload_may_start.set()
    uploads.on_train_end(at, at, None)

    latest = store.latest()
    assert latest is not None and latest.step == 4
    restored = store.download(latest, tmp_path / "restore")
    assert (restored / "adapter_model.safetensors").read_bytes() == b"weights at step 4"
    assert list((tmp_path / "staging").iterdir()) == []


def test_a_background_upload_error_surfaces_in_the_training_thread(
    stack: TrainerStack, tmp_path: Path
) -> None:
    def gone() -> None:
        raise JobGone("deleted")

    store = CheckpointStore(
        stack.storage, stack.settings("any-job").layout, "any-job", ensure_job_active=gone
    )
    uploads = CheckpointUploadCallback(store, staging_dir=tmp_path / "staging")
    (tmp_path / "output" / "checkpoint-4").mkdir(parents=True)
    at = SavedAt(output_dir=str(tmp_path / "output"))
    uploads.on_save(at, at, None)

    with pytest.raises(JobGone):
        uploads.on_train_end(at, at, None)
    assert store.complete_steps() == []


def test_a_base_model_that_does_not_fit_fails_before_its_weights_are_fetched(
    stack: TrainerStack, tiny_gemma3: Path, tmp_path: Path
) -> None:
    uri = stack.upload_model(tiny_gemma3, "does-not-fit")
    stored = stack.storage.total_size(uri)
    assert stored == sum(p.stat().st_size for p in tiny_gemma3.iterdir() if p.is_file())

    with pytest.raises(InsufficientSpaceError) as raised:
        fetch_base_model(
            uri,
            storage=stack.storage,
            directory=tmp_path / "base",
            token=None,
            locations=BaseModelLocations.from_settings(stack.settings("any-job")),
            free_bytes=lambda _: stored - 1,  # one byte short
        )

    assert raised.value.error_type is ErrorType.SYSTEM
    assert "trainer_gpu.memory" in raised.value.message
    assert [p.name for p in (tmp_path / "base").iterdir()] == ["config.json"]
