"""Pause and resume across the event-driven core: real push subscriptions into running
dispatch, on_job_event and reconcile servers, fake trainers started by the local launcher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulator.event_core_stack import EventCoreStack, wait_for
from tuning.api.pausing import pause_job, resume_job
from tuning.jobs import AttemptEnding, JobStatus
from tuning.reconciliation import reconcile_jobs


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[EventCoreStack]:
    stack = EventCoreStack.start_core(tmp_path / "stack", MAX_CONCURRENT_JOBS="1")
    yield stack
    stack.stop()


def test_a_paused_job_frees_its_slot_for_the_queue_and_resumes_on_the_next_free_one(stack):
    long_job = stack.submit(pausable=True, seconds=120, steps=1200)
    wait_for(lambda: stack.job(long_job).status is JobStatus.TRAINING, timeout=30, what="training")
    waiting = stack.submit()  # one slot: it waits behind the long job
    wait_for(
        lambda: (stack.job(waiting).status_reason or "").startswith("waiting for a free"),
        timeout=30,
        what="the second job waiting for the slot",
    )

    answer = pause_job(long_job, services=stack.services, owner=None)

    assert answer.status is JobStatus.TRAINING and answer.pause_requested_at is not None
    paused = wait_for(
        lambda: (job := stack.job(long_job)).status is JobStatus.PAUSED and job,
        timeout=30,
        what="the pause",
    )
    other = wait_for(
        lambda: (job := stack.job(waiting)).status.is_terminal and job,
        timeout=60,
        what="the waiting job taking the freed slot",
    )
    assert other.status is JobStatus.COMPLETED
    first_run, second_job_run = (
        next(run for run in stack.trainer_runs() if run["job_id"] == job_id)
        for job_id in (long_job, waiting)
    )
    assert second_job_run["start"] >= first_run["end"]  # it ran once the pause freed the slot
    assert paused.last_attempt_end is not None
    assert paused.last_attempt_end.reason is AttemptEnding.PAUSED
    assert paused.last_attempt_end.step == first_run["paused_at_step"]
    # Reconcile leaves a paused job alone, however long it rests.
    report = reconcile_jobs(services=stack.services)
    assert long_job not in str(report.to_dict())
    assert stack.job(long_job).status is JobStatus.PAUSED

    resumed = resume_job(long_job, services=stack.services, owner=None)

    assert resumed.status is JobStatus.QUEUED
    stack.control(long_job, pausable=True, seconds=0.5, steps=5)  # the rest is quick
    done = wait_for(
        lambda: (job := stack.job(long_job)).status.is_terminal and job,
        timeout=60,
        what="the resumed job completing",
    )
    assert done.status is JobStatus.COMPLETED
    assert done.executions == 2 and len(stack.executions(long_job)) == 2
    assert done.execution != paused.execution
    assert done.attempt == 1  # numbered on from the paused attempt (TRAINER_ATTEMPT_BASE)
    assert done.last_attempt_end == paused.last_attempt_end  # kept: the attempt before
