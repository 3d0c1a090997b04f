"""Acceptance: the event-driven core through real push subscriptions into running servers.

Nothing here calls a handler directly: messages go to the Pub/Sub emulator,
which pushes them to functions-framework servers (dispatch, on_job_event),
which start fake trainer processes through the local launcher.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from functools import reduce
from pathlib import Path
from typing import Any

import pytest

from tests.emulator.event_core_stack import EventCoreStack, train_request, wait_for
from tuning.capacity import waiting_reason
from tuning.events import (
    CancelledEvent,
    CancelledPayload,
    CompletedEvent,
    CompletedPayload,
    JobEvent,
    ProgressEvent,
)
from tuning.jobs import (
    Artifacts,
    JobRecord,
    JobStatus,
    Metrics,
    Progress,
    new_job_id,
    new_job_record,
    stable_suffix,
    utcnow,
)
from tuning.launchers import ExecutionState
from tuning.local.bootstrap import DeliveryPolicy
from tuning.reporting import EventReporter
from tuning.spec import JobReference
from tuning.state import apply


@pytest.fixture
def start_stack(tmp_path: Path) -> Iterator[Any]:
    """Start a stack with the given settings; stopped when the test ends."""
    stacks: list[EventCoreStack] = []

    def start(**variables: Any) -> EventCoreStack:
        stack = EventCoreStack.start_core(tmp_path / f"stack{len(stacks)}", **variables)
        stacks.append(stack)
        return stack

    yield start
    for stack in stacks:
        stack.stop()


def outcomes_logged(stack: EventCoreStack, message_id: str) -> list[str]:
    """What dispatch answered each delivery of one message (its handler logs one line)."""
    prefix = f"dispatch: message {message_id}: "
    return [
        line.split(prefix, 1)[1] for line in stack.log("dispatch").splitlines() if prefix in line
    ]


def max_running_at_once(runs: list[dict[str, Any]]) -> int:
    """The most fake-trainer attempts that were working at the same moment."""
    edges = sorted([(run["start"], 1) for run in runs] + [(run["end"], -1) for run in runs])
    running = peak = 0
    for _, change in edges:  # at equal times an end (-1) sorts before a start (+1)
        running += change
        peak = max(peak, running)
    return peak


def test_a_request_delivered_three_times_makes_one_job_and_one_execution(start_stack):
    stack = start_stack()
    # Three subscriptions push every message three times, with one and the same message id.
    stack.add_dispatch_subscription(f"dispatch-copy-1-{stack.unique}")
    stack.add_dispatch_subscription(f"dispatch-copy-2-{stack.unique}")
    request = {
        "processed_dataset_id": "dataset_abc123",
        "training_config": {"base_model_id": "google/gemma-3-1b-it", "method": "LoRA"},
    }

    message_id = stack.publish_request(json.dumps(request).encode(), owner="svc@example.com")

    wait_for(lambda: len(outcomes_logged(stack, message_id)) == 3, timeout=30, what="deliveries")
    job_id = new_job_id(
        "dataset_abc123", "google/gemma-3-1b-it", suffix=stable_suffix("pubsub", message_id)
    )
    job = wait_for(lambda: (j := stack.job(job_id)).status.is_terminal and j, timeout=30)
    assert sorted(outcomes_logged(stack, message_id)) == [
        "already_dispatched",
        "already_dispatched",
        "launched",
    ]
    assert [j.job_id for j in stack.all_jobs()] == [job_id]
    assert stack.executions() == [job.execution]
    assert job.status is JobStatus.COMPLETED
    assert job.owner == "svc@example.com"


def test_a_job_reference_published_three_times_starts_one_execution(start_stack):
    stack = start_stack()
    job_id = stack.submit()
    for _ in range(2):  # as a submit retried after a lost answer would publish again
        stack.publisher.publish(stack.settings.requests_topic, JobReference(job_id=job_id))

    job = wait_for(lambda: (j := stack.job(job_id)).status.is_terminal and j, timeout=30)
    wait_for(lambda: stack.log("dispatch").count("dispatch: message") == 3, timeout=30)

    assert job.status is JobStatus.COMPLETED
    assert stack.executions() == [job.execution]


def test_twenty_jobs_never_run_more_than_two_at_once(start_stack):
    stack = start_stack(
        MAX_CONCURRENT_JOBS="2", TRAINER_MAX_RETRIES="1", FAKE_TRAINER_SECONDS="0.2"
    )
    # The first two train long enough to surely overlap; a few others crash in their first
    # attempt, and the launcher retries them while they keep their slot.
    behaviours: list[dict[str, Any]] = [{"seconds": 2.0}, {"seconds": 2.0}]
    behaviours += [{"crash_attempts": 1} if n % 6 == 0 else {} for n in range(18)]
    job_ids = [stack.submit(**behaviour) for behaviour in behaviours]
    reasons_seen: set[str | None] = set()

    def all_completed() -> bool:
        queued = stack.services.jobs.list_jobs(status=JobStatus.QUEUED, limit=100).jobs
        reasons_seen.update(job.status_reason for job in queued)
        return stack.services.jobs.count([JobStatus.COMPLETED]) == 20

    wait_for(all_completed, timeout=120, interval=0.5, what="20 completed jobs")

    runs = stack.trainer_runs()
    assert max_running_at_once(runs) <= 2
    assert max_running_at_once(runs) == 2  # both slots were used, not just respected
    assert waiting_reason(2, 2) in reasons_seen  # a waiting job said why
    for job_id in job_ids:
        job = stack.job(job_id)
        assert stack.executions(job_id) == [job.execution]
    crashed = [
        job_id for job_id, b in zip(job_ids, behaviours, strict=True) if "crash_attempts" in b
    ]
    assert [stack.job(job_id).attempt for job_id in crashed] == [1] * len(crashed)


def test_poison_messages_are_acknowledged_recorded_and_not_retried(start_stack):
    stack = start_stack()
    invalid_request = {
        "processed_dataset_id": "dataset_abc123",
        "training_config": {"base_model_id": "google/gemma-3-1b-it", "method": "bogus"},
    }
    not_json = stack.publish_request(b"\xff{ not json")
    invalid = stack.publish_request(json.dumps(invalid_request).encode())
    unknown = stack.publish_request(JobReference(job_id="no_such_job").model_dump_json().encode())

    failed_id = new_job_id("dataset_abc123", "google/gemma-3-1b-it", suffix=stable_suffix(invalid))
    failed = wait_for(lambda: stack.services.jobs.find(failed_id), timeout=30, what="record")
    notifications = stack.admin.pull(stack.resources.notifications_subscription, 1, timeout=20)
    # Longer than the subscription's backoff: a retried message would have come back by now.
    time.sleep(4)

    assert outcomes_logged(stack, not_json) == ["rejected"]
    assert outcomes_logged(stack, invalid) == ["rejected"]
    assert outcomes_logged(stack, unknown) == ["unknown_job"]
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error.type.value == "user"
    assert "training_config.method" in failed.error.message
    assert [json.loads(data)["job_id"] for data, _ in notifications] == [failed_id]
    assert stack.admin.pull(stack.resources.requests_dead_letters, 1, timeout=1) == []


class Recorder:
    """Collects what an EventReporter would publish, to build an event stream in order."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []

    def publish(self, topic: str, message: JobEvent, **attributes: str) -> str:
        self.events.append(message)
        return str(len(self.events))


def two_attempts_of_events(job_id: str, execution: str) -> list[JobEvent]:
    """A realistic stream in order: attempt 0 dies at step 40, attempt 1 resumes and completes."""
    recorder = Recorder()
    start = utcnow()
    ticks = iter(range(10_000))

    def clock() -> Any:
        return start + timedelta(seconds=next(ticks))

    first = EventReporter(recorder, "t", job_id=job_id, execution=execution, clock=clock)
    first.preparing()
    first.training(total_steps=100)
    for step in range(1, 41):
        first.progress_update(Progress(step=step, total_steps=100, loss=2.0 / step))
        if step % 10 == 0:
            first.evaluation(Metrics(eval_loss=1.0 / step, step=step))
            first.message(f"checkpoint at step {step}")
    second = EventReporter(
        recorder, "t", job_id=job_id, attempt=1, execution=execution, clock=clock
    )
    second.restarted(resumed_from_step=40)
    second.preparing()
    second.training(total_steps=100)
    for step in range(41, 101):
        second.progress_update(Progress(step=step, total_steps=100, loss=2.0 / step))
        if step % 10 == 0:
            second.evaluation(Metrics(eval_loss=1.0 / step, step=step))
    second.exporting(["adapter"])
    second.completed(Artifacts(adapter_path=f"gs://m/trained_adapters/{job_id}/"))
    return recorder.events


def test_shuffled_duplicated_events_leave_the_in_order_record(start_stack):
    stack = start_stack()
    job = new_job_record(
        train_request(),
        job_id="job_events_shuffled",
        owner=None,
        config_uri=None,
        secret_references={},
    ).model_copy(update={"execution": "local-00000000000e"})
    stack.services.jobs.create(job)
    events = two_attempts_of_events(job.job_id, "local-00000000000e")
    shuffled = events + random.Random(3).sample(events, len(events))
    random.Random(4).shuffle(shuffled)
    expected = reduce(apply, events, job)

    for event in shuffled:
        stack.publish_event(event)
    wait_for(lambda: stack.history_size(job.job_id) == len(events), timeout=90, interval=0.5)
    notifications = stack.admin.pull(stack.resources.notifications_subscription, 5, timeout=3)

    assert len(shuffled) > 240
    final = stack.job(job.job_id)
    assert final.model_dump(exclude={"updated_at"}) == expected.model_dump(exclude={"updated_at"})
    assert final.status is JobStatus.COMPLETED and final.attempt == 1
    assert [json.loads(data)["status"] for data, _ in notifications] == ["completed"]


def started_job(stack: EventCoreStack, **behaviour: Any) -> JobRecord:
    """Submit a job whose fake trainer hangs after `training`; return it once it trains."""
    job_id = stack.submit(hang=True, **behaviour)

    def training() -> JobRecord | None:
        job = stack.job(job_id)
        return job if job.status is JobStatus.TRAINING and job.execution else None

    return wait_for(training, timeout=30, what="a training job")


def test_an_execution_killed_mid_run_fails_after_one_reconcile_pass(start_stack):
    stack = start_stack(RECONCILE_STALE_SECONDS="2", TRAINER_MAX_RETRIES="0")
    job = started_job(stack)
    assert job.execution is not None
    trainer = stack.trainer_pid(job.execution)
    assert trainer is not None

    os.killpg(trainer, signal.SIGKILL)  # as the kernel's OOM killer would
    wait_for(
        lambda: stack.launcher.status(job.execution or "").state is ExecutionState.FAILED,
        timeout=15,
    )
    time.sleep(2.5)  # the stale threshold, after the last event and the end
    report = stack.reconcile()
    failed = wait_for(lambda: (j := stack.job(job.job_id)).status.is_terminal and j, timeout=20)

    assert report["failed"] == [job.job_id]
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error.type.value == "system"
    assert "killed by SIGKILL" in failed.error.message
    assert "without reporting a result" in failed.error.message


def test_cancel_stops_the_execution_and_late_events_are_ignored(start_stack):
    stack = start_stack(TRAINER_MAX_RETRIES="2")
    job = started_job(stack)
    execution = job.execution or ""
    trainer = stack.trainer_pid(execution)

    # What the delete function's cancel does: stop the execution, record the cancel.
    stack.launcher.cancel(execution)
    stack.publish_event(
        CancelledEvent(
            job_id=job.job_id,
            attempt=job.attempt,
            seq=0,
            timestamp=utcnow(),
            source="user",
            payload=CancelledPayload(reason="cancelled by the test"),
        )
    )
    cancelled = wait_for(lambda: (j := stack.job(job.job_id)).status.is_terminal and j, timeout=20)
    wait_for(lambda: stack.launcher.status(execution).state is ExecutionState.CANCELLED, timeout=20)
    before = stack.history_size(job.job_id)
    late = [
        ProgressEvent(
            job_id=job.job_id,
            attempt=0,
            seq=500,
            timestamp=utcnow(),
            execution=execution,
            payload=Progress(step=99, total_steps=100),
        ),
        CompletedEvent(
            job_id=job.job_id,
            attempt=0,
            seq=501,
            timestamp=utcnow(),
            execution=execution,
            payload=CompletedPayload(artifacts=Artifacts(adapter_path="gs://m/late/")),
        ),
    ]
    for event in late:
        stack.publish_event(event)
    wait_for(lambda: stack.history_size(job.job_id) == before + 2, timeout=20)

    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.status_reason == "cancelled by the test"
    assert stack.job(job.job_id).model_dump(exclude={"updated_at"}) == cancelled.model_dump(
        exclude={"updated_at"}
    )
    assert trainer is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(trainer, 0)
    assert [run["attempt"] for run in stack.trainer_runs()] == [0]  # a cancel is not retried


def test_dead_letter_topic_receives_what_dispatch_rejects_after_the_configured_attempts(
    start_stack,
):
    stack = start_stack(
        MAX_CONCURRENT_JOBS="1",
        dispatch_policy=DeliveryPolicy(ack_deadline_seconds=30, max_delivery_attempts=5),
    )
    holder = started_job(stack)  # holds the only slot for as long as the test runs

    waiting = stack.submit()
    dead = stack.admin.pull(stack.resources.requests_dead_letters, 1, timeout=60)

    assert [JobReference.model_validate_json(data).job_id for data, _ in dead] == [waiting]
    job = stack.job(waiting)
    assert job.status is JobStatus.QUEUED and job.execution is None
    assert job.status_reason == waiting_reason(1, 1)
    assert stack.log("dispatch").count(f"job {waiting} waits") >= 5
    assert stack.job(holder.job_id).status is JobStatus.TRAINING
