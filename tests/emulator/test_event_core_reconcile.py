"""The reconcile core on the emulators: what one pass does to each kind of stuck job."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.emulator.event_core_fixtures import Core, make_job, start_core
from tuning.events import JobEvent, parse_event
from tuning.jobs import AttemptEnd, AttemptEnding, JobStatus, utcnow
from tuning.launchers import ExecutionState, ExecutionStatus
from tuning.reconciliation import Action, reconcile_jobs
from tuning.spec import JobReference

STALE = 60


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> Core:
    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(tmp_path / "secrets.json"))
    return start_core(unique, RECONCILE_STALE_SECONDS=str(STALE))


def published_events(core: Core, count: int) -> dict[str, JobEvent]:
    events = [parse_event(data) for data in core.pulled(core.events_subscription, count, 5)]
    return {event.job_id: event for event in events}


def test_one_pass_settles_every_kind_of_stuck_job(core):
    now = utcnow()
    long_ago, moments_ago = now - timedelta(seconds=STALE * 3), now - timedelta(seconds=5)
    ended = ExecutionStatus(
        state=ExecutionState.FAILED,
        message="attempt 0 was killed by SIGKILL (out of memory?)",
        finished_at=long_ago,
        attempts=1,
    )
    core.launcher.statuses.update(
        {
            "local-00000000000a": ended,
            "local-00000000000b": ExecutionStatus(state=ExecutionState.RUNNING),
            "local-00000000000c": ended,
            "local-00000000000d": ExecutionStatus(
                state=ExecutionState.FAILED, message="exit code 1", finished_at=moments_ago
            ),
            "local-00000000000e": ExecutionStatus(
                state=ExecutionState.CANCELLED, message="cancelled in the console"
            ),
        }
    )
    training = {"status": JobStatus.TRAINING, "attempt": 1, "dispatched_at": long_ago}
    jobs = [
        # Its execution was OOM-killed long ago and never said so: failed.
        make_job("killed", execution="local-00000000000a", last_event_at=long_ago, **training),
        # Silent, but its execution still runs: left alone.
        make_job("silent", execution="local-00000000000b", last_event_at=long_ago, **training),
        # Heard from moments ago: not even asked about.
        make_job("chatty", execution="local-00000000000c", last_event_at=moments_ago, **training),
        # Its execution just ended: its final event may still be on the way.
        make_job("ending", execution="local-00000000000d", last_event_at=long_ago, **training),
        # Cancelled behind the service's back.
        make_job("console", execution="local-00000000000e", last_event_at=long_ago, **training),
        # Its execution is gone altogether.
        make_job("vanished", execution="local-00000000000f", last_event_at=long_ago, **training),
        # Queued long ago and never picked up (its message dead-lettered): published again.
        make_job("forgotten", created_at=long_ago),
        # Claimed by a dispatcher that died before launching: published again.
        make_job("orphaned", created_at=long_ago, dispatch_claim="x", dispatch_claimed_at=long_ago),
        # Queued moments ago: dispatch is on it.
        make_job("fresh", created_at=moments_ago),
        # Running without a recorded execution, silent for long: nothing to ask, failed.
        make_job("unknown", status=JobStatus.PREPARING, created_at=long_ago),
        # Finished: never looked at.
        make_job("done", status=JobStatus.COMPLETED, created_at=long_ago),
    ]
    for job in jobs:
        core.services.jobs.create(job)

    report = reconcile_jobs(services=core.services, now=now)

    assert report.checked == 10
    assert sorted(report.jobs(Action.FAILED)) == ["killed", "unknown", "vanished"]
    assert report.jobs(Action.CANCELLED) == ["console"]
    assert report.jobs(Action.RUNNING) == ["silent"]
    assert sorted(report.jobs(Action.REQUEUED)) == ["forgotten", "orphaned"]
    assert report.errors == {}

    events = published_events(core, 4)
    assert sorted(events) == ["console", "killed", "unknown", "vanished"]
    killed = events["killed"]
    assert (killed.type.value, killed.source, killed.attempt) == ("failed", "reconcile", 1)
    assert killed.execution == "local-00000000000a"  # so the state machine does not ignore it
    error = killed.payload.error  # type: ignore[union-attr]
    assert error.type.value == "system"
    assert error.message == (
        "the trainer execution local-00000000000a ended (failed: attempt 0 was killed by "
        "SIGKILL (out of memory?)) without reporting a result"
    )
    assert "no longer exists" in events["vanished"].payload.error.message  # type: ignore[union-attr]
    assert events["console"].type.value == "cancelled"

    requeued = [
        JobReference.model_validate_json(data).job_id
        for data in core.pulled(core.requests_subscription, 2)
    ]
    assert sorted(requeued) == ["forgotten", "orphaned"]
    assert core.services.jobs.get("forgotten").requeued_at == now


def test_a_requeued_job_waits_a_full_threshold_before_the_next_requeue(core):
    long_ago = utcnow() - timedelta(seconds=STALE * 3)
    core.services.jobs.create(make_job("forgotten", created_at=long_ago))

    first = reconcile_jobs(services=core.services)
    second = reconcile_jobs(services=core.services)

    assert first.jobs(Action.REQUEUED) == ["forgotten"]
    assert second.jobs(Action.REQUEUED) == []


def test_a_running_execution_silent_past_the_stall_threshold_is_cancelled_and_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str
) -> None:
    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(tmp_path / "secrets.json"))
    core = start_core(unique, RECONCILE_STALE_SECONDS="60", RECONCILE_STALLED_SECONDS="3600")
    now = utcnow()
    running = ExecutionStatus(state=ExecutionState.RUNNING)
    core.launcher.statuses.update({"local-0000000000a1": running, "local-0000000000a2": running})
    training = {"status": JobStatus.TRAINING, "attempt": 0, "dispatched_at": now}
    core.services.jobs.create(
        make_job(
            "hung",
            execution="local-0000000000a1",
            last_event_at=now - timedelta(hours=2),
            **training,
        )
    )
    core.services.jobs.create(
        make_job(
            "quiet",  # silent past the stale threshold, not the stall one: left alone
            execution="local-0000000000a2",
            last_event_at=now - timedelta(minutes=30),
            **training,
        )
    )

    report = reconcile_jobs(services=core.services, now=now)

    assert report.jobs(Action.STALLED) == ["hung"]
    assert report.jobs(Action.RUNNING) == ["quiet"]
    assert core.launcher.cancelled == ["local-0000000000a1"]
    (event,) = published_events(core, 2).values()
    assert (event.job_id, event.type.value, event.execution) == (
        "hung",
        "failed",
        "local-0000000000a1",
    )
    error = event.payload.error  # type: ignore[union-attr]
    assert (error.type.value, error.code) == ("system", "execution_stalled")
    assert "reported nothing for 7200 s" in error.message


def test_without_a_stall_threshold_a_silent_running_execution_is_left_alone(core):
    core.launcher.statuses["local-0000000000a1"] = ExecutionStatus(state=ExecutionState.RUNNING)
    long_ago = utcnow() - timedelta(days=1)
    core.services.jobs.create(
        make_job(
            "slow",
            execution="local-0000000000a1",
            last_event_at=long_ago,
            status=JobStatus.TRAINING,
            dispatched_at=long_ago,
        )
    )

    report = reconcile_jobs(services=core.services)

    assert report.jobs(Action.RUNNING) == ["slow"]
    assert core.launcher.cancelled == []


def test_a_handoff_never_continued_is_requeued_not_failed(core):
    # The trainer handed off and its execution ended well; the continuation request was lost.
    long_ago = utcnow() - timedelta(seconds=STALE * 3)
    core.launcher.statuses["local-00000000000f"] = ExecutionStatus(
        state=ExecutionState.SUCCEEDED, message="attempt 0 succeeded", finished_at=long_ago
    )
    handoff = AttemptEnd(
        attempt=0,
        reason=AttemptEnding.DEADLINE,
        step=41,
        checkpoint_step=40,
        execution="local-00000000000f",
        at=long_ago,
    )
    core.services.jobs.create(
        make_job(
            "handed-off",
            created_at=long_ago,
            status=JobStatus.TRAINING,
            execution="local-00000000000f",
            executions=1,
            dispatched_at=long_ago,
            last_event_at=long_ago,
            handoff=handoff,
        )
    )

    first = reconcile_jobs(services=core.services)
    again = reconcile_jobs(services=core.services)

    assert first.jobs(Action.REQUEUED) == ["handed-off"]
    assert first.jobs(Action.FAILED) == []
    assert again.jobs(Action.REQUEUED) == []  # it waits a full threshold before asking again
    (data,) = core.pulled(core.requests_subscription, 1)
    assert JobReference.model_validate_json(data).job_id == "handed-off"
    job = core.services.jobs.get("handed-off")
    assert job.status is JobStatus.TRAINING and job.handoff == handoff
