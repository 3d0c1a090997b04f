"""Dispatch validates a job before any GPU: `validating`, then a slot, or a user error first.

Real Firestore, Pub/Sub and fake-gcs-server; the launcher is the stand-in that records
launches, so "no execution started" is what it saw. The base model is a tiny Gemma's tokenizer
files in the models bucket, as `tuning models upload` leaves a snapshot.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.emulator.event_core_fixtures import Core, start_core
from tuning.dataset.rows import RowFormat
from tuning.dataset.splits import SplitFile
from tuning.dataset.tokens import TOKENIZER_FILES, ChatTokenizer
from tuning.dispatching import DispatchOutcome, dispatch_job
from tuning.errors import TransientError
from tuning.events import FailedEvent, parse_event
from tuning.jobs import JobStatus, utcnow
from tuning.spec import parse_train_request
from tuning.submission import submit_job

OWNER = "ann@example.com"


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    from trainer.tiny import build_tiny_gemma

    folder = build_tiny_gemma(tmp_path_factory.mktemp("tiny") / "gemma3", family="gemma3")
    names = [*TOKENIZER_FILES, "config.json"]
    return {name: (folder / name).read_bytes() for name in names if (folder / name).is_file()}


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> Core:
    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(tmp_path / "secrets.json"))
    return start_core(unique)


def model_uri(core: Core, files: dict[str, bytes]) -> str:
    prefix = f"gs://{core.settings.models_bucket}/base_models/tiny-gemma3/"
    for name, data in files.items():
        core.services.storage.upload_bytes(prefix + name, data)
    return prefix


def rows(count: int, *, answer: str = "Green, like a frog.") -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"What colour is thing {i}?"},
                {"role": "assistant", "content": answer},
            ]
        }
        for i in range(count)
    ]


def upload(core: Core, dataset: str, split: str, lines: list[Any]) -> str:
    uri = f"{core.settings.layout.dataset_prefix(dataset)}{split}.jsonl"
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    core.services.storage.upload_bytes(uri, body)
    return uri


def submit(
    core: Core, dataset: str, base_model: str, *, evaluate: bool = False, **hyperparameters: Any
) -> str:
    config: dict[str, Any] = {
        "base_model_id": base_model,
        "method": "LoRA",
        "hyperparameters": {"max_seq_length": 64, "batch_size": 2, **hyperparameters},
    }
    if evaluate:
        config["eval_config"] = {"eval_strategy": "epoch"}
    request = parse_train_request({"processed_dataset_id": dataset, "training_config": config})
    return submit_job(request, services=core.services, owner=OWNER, publish=False).job.job_id


def failure(core: Core, job_id: str) -> FailedEvent:
    events = [parse_event(data) for data in core.pulled(core.events_subscription, 1)]
    (failed,) = [event for event in events if isinstance(event, FailedEvent)]
    assert failed.job_id == job_id and failed.source == "dispatch"
    return failed


def test_a_valid_job_is_validated_and_then_launched(
    core: Core, tokenizer_files: dict[str, bytes]
) -> None:
    base = model_uri(core, tokenizer_files)
    train = [*rows(9), *rows(1, answer="word " * 80)]
    upload(core, "colours", "train", train)
    upload(core, "colours", "eval", rows(3))
    job_id = submit(core, "colours", base, evaluate=True, epochs=2, gradient_accumulation_steps=2)

    result = dispatch_job(job_id, services=core.services)

    assert result.outcome is DispatchOutcome.LAUNCHED
    job = core.services.jobs.get(job_id)
    validation = job.validation
    assert validation is not None and validation.row_format == "messages"
    counter = ChatTokenizer.from_files(tokenizer_files)
    split = SplitFile("train", "x", ".jsonl")
    lengths = counter.row_lengths(train, RowFormat.MESSAGES, split=split)
    assert validation.train.rows == 10 and validation.eval is not None
    assert validation.eval.rows == 3
    assert validation.train.tokens == sum(min(n, 64) for n in lengths)
    assert validation.train.truncated_rows == 1 and validation.train.longest == max(lengths)
    # 10 rows, batch 2, accumulation 2: 5 micro-batches, 3 steps an epoch, 6 in two epochs.
    assert (validation.steps_per_epoch, validation.total_steps) == (3, 6)
    assert (
        job.dataset_stats is not None and job.dataset_stats.train_tokens == validation.train.tokens
    )
    assert job.estimate is not None and job.estimate["tokens"] == validation.train.tokens * 2
    assert job.status_reason.startswith("trainer execution started")
    assert core.launcher.launched == [(job_id, result.execution)]


def test_a_redelivery_does_not_validate_again(
    core: Core, tokenizer_files: dict[str, bytes]
) -> None:
    base = model_uri(core, tokenizer_files)
    upload(core, "again", "train", rows(4))
    job_id = submit(core, "again", base)
    dispatch_job(job_id, services=core.services)
    first = core.services.jobs.get(job_id).validation
    upload(core, "again", "train", [{"broken": True}])  # a later change is the trainer's to find

    assert dispatch_job(job_id, services=core.services).outcome is (
        DispatchOutcome.ALREADY_DISPATCHED
    )
    assert core.services.jobs.get(job_id).validation == first


@pytest.mark.parametrize(
    ("setup", "code", "message"),
    [
        ("no_dataset", "invalid_dataset", "no dataset found: gs://"),
        ("bad_row", "invalid_dataset", "row 2, field 'messages[1].role': role must be one of"),
        ("bad_json", "invalid_dataset", "line 3: not valid JSON"),
        ("no_model", "model_unreadable", "holds no config.json, so it is not a model snapshot"),
    ],
)
def test_a_user_error_fails_the_job_before_any_execution(
    core: Core, tokenizer_files: dict[str, bytes], setup: str, code: str, message: str
) -> None:
    base = model_uri(core, tokenizer_files)
    good = rows(4)
    if setup == "bad_row":
        good[2]["messages"][1]["role"] = "robot"
        upload(core, "broken", "train", good)
    elif setup == "bad_json":
        uri = f"{core.settings.layout.dataset_prefix('broken')}train.jsonl"
        core.services.storage.upload_bytes(uri, b'{"messages": []}\n{}\n{nope\n')
    elif setup != "no_dataset":
        upload(core, "broken", "train", good)
    if setup == "no_model":
        base = f"gs://{core.settings.models_bucket}/base_models/nothing-here/"
    job_id = submit(core, "broken", base)

    result = dispatch_job(job_id, services=core.services)

    assert result.outcome is DispatchOutcome.REJECTED
    assert core.launcher.launched == []  # no GPU was asked for
    error = failure(core, job_id).payload.error
    assert error.type.value == "user" and error.code == code
    assert message in error.message
    assert core.services.jobs.get(job_id).status is JobStatus.VALIDATING  # until the event


def test_a_job_cancelled_while_it_validates_is_never_launched(
    core: Core, tokenizer_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tuning.validating as validating

    base = model_uri(core, tokenizer_files)
    upload(core, "stopped", "train", rows(4))
    job_id = submit(core, "stopped", base)
    real = validating.validate_request

    def cancelled_meanwhile(*args: Any, **kwargs: Any) -> Any:
        assert core.services.jobs.get(job_id).status is JobStatus.VALIDATING
        core.services.jobs.update(
            job_id, lambda job: job.model_copy(update={"status": JobStatus.CANCELLED})
        )
        return real(*args, **kwargs)

    monkeypatch.setattr(validating, "validate_request", cancelled_meanwhile)

    assert dispatch_job(job_id, services=core.services).outcome is DispatchOutcome.NOT_QUEUED
    assert core.launcher.launched == []
    assert core.services.jobs.get(job_id).status is JobStatus.CANCELLED


def test_a_validation_cut_short_runs_again_on_the_redelivery(
    core: Core, tokenizer_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tuning.validating as validating

    base = model_uri(core, tokenizer_files)
    upload(core, "retried", "train", rows(4))
    job_id = submit(core, "retried", base)
    real = validating.validate_request

    def storage_down(*args: Any, **kwargs: Any) -> Any:
        raise TransientError("GCS is unavailable")

    monkeypatch.setattr(validating, "validate_request", storage_down)
    with pytest.raises(TransientError):  # Pub/Sub redelivers the message
        dispatch_job(job_id, services=core.services)
    assert core.services.jobs.get(job_id).status is JobStatus.VALIDATING
    monkeypatch.setattr(validating, "validate_request", real)

    assert dispatch_job(job_id, services=core.services).outcome is DispatchOutcome.LAUNCHED
    assert core.services.jobs.get(job_id).validation is not None


def left_validating(core: Core, job_id: str, *, tries: int, began: datetime) -> None:
    """The job as deliveries that began validating it (and died, or still run) leave it."""
    changes = {"status": JobStatus.VALIDATING, "validation_attempts": tries}
    changes["validation_started_at"] = began
    core.services.jobs.update(job_id, lambda job: job.model_copy(update=changes))


def test_a_validation_that_keeps_dying_fails_the_job_instead_of_looping(
    core: Core, tokenizer_files: dict[str, bytes]
) -> None:
    base = model_uri(core, tokenizer_files)
    upload(core, "huge", "train", rows(4))
    job_id = submit(core, "huge", base)
    # Three tries began long ago and none finished (their function was killed each time).
    left_validating(core, job_id, tries=3, began=utcnow() - timedelta(hours=1))

    assert dispatch_job(job_id, services=core.services).outcome is DispatchOutcome.REJECTED
    assert core.launcher.launched == []
    error = failure(core, job_id).payload.error
    assert error.code == "validation_unfinished" and "processed_dataset_id 'huge'" in error.message


def test_a_delivery_while_another_validates_does_not_count_as_a_try(
    core: Core, tokenizer_files: dict[str, bytes]
) -> None:
    base = model_uri(core, tokenizer_files)
    upload(core, "busy", "train", rows(4))
    job_id = submit(core, "busy", base)
    left_validating(core, job_id, tries=3, began=utcnow())

    assert dispatch_job(job_id, services=core.services).outcome is DispatchOutcome.LAUNCHED
    assert core.services.jobs.get(job_id).validation_attempts == 3
