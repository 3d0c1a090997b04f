"""Dispatch continues a job that handed off from its execution: on the emulators."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.emulator.event_core_fixtures import Core, make_job, start_core
from tuning.capacity import CONTINUING_REASON, GpuSlots
from tuning.dispatching import TOO_LONG, DispatchOutcome, dispatch_job
from tuning.errors import CapacityError, TransientError
from tuning.events import FailedEvent, parse_event
from tuning.jobs import AttemptEnd, AttemptEnding, ErrorType, JobStatus, Progress, utcnow


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> Core:
    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(tmp_path / "secrets.json"))
    return start_core(
        unique, MAX_CONCURRENT_JOBS="1", RECONCILE_STALE_SECONDS="60", TRAINER_MAX_EXECUTIONS="3"
    )


def running_then_handed_off(core: Core, job_id: str, *, executions: int = 1) -> str:
    """Dispatch the job (it takes the one slot), then record its attempt's handoff."""
    core.services.jobs.create(make_job(job_id))
    first = dispatch_job(job_id, services=core.services)
    assert first.outcome is DispatchOutcome.LAUNCHED and first.execution is not None
    ended = AttemptEnd(
        attempt=2,
        reason=AttemptEnding.DEADLINE,
        step=90,
        checkpoint_step=90,
        execution=first.execution,
        at=utcnow(),
    )
    core.services.jobs.update(
        job_id,
        lambda job: job.model_copy(
            update={
                "status": JobStatus.TRAINING,
                "attempt": 2,
                "executions": executions,
                "handoff": ended,
                "progress": Progress(step=90, total_steps=400),
            }
        ),
    )
    return first.execution


def test_a_handed_off_job_continues_in_a_new_execution_keeping_its_slot(core):
    first = running_then_handed_off(core, "long")
    core.services.jobs.create(make_job("waiting"))
    with pytest.raises(CapacityError):  # the one slot is the long job's
        dispatch_job("waiting", services=core.services)

    result = dispatch_job("long", services=core.services)
    again = dispatch_job("long", services=core.services)  # a duplicate delivery

    assert result.outcome is DispatchOutcome.LAUNCHED and result.execution != first
    assert again.outcome is DispatchOutcome.NOT_QUEUED  # running again: nothing to start
    job = core.services.jobs.get("long")
    assert (job.execution, job.executions, job.handoff) == (result.execution, 2, None)
    assert job.status_reason == CONTINUING_REASON
    assert [launched for launched, _ in core.launcher.launched] == ["long", "long"]
    assert set(
        GpuSlots.for_tier(core.services.jobs, core.settings, core.settings.tiers[0]).holders()
    ) == {"long"}


def test_a_failed_continuation_launch_keeps_the_slot_and_can_be_retried(core):
    running_then_handed_off(core, "long")
    core.launcher.error = TransientError("Cloud Run call failed: ServiceUnavailable")

    with pytest.raises(TransientError):
        dispatch_job("long", services=core.services)

    job = core.services.jobs.get("long")
    assert job.handoff is not None and job.dispatch_claim is None
    assert set(
        GpuSlots.for_tier(core.services.jobs, core.settings, core.settings.tiers[0]).holders()
    ) == {"long"}
    core.launcher.error = None
    assert dispatch_job("long", services=core.services).outcome is DispatchOutcome.LAUNCHED


def test_a_job_that_hands_off_from_its_last_execution_fails_as_too_long(core):
    running_then_handed_off(core, "endless", executions=3)

    result = dispatch_job("endless", services=core.services)

    assert result.outcome is DispatchOutcome.REJECTED
    assert len(core.launcher.launched) == 1  # only its first execution, never a fourth
    (data,) = core.pulled(core.events_subscription, 1)
    event = parse_event(data)
    assert isinstance(event, FailedEvent) and event.source == "dispatch"
    error = event.payload.error
    assert (error.type, error.code) == (ErrorType.USER, TOO_LONG)
    assert "3 executions" in error.message and "step 90 of 400" in error.message
    assert "max_steps" in error.message
