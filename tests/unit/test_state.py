"""The job record and the pure state machine `apply(job, event) -> job`.

Pub/Sub delivers at least once and in any order: the property tests check that
any delivery order with duplicates converges to the record in-order delivery gives.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import reduce
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuning.events import (
    CancelledEvent,
    CancelledPayload,
    CompletedEvent,
    CompletedPayload,
    EvaluationEvent,
    EvaluationPayload,
    ExportingEvent,
    FailedEvent,
    FailedPayload,
    JobEvent,
    MessageEvent,
    MessagePayload,
    PreparingEvent,
    ProgressEvent,
    RestartedEvent,
    RestartedPayload,
    TrainingEvent,
    TrainingPayload,
)
from tuning.ids import is_segment_id
from tuning.jobs import (
    Artifacts,
    DatasetStats,
    ErrorType,
    JobError,
    JobRecord,
    JobStatus,
    Metrics,
    Progress,
    new_job_id,
    new_job_record,
    stable_suffix,
)
from tuning.spec import parse_train_request
from tuning.state import apply

JOB_ID = "training_ds1_gemma-3-1b-it_abc123"
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SEED_REQUEST = Path(__file__).resolve().parent.parent / "fixtures" / "seed_train_request.json"


def queued_job(**changes: Any) -> JobRecord:
    request = parse_train_request(json.loads(SEED_REQUEST.read_text()))
    job = new_job_record(
        request,
        job_id=JOB_ID,
        owner="alice@example.com",
        config_uri=f"gs://c/configs/{JOB_ID}.json",
        secret_references={"hf_token": "projects/p/secrets/s/versions/1"},
        now=T0,
    )
    return job.model_copy(update=changes)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def common(attempt: int, seq: int, **extra: Any) -> dict[str, Any]:
    return {"job_id": JOB_ID, "attempt": attempt, "seq": seq, "timestamp": at(seq), **extra}


def preparing(attempt: int = 0, seq: int = 1, **extra: Any) -> PreparingEvent:
    return PreparingEvent(**common(attempt, seq, **extra))


def training(attempt: int = 0, seq: int = 2, total: int = 100, **extra: Any) -> TrainingEvent:
    payload = TrainingPayload(total_steps=total, wandb_url=f"https://wandb.ai/t/p/runs/a{attempt}")
    return TrainingEvent(**common(attempt, seq, **extra), payload=payload)


def progress(
    step: int, attempt: int = 0, seq: int | None = None, total: int = 100
) -> ProgressEvent:
    payload = Progress(step=step, total_steps=total, loss=1.0 / (step + 1), eta_seconds=100 - step)
    return ProgressEvent(**common(attempt, 10 + step if seq is None else seq), payload=payload)


def evaluation(step: int, attempt: int = 0, seq: int | None = None) -> EvaluationEvent:
    metrics = Metrics(eval_loss=2.0 / (step + 1), perplexity=1.5, accuracy=0.5, step=step)
    payload = EvaluationPayload(metrics=metrics)
    return EvaluationEvent(**common(attempt, 11 + step if seq is None else seq), payload=payload)


def exporting(attempt: int = 0, seq: int = 500) -> ExportingEvent:
    return ExportingEvent(**common(attempt, seq))


def completed(attempt: int = 0, seq: int = 600) -> CompletedEvent:
    payload = CompletedPayload(
        progress=Progress(step=100, total_steps=100),
        metrics=Metrics(eval_loss=0.1, perplexity=1.1, accuracy=0.9, step=100),
        wandb_url=f"https://wandb.ai/t/p/runs/a{attempt}",
        artifacts=Artifacts(adapter_path=f"gs://m/trained_adapters/{JOB_ID}/"),
    )
    return CompletedEvent(**common(attempt, seq), payload=payload)


def failed(error_type: ErrorType, attempt: int = 0, seq: int = 600) -> FailedEvent:
    payload = FailedPayload(
        progress=Progress(step=7, total_steps=100),
        error=JobError(type=error_type, message="row 3: field 'text' is missing", code="bad_row"),
    )
    return FailedEvent(**common(attempt, seq), payload=payload)


def apply_all(job: JobRecord, events: list[JobEvent]) -> JobRecord:
    return reduce(apply, events, job)


# --- the job record -----------------------------------------------------------------------------


def test_new_job_record_is_queued_with_the_request_fields():
    job = queued_job()

    assert job.status is JobStatus.QUEUED
    assert job.attempt == 0
    assert job.base_model_id == "google/gemma-2b"
    assert job.processed_dataset_id == "dataset_abc123"
    assert job.job_name == "my-job-name"
    assert job.created_at == job.updated_at == T0
    assert job.progress is None
    assert job.error is None


def test_new_job_record_never_holds_the_token_value():
    job = queued_job()

    assert "hf_..." not in json.dumps(job.to_document())


def test_job_name_defaults_to_the_job_id():
    request = parse_train_request(
        {"processed_dataset_id": "ds", "training_config": {"base_model_id": "google/gemma-2b"}}
    )

    job = new_job_record(request, job_id="j1", owner=None, config_uri=None, secret_references={})

    assert job.job_name == "j1"


def test_job_document_round_trips_and_ignores_unknown_fields():
    job = apply(queued_job(), progress(5))
    document = job.to_document() | {"field_from_a_newer_version": 1}

    again = JobRecord.from_document(document)

    assert again == job
    assert document["progress"]["percent"] == 5.0


def test_progress_percent_is_bounded_and_absent_without_total():
    assert Progress(step=50, total_steps=200).percent == 25.0
    assert Progress(step=300, total_steps=200).percent == 100.0
    assert Progress(step=3).percent is None
    assert Progress(step=3, total_steps=0).percent is None


def test_new_job_id_has_the_seed_shape_and_is_a_safe_segment():
    job_id = new_job_id("dataset_abc123", "google/gemma-2b", suffix="def456")

    assert job_id == "training_dataset-abc123_gemma-2b_def456"
    assert is_segment_id(job_id)


def test_new_job_id_is_safe_for_hostile_and_long_inputs():
    job_id = new_job_id("../../" + "x" * 300, "gs://bucket/a/../" + "M" * 300 + "/")

    assert is_segment_id(job_id)
    assert ".." not in job_id
    assert "/" not in job_id


def test_new_job_id_is_random_without_a_suffix():
    assert new_job_id("ds", "google/gemma-2b") != new_job_id("ds", "google/gemma-2b")


def test_stable_suffix_is_deterministic_and_separates_parts():
    assert stable_suffix("owner", "key") == stable_suffix("owner", "key")
    assert stable_suffix("owner", "key") != stable_suffix("owne", "rkey")
    assert len(stable_suffix("x")) == 12


def test_terminal_statuses_rank_last():
    terminal = {status for status in JobStatus if status.is_terminal}

    assert terminal == {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
    assert all(status.rank == 4 for status in terminal)
    assert JobStatus.QUEUED.rank < JobStatus.PREPARING.rank < JobStatus.TRAINING.rank
    assert JobStatus.TRAINING.rank < JobStatus.EXPORTING.rank < JobStatus.COMPLETED.rank


# --- the state machine: examples ----------------------------------------------------------------


def test_happy_path_moves_through_every_status():
    job = queued_job()
    seen = [job.status]

    for event in [preparing(), training(), progress(50), exporting(), completed()]:
        job = apply(job, event)
        seen.append(job.status)

    assert seen == [
        JobStatus.QUEUED,
        JobStatus.PREPARING,
        JobStatus.TRAINING,
        JobStatus.TRAINING,
        JobStatus.EXPORTING,
        JobStatus.COMPLETED,
    ]
    assert job.finished_at == at(600)
    assert job.last_event_at == at(600)
    assert job.artifacts.adapter_path == f"gs://m/trained_adapters/{JOB_ID}/"
    assert job.progress == Progress(step=100, total_steps=100)
    assert job.metrics is not None
    assert job.metrics.accuracy == 0.9
    assert job.wandb_url == "https://wandb.ai/t/p/runs/a0"
    assert job.error is None


def test_training_event_starts_progress_at_zero_with_total_steps():
    job = apply_all(queued_job(), [preparing(), training(total=40)])

    assert job.progress == Progress(step=0, total_steps=40)
    assert job.wandb_url == "https://wandb.ai/t/p/runs/a0"


def test_apply_does_not_change_its_input_or_updated_at():
    job = queued_job()
    before = job.model_copy(deep=True)

    result = apply(job, training())

    assert job == before
    assert result.updated_at == job.updated_at
    assert result is not job


@pytest.mark.parametrize(
    "terminal",
    [completed(), failed(ErrorType.USER), CancelledEvent(**common(0, 600))],
    ids=["completed", "failed", "cancelled"],
)
@pytest.mark.parametrize(
    "later",
    [
        preparing(seq=700),
        progress(99, seq=701),
        exporting(seq=702),
        completed(seq=703),
        failed(ErrorType.SYSTEM, seq=704),
        preparing(attempt=5, seq=0),
        progress(1, attempt=5),
    ],
    ids=[
        "preparing",
        "progress",
        "exporting",
        "completed",
        "failed",
        "new-attempt-preparing",
        "new-attempt-progress",
    ],
)
def test_terminal_status_absorbs_every_later_event(terminal: JobEvent, later: JobEvent):
    job = apply_all(queued_job(), [preparing(), training(), terminal])

    result = apply(job, later)

    assert result is job


def test_duplicate_event_returns_the_identical_record():
    job = apply_all(queued_job(), [preparing(), training(), progress(10)])

    again = apply(job, progress(10))

    assert again is job


def test_message_event_changes_only_the_last_event_time():
    job = apply_all(queued_job(), [preparing(), training()])
    message = MessageEvent(**common(0, 3), payload=MessagePayload(text="tokenizing"))

    result = apply(job, message)

    assert result.status is JobStatus.TRAINING
    assert result.last_event_at == at(3)
    assert result.model_copy(update={"last_event_at": job.last_event_at}) == job


def test_newer_attempt_resets_progress_and_metrics():
    job = apply_all(
        queued_job(), [preparing(), training(), progress(40), evaluation(40), exporting()]
    )

    result = apply(job, preparing(attempt=1, seq=0))

    assert result.attempt == 1
    assert result.status is JobStatus.PREPARING
    assert result.progress is None
    assert result.metrics is None
    assert result.wandb_url is None
    assert result.last_event_at == at(0)


def test_first_event_of_a_newer_attempt_may_be_any_event():
    job = apply_all(queued_job(), [preparing(), training(), progress(40)])

    result = apply(job, progress(3, attempt=2))

    assert result.attempt == 2
    assert result.status is JobStatus.TRAINING
    assert result.progress is not None
    assert result.progress.step == 3
    assert result.metrics is None


def test_older_attempt_events_are_ignored_after_a_newer_one():
    job = apply_all(queued_job(), [preparing(), training(), preparing(attempt=1, seq=0)])

    for late in [progress(90), evaluation(90), exporting(), completed(), failed(ErrorType.USER)]:
        assert apply(job, late) is job


def test_events_of_another_execution_are_ignored():
    job = apply(queued_job(execution="exec-2"), preparing(execution="exec-2"))

    stale = [
        training(execution="exec-1"),
        PreparingEvent(**common(3, 0, execution="exec-1")),
        FailedEvent(**common(0, 9, execution="exec-1"), payload=failed(ErrorType.SYSTEM).payload),
    ]

    assert all(apply(job, event) is job for event in stale)
    assert apply(job, training(execution="exec-2")).status is JobStatus.TRAINING


def test_the_trainer_names_its_execution_as_cloud_run_tells_it():
    # The job records the API's resource name; the container only sees the last segment.
    name = "projects/p/locations/us-central1/jobs/gemma-trainer/executions/gemma-trainer-x7k2p"
    job = queued_job(execution=name)

    assert apply(job, preparing(execution="gemma-trainer-x7k2p")).status is JobStatus.PREPARING
    assert apply(job, preparing(execution="gemma-trainer-other")) is job


def test_event_without_execution_applies_to_a_dispatched_job():
    job = queued_job(execution="exec-2")

    result = apply(job, preparing())

    assert result.status is JobStatus.PREPARING


@pytest.mark.parametrize("error_type", [ErrorType.USER, ErrorType.SYSTEM])
def test_failure_records_who_is_at_fault(error_type: ErrorType):
    job = apply_all(queued_job(), [preparing(), training(), progress(7)])

    result = apply(job, failed(error_type))

    assert result.status is JobStatus.FAILED
    assert result.error is not None
    assert result.error.type is error_type
    assert result.error.code == "bad_row"
    assert result.finished_at == at(600)
    assert result.progress == Progress(step=7, total_steps=100)


def test_failure_from_queued_is_allowed():
    result = apply(queued_job(), failed(ErrorType.SYSTEM, seq=0))

    assert result.status is JobStatus.FAILED


def test_cancel_records_the_reason():
    event = CancelledEvent(**common(0, 30), source="user", payload=CancelledPayload(reason="by me"))

    result = apply(apply(queued_job(), preparing()), event)

    assert result.status is JobStatus.CANCELLED
    assert result.status_reason == "by me"
    assert result.finished_at == at(30)


def test_progress_never_moves_back_within_an_attempt():
    job = apply_all(queued_job(), [preparing(), training(), progress(30)])

    result = apply(job, progress(20))

    assert result.progress is not None
    assert result.progress.step == 30


def test_metrics_keep_the_latest_evaluation():
    job = apply_all(queued_job(), [preparing(), training(), evaluation(30)])

    result = apply(job, evaluation(20))

    assert result.metrics is not None
    assert result.metrics.step == 30


def test_status_never_moves_back_within_an_attempt():
    job = apply_all(queued_job(), [preparing(), training(), exporting()])

    for late in [preparing(seq=3), training(seq=4), progress(99), RestartedEvent(**common(0, 8))]:
        job = apply(job, late)

    assert job.status is JobStatus.EXPORTING


def test_event_for_another_job_is_refused():
    other = PreparingEvent(job_id="other-job", attempt=0, seq=0, timestamp=T0)

    with pytest.raises(ValueError, match="other-job"):
        apply(queued_job(), other)


def test_last_event_time_never_moves_back():
    job = apply_all(queued_job(), [preparing(seq=1), training(seq=50)])

    result = apply(job, progress(3, seq=20))

    assert result.last_event_at == at(50)


# --- the state machine: properties --------------------------------------------------------------


class ModelTrainer:
    """Emits the events one job's trainer would publish, with growing seq and time."""

    def __init__(self, attempt: int, clock: datetime, gap: st.SearchStrategy[int], draw: Any):
        self.attempt = attempt
        self.clock = clock
        self.seq = 0
        self.gap = gap
        self.draw = draw
        self.events: list[JobEvent] = []

    def emit(self, cls: type[Any], **payload: Any) -> None:
        self.clock += timedelta(seconds=self.draw(self.gap))
        fields = {
            "job_id": JOB_ID,
            "attempt": self.attempt,
            "seq": self.seq,
            "timestamp": self.clock,
            "execution": "exec-1",
        }
        self.events.append(cls(**fields, **payload))
        self.seq += 1


@st.composite
def event_histories(draw: Any) -> list[JobEvent]:
    """A valid event history of one job: 1-3 attempts, the last one maybe terminal."""
    count = draw(st.integers(1, 3))
    attempts = sorted(draw(st.sets(st.integers(0, 6), min_size=count, max_size=count)))
    clock = T0
    events: list[JobEvent] = []
    for index, attempt in enumerate(attempts):
        last = index == len(attempts) - 1
        trainer = ModelTrainer(attempt, clock, st.integers(1, 120), draw)
        trainer.emit(PreparingEvent)
        resumed = draw(st.integers(0, 50)) if index else None
        if resumed is not None:  # a retried attempt says where it resumed from
            trainer.emit(RestartedEvent, payload=RestartedPayload(resumed_from_step=resumed))
        if draw(st.booleans()):
            trainer.emit(MessageEvent, payload=MessagePayload(text="loading dataset"))
        total = draw(st.integers(1, 500))
        stats = draw(st.none() | st.builds(DatasetStats, train_rows=st.integers(0, 10**6)))
        wandb_url = f"https://wandb.ai/team/gemma/runs/{attempt}-{total}"
        trainer.emit(
            TrainingEvent,
            payload=TrainingPayload(total_steps=total, wandb_url=wandb_url, dataset_stats=stats),
        )
        latest_progress = Progress(step=0, total_steps=total)
        latest_metrics: Metrics | None = None
        steps = sorted(draw(st.sets(st.integers(0, total), max_size=6)))
        for step in steps:
            latest_progress = Progress(
                step=step,
                total_steps=total,
                epoch=round(3 * step / total, 3),
                loss=draw(st.floats(0, 10)),
                learning_rate=2e-4,
                tokens_per_second=draw(st.floats(0, 1e5)),
                eta_seconds=float(total - step),
            )
            trainer.emit(ProgressEvent, payload=latest_progress)
            if draw(st.booleans()):
                latest_metrics = Metrics(eval_loss=draw(st.floats(0, 10)), accuracy=0.5, step=step)
                trainer.emit(EvaluationEvent, payload=EvaluationPayload(metrics=latest_metrics))
            if draw(st.booleans()):
                level = draw(st.sampled_from(["info", "warning", "error"]))
                trainer.emit(MessageEvent, payload=MessagePayload(level=level, text=f"at {step}"))
        ending = draw(st.sampled_from(["completed", "failed", "none"])) if last else "none"
        if ending == "completed" or draw(st.booleans()):
            trainer.emit(ExportingEvent)
        final_metrics = latest_metrics or Metrics(train_loss=latest_progress.loss or 0.0)
        snapshot = {
            "progress": latest_progress,
            "metrics": final_metrics,
            "wandb_url": wandb_url,
            "dataset_stats": stats,
            "resumed_from_step": resumed,
        }
        if ending == "completed":
            artifacts = Artifacts(
                adapter_path=f"gs://m/trained_adapters/{JOB_ID}/",
                gguf_path=f"gs://m/gguf_models/{JOB_ID}/model-q8_0.gguf",
                gguf_files={"q8_0": f"gs://m/gguf_models/{JOB_ID}/model-q8_0.gguf"},
            )
            trainer.emit(CompletedEvent, payload=CompletedPayload(**snapshot, artifacts=artifacts))
        elif ending == "failed":
            error = JobError(type=draw(st.sampled_from(list(ErrorType))), message="boom")
            trainer.emit(FailedEvent, payload=FailedPayload(**snapshot, error=error))
        events.extend(trainer.events)
        clock = trainer.clock
    return events


@st.composite
def deliveries(draw: Any) -> tuple[list[JobEvent], list[JobEvent]]:
    """A history, and the same events in any order with some delivered more than once."""
    history = draw(event_histories())
    duplicates = draw(st.lists(st.sampled_from(history), max_size=len(history)))
    return history, draw(st.permutations(history + duplicates))


@settings(max_examples=200, deadline=None)
@given(deliveries())
def test_any_delivery_order_with_duplicates_gives_the_in_order_record(
    delivery: tuple[list[JobEvent], list[JobEvent]],
):
    history, shuffled = delivery
    job = queued_job(execution="exec-1", executions=1)

    expected = apply_all(job, history)
    actual = apply_all(job, shuffled)

    assert actual == expected


@settings(max_examples=200, deadline=None)
@given(deliveries())
def test_in_order_history_ends_in_the_last_attempt_with_its_outcome(
    delivery: tuple[list[JobEvent], list[JobEvent]],
):
    history, _ = delivery
    last = history[-1]

    job = apply_all(queued_job(execution="exec-1", executions=1), history)

    assert job.attempt == last.attempt
    assert job.last_event_at == last.timestamp
    if isinstance(last, CompletedEvent):
        assert job.status is JobStatus.COMPLETED
        assert job.artifacts == last.payload.artifacts
    elif isinstance(last, FailedEvent):
        assert job.status is JobStatus.FAILED
        assert job.error == last.payload.error
    else:
        assert not job.status.is_terminal
        assert job.finished_at is None


@settings(max_examples=200, deadline=None)
@given(deliveries(), st.data())
def test_applying_an_event_twice_equals_applying_it_once(
    delivery: tuple[list[JobEvent], list[JobEvent]], data: st.DataObject
):
    _, shuffled = delivery
    cut = data.draw(st.integers(0, len(shuffled)))
    event = data.draw(st.sampled_from(shuffled))
    job = apply_all(queued_job(execution="exec-1", executions=1), shuffled[:cut])

    once = apply(job, event)
    twice = apply(once, event)

    assert twice == once
    assert twice is once


@settings(max_examples=200, deadline=None)
@given(deliveries())
def test_status_and_progress_only_move_forward_within_an_attempt(
    delivery: tuple[list[JobEvent], list[JobEvent]],
):
    _, shuffled = delivery
    job = queued_job(execution="exec-1", executions=1)

    for event in shuffled:
        after = apply(job, event)
        if after.attempt == job.attempt:
            assert after.status.rank >= job.status.rank
            if job.progress is not None:
                assert after.progress is not None
                assert after.progress.step >= job.progress.step or after.status.is_terminal
        else:
            assert after.attempt > job.attempt
        job = after
