"""The Firestore job store against Google's Firestore emulator."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from tuning.errors import InvalidRequestError, NotFoundError, TransientError
from tuning.events import (
    CompletedEvent,
    CompletedPayload,
    MessageEvent,
    MessagePayload,
    PreparingEvent,
    ProgressEvent,
)
from tuning.gcp.firestore import JobStore
from tuning.jobs import Artifacts, JobRecord, JobStatus, Progress

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(unique: str) -> JobStore:
    return JobStore(project=os.environ["GOOGLE_CLOUD_PROJECT"], collection=f"jobs_{unique}")


def make_job(
    job_id: str, *, minutes: int = 0, owner: str = "alice@example.com", **fields
) -> JobRecord:
    created = T0 + timedelta(minutes=minutes)
    return JobRecord(
        job_id=job_id,
        job_name=job_id,
        owner=owner,
        base_model_id="google/gemma-3-1b-it",
        processed_dataset_id="ds1",
        created_at=created,
        updated_at=created,
        **fields,
    )


def progress(job_id: str, step: int) -> ProgressEvent:
    return ProgressEvent(
        job_id=job_id,
        attempt=0,
        seq=step,
        timestamp=T0 + timedelta(seconds=step),
        payload=Progress(step=step, total_steps=100),
    )


def test_created_record_reads_back_equal(store: JobStore) -> None:
    job = make_job(
        "job-a", metrics=None, secret_references={"hf_token": "projects/p/secrets/s/versions/1"}
    )

    stored, created = store.create(job)

    assert created is True
    assert stored == job
    assert store.get("job-a") == job


def test_create_is_create_if_absent(store: JobStore) -> None:
    store.create(make_job("job-a", owner="first"))

    stored, created = store.create(make_job("job-a", owner="second"))

    assert created is False
    assert stored.owner == "first"


def test_get_unknown_job_raises_not_found(store: JobStore) -> None:
    with pytest.raises(NotFoundError):
        store.get("no-such-job")


def test_list_pages_newest_first_without_gaps_or_repeats(store: JobStore) -> None:
    for index in range(7):
        store.create(make_job(f"job-{index}", minutes=index))
    # Two jobs created in the same instant are still ordered and both listed.
    store.create(make_job("job-tie", minutes=6))

    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = store.list_jobs(limit=3, page_token=token)
        seen.extend(job.job_id for job in page.jobs)
        pages += 1
        token = page.next_page_token
        if token is None:
            break

    assert pages == 3
    assert seen == ["job-tie", "job-6", "job-5", "job-4", "job-3", "job-2", "job-1", "job-0"]


def test_list_filters_by_status_and_owner(store: JobStore) -> None:
    store.create(make_job("queued-alice", minutes=1))
    store.create(make_job("failed-alice", minutes=2, status=JobStatus.FAILED))
    store.create(make_job("queued-bob", minutes=3, owner="bob@example.com"))

    queued = store.list_jobs(status=JobStatus.QUEUED)
    alices_queued = store.list_jobs(status=JobStatus.QUEUED, owner="alice@example.com")

    assert [job.job_id for job in queued.jobs] == ["queued-bob", "queued-alice"]
    assert [job.job_id for job in alices_queued.jobs] == ["queued-alice"]


def test_list_rejects_a_forged_page_token(store: JobStore) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        store.list_jobs(page_token="not-a-token")
    assert raised.value.field == "page_token"


def test_apply_event_moves_the_record_and_records_history(store: JobStore) -> None:
    store.create(make_job("job-a"))
    preparing = PreparingEvent(job_id="job-a", attempt=0, seq=0, timestamp=T0)

    transition = store.apply_event(preparing)

    assert transition is not None and transition.changed
    assert transition.before.status is JobStatus.QUEUED
    assert store.get("job-a").status is JobStatus.PREPARING
    history = store.list_events("job-a").events
    assert [event["type"] for event in history] == ["preparing"]


def test_duplicate_event_changes_nothing_and_is_recorded_once(store: JobStore) -> None:
    store.create(make_job("job-a"))
    store.apply_event(progress("job-a", 5))
    updated_at = store.get("job-a").updated_at

    transition = store.apply_event(progress("job-a", 5))

    assert transition is not None and not transition.changed
    assert store.get("job-a").updated_at == updated_at
    assert len(store.list_events("job-a").events) == 1


def test_terminal_transition_is_reported_once(store: JobStore) -> None:
    store.create(make_job("job-a"))
    completed = CompletedEvent(
        job_id="job-a",
        attempt=0,
        seq=9,
        timestamp=T0,
        payload=CompletedPayload(
            artifacts=Artifacts(adapter_path="gs://m/trained_adapters/job-a/")
        ),
    )

    first = store.apply_event(completed)
    second = store.apply_event(completed)

    assert first is not None and first.became_terminal
    assert second is not None and not second.became_terminal
    assert store.get("job-a").artifacts.adapter_path == "gs://m/trained_adapters/job-a/"


def test_event_for_a_deleted_job_is_dropped(store: JobStore) -> None:
    assert store.apply_event(progress("gone", 1)) is None
    assert store.find("gone") is None


def deliver_until_accepted(store: JobStore, event: ProgressEvent) -> None:
    """What Pub/Sub does with a handler that raised TransientError: deliver again."""
    for _ in range(10):
        try:
            store.apply_event(event)
            return
        except TransientError:
            continue
    raise AssertionError(f"event {event.event_id} never applied")


def test_concurrent_events_lose_no_update(store: JobStore) -> None:
    """Within one process, transactions on a document queue; the highest step wins."""
    store.create(make_job("job-a"))

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda step: store.apply_event(progress("job-a", step)), range(1, 17)))

    job = store.get("job-a")
    assert job.progress is not None and job.progress.step == 16
    assert len(store.list_events("job-a", limit=100).events) == 16


def test_conflicting_transactions_from_two_processes_lose_no_update(
    store: JobStore, unique: str
) -> None:
    """Two stores (as two function instances) really conflict in Firestore; retries win."""
    other = JobStore(project=os.environ["GOOGLE_CLOUD_PROJECT"], collection=f"jobs_{unique}")
    store.create(make_job("job-a"))
    deliveries = [(store if step % 2 else other, progress("job-a", step)) for step in range(1, 7)]

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda pair: deliver_until_accepted(*pair), deliveries))

    job = store.get("job-a")
    assert job.progress is not None and job.progress.step == 6
    assert len(store.list_events("job-a").events) == 6


def test_update_is_transactional_read_modify_write(store: JobStore) -> None:
    store.create(make_job("job-a"))

    def claim(job: JobRecord) -> JobRecord | None:
        if job.execution is not None:
            return None  # already claimed: write nothing
        return job.model_copy(update={"execution": "executions/e1"})

    with ThreadPoolExecutor(max_workers=4) as pool:
        transitions = list(pool.map(lambda _: store.update("job-a", claim), range(6)))

    claimed = [t for t in transitions if t is not None and t.changed]
    assert len(claimed) == 1
    assert store.get("job-a").execution == "executions/e1"
    assert store.update("missing", claim) is None


def test_history_pages_in_time_order(store: JobStore) -> None:
    store.create(make_job("job-a"))
    for step in (3, 1, 2, 5, 4):
        store.apply_event(progress("job-a", step))
    store.apply_event(
        MessageEvent(
            job_id="job-a",
            attempt=0,
            seq=99,
            timestamp=T0 + timedelta(seconds=10),
            payload=MessagePayload(text="hello"),
        )
    )

    first = store.list_events("job-a", limit=4)
    second = store.list_events("job-a", limit=4, page_token=first.next_page_token)

    steps = [event["payload"].get("step") for event in first.events + second.events]
    assert steps == [1, 2, 3, 4, 5, None]
    assert second.next_page_token is None


def test_count_by_status(store: JobStore) -> None:
    store.create(make_job("a", status=JobStatus.TRAINING))
    store.create(make_job("b", status=JobStatus.PREPARING))
    store.create(make_job("c", status=JobStatus.COMPLETED))

    assert store.count([JobStatus.PREPARING, JobStatus.TRAINING]) == 2


def test_delete_removes_record_and_history_only_for_that_job(store: JobStore) -> None:
    store.create(make_job("job1"))
    store.create(make_job("job10"))
    store.apply_event(progress("job1", 1))
    store.apply_event(progress("job10", 1))

    assert store.delete("job1") is True

    assert store.find("job1") is None
    assert store.list_events("job1").events == []
    assert store.get("job10").progress is not None
    assert len(store.list_events("job10").events) == 1
    assert store.delete("job1") is False
