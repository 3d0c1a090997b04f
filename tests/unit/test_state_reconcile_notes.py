"""Reconcile's events do not count as news from the job: its silence clock keeps running."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tuning.events import MessageEvent, MessagePayload
from tuning.jobs import JobRecord, JobStatus
from tuning.state import apply

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def training_job() -> JobRecord:
    return JobRecord(
        job_id="job1",
        job_name="job1",
        base_model_id="google/gemma-3-1b-it",
        processed_dataset_id="ds1",
        created_at=T0,
        updated_at=T0,
        status=JobStatus.TRAINING,
        execution="exec-1",
        last_event_at=T0,
    )


def warning_from(source: str) -> MessageEvent:
    return MessageEvent(
        job_id="job1",
        attempt=0,
        seq=0,
        timestamp=T0 + timedelta(hours=2),
        source=source,  # type: ignore[arg-type]
        execution="exec-1",
        payload=MessagePayload(text="something", level="warning"),
    )


def test_a_reconcile_warning_leaves_the_last_heard_time_alone():
    job = training_job()

    assert apply(job, warning_from("reconcile")).last_event_at == T0


def test_a_trainer_message_still_counts_as_being_heard_from():
    job = training_job()

    assert apply(job, warning_from("trainer")).last_event_at == T0 + timedelta(hours=2)
