"""Reconcile and paused or pausing jobs, on the emulators: a pausing job whose trainer died
or hung ends paused (not failed); a paused one is never touched; a resumed one is queued."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.emulator.event_core_fixtures import Core, make_job, start_core
from tuning.event_sink import record_event
from tuning.events import HandoffEvent, JobEvent, parse_event
from tuning.jobs import AttemptEnd, AttemptEnding, JobStatus, Progress, utcnow
from tuning.launchers import ExecutionState, ExecutionStatus
from tuning.reconciliation import Action, reconcile_jobs
from tuning.spec import JobReference

STALE = 60


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> Core:
    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(tmp_path / "secrets.json"))
    return start_core(unique, RECONCILE_STALE_SECONDS=str(STALE), RECONCILE_STALLED_SECONDS="3600")


def published(core: Core, count: int) -> dict[str, JobEvent]:
    events = [parse_event(data) for data in core.pulled(core.events_subscription, count, 5)]
    return {event.job_id: event for event in events}


def test_a_pausing_job_whose_trainer_died_or_hung_is_paused_for_it(core):
    now = utcnow()
    long_ago = now - timedelta(hours=2)
    core.launcher.statuses.update(
        {
            "local-0000000000b1": ExecutionStatus(
                state=ExecutionState.FAILED, message="killed", finished_at=long_ago
            ),
            "local-0000000000b2": ExecutionStatus(state=ExecutionState.RUNNING),
        }
    )
    pausing = {
        "status": JobStatus.TRAINING,
        "executions": 1,
        "dispatched_at": long_ago,
        "last_event_at": long_ago,
        "pause_requested_at": long_ago,
        "progress": Progress(step=30, total_steps=100),
    }
    core.services.jobs.create(make_job("died", execution="local-0000000000b1", **pausing))
    core.services.jobs.create(make_job("hung", execution="local-0000000000b2", **pausing))

    report = reconcile_jobs(services=core.services, now=now)

    assert sorted(report.jobs(Action.PAUSED)) == ["died", "hung"]
    assert report.jobs(Action.FAILED) == [] and report.jobs(Action.STALLED) == []
    assert core.launcher.cancelled == ["local-0000000000b2"]  # the hung one is stopped first
    events = published(core, 2)
    for job_id in ("died", "hung"):
        event = events[job_id]
        assert isinstance(event, HandoffEvent) and event.source == "reconcile"
        assert event.payload.reason is AttemptEnding.PAUSED
        assert (event.payload.step, event.payload.checkpoint_step) == (30, None)
        # What on_job_event makes of it: paused, to go on from the latest checkpoint.
        transition = record_event(event, message_id="m", services=core.services)
        assert transition is not None and transition.after.status is JobStatus.PAUSED
        assert "latest complete checkpoint" in (transition.after.status_reason or "")


def test_paused_jobs_are_at_rest_and_resumed_ones_are_queued_again(core):
    now = utcnow()
    long_ago = now - timedelta(days=3)
    ended = AttemptEnd(attempt=0, reason=AttemptEnding.PAUSED, step=5, execution="local-1")
    # Its execution ended long ago: a paused job is neither failed nor relaunched.
    core.launcher.statuses["local-0000000000c1"] = ExecutionStatus(
        state=ExecutionState.SUCCEEDED, finished_at=long_ago
    )
    core.services.jobs.create(
        make_job(
            "resting",
            status=JobStatus.PAUSED,
            execution="local-0000000000c1",
            executions=1,
            paused_at=long_ago,
            last_attempt_end=ended,
            created_at=long_ago,
            last_event_at=long_ago,
        )
    )
    # Resumed, but its dispatch request was lost: published again like any queued job.
    core.services.jobs.create(
        make_job(
            "resumed",
            status=JobStatus.QUEUED,
            executions=1,
            paused_at=long_ago,
            last_attempt_end=ended,
            created_at=long_ago,
        )
    )

    report = reconcile_jobs(services=core.services, now=now)

    assert report.checked == 1  # the paused job is not even listed
    assert report.jobs(Action.REQUEUED) == ["resumed"]
    assert core.services.jobs.get("resting").status is JobStatus.PAUSED
    assert core.launcher.cancelled == []
    assert core.pulled(core.events_subscription, 1, 2) == []
    (request,) = core.pulled(core.requests_subscription, 1)
    assert JobReference.model_validate_json(request).job_id == "resumed"
