"""The dispatch core on the emulators: claims, GPU slots, launch failures, full requests."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from tests.emulator.event_core_fixtures import Core, make_job, start_core
from tuning.capacity import ClaimOutcome, GpuSlots, owner_waiting_reason, waiting_reason
from tuning.dispatching import STARTED, DispatchOutcome, dispatch_job, dispatch_message
from tuning.errors import CapacityError, TransientError, TuningError
from tuning.events import CancelledEvent, parse_event
from tuning.gcp.firestore import JobStore
from tuning.jobs import JobRecord, JobStatus, utcnow
from tuning.spec import JobReference, parse_train_request
from tuning.submission import job_id_for

REQUEST = {
    "processed_dataset_id": "dataset_abc123",
    "training_config": {"base_model_id": "google/gemma-3-1b-it", "method": "LoRA"},
}


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> Core:
    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(tmp_path / "secrets.json"))
    return start_core(unique, MAX_CONCURRENT_JOBS="2", RECONCILE_STALE_SECONDS="60")


def queued(core: Core, *job_ids: str) -> None:
    for job_id in job_ids:
        core.services.jobs.create(make_job(job_id))


def dispatch_or_capacity(core: Core, job_id: str) -> DispatchOutcome | str:
    try:
        return dispatch_job(job_id, services=core.services).outcome
    except CapacityError:
        return "at_capacity"


def test_concurrent_deliveries_of_one_job_launch_it_once(core):
    queued(core, "job-a")

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda _: dispatch_job("job-a", services=core.services), range(8)))

    assert sorted(result.outcome for result in outcomes) == [
        *[DispatchOutcome.ALREADY_DISPATCHED] * 7,
        DispatchOutcome.LAUNCHED,
    ]
    ((_, execution),) = core.launcher.launched
    job = core.services.jobs.get("job-a")
    assert (job.execution, job.status_reason) == (execution, STARTED)
    assert job.dispatched_at is not None and job.status is JobStatus.QUEUED


def test_capacity_is_strict_under_concurrent_deliveries(core):
    job_ids = [f"job-{n}" for n in range(6)]
    queued(core, *job_ids)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = pool.map(lambda job_id: dispatch_or_capacity(core, job_id), job_ids)
        outcomes = dict(zip(job_ids, results, strict=True))

    launched = [job_id for job_id, outcome in outcomes.items() if outcome == "launched"]
    waiting = [job_id for job_id, outcome in outcomes.items() if outcome == "at_capacity"]
    assert (len(launched), len(waiting)) == (2, 4)
    assert {core.services.jobs.get(j).status_reason for j in waiting} == {waiting_reason(2, 2)}

    # A job that ends frees its slot for the next delivery, and only one slot.
    core.services.jobs.update(
        launched[0], lambda job: job.model_copy(update={"status": JobStatus.COMPLETED})
    )
    assert dispatch_or_capacity(core, waiting[0]) == DispatchOutcome.LAUNCHED
    assert dispatch_or_capacity(core, waiting[1]) == "at_capacity"
    slots = GpuSlots.for_tier(core.services.jobs, core.settings, core.settings.tiers[0])
    assert set(slots.holders()) == {launched[1], waiting[0]}


def test_one_owner_cannot_take_every_slot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str
) -> None:
    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(tmp_path / "secrets.json"))
    core = start_core(unique, MAX_CONCURRENT_JOBS="3", MAX_CONCURRENT_JOBS_PER_OWNER="2")
    for job_id, owner in (("ann-1", "ann"), ("ann-2", "ann"), ("ann-3", "ann"), ("bob-1", "bob")):
        core.services.jobs.create(make_job(job_id, owner=owner))

    outcomes = {
        job_id: dispatch_or_capacity(core, job_id)
        for job_id in ("ann-1", "ann-2", "ann-3", "bob-1")
    }

    # Ann's third job waits although a slot is free; Bob's takes it.
    assert outcomes == {
        "ann-1": DispatchOutcome.LAUNCHED,
        "ann-2": DispatchOutcome.LAUNCHED,
        "ann-3": "at_capacity",
        "bob-1": DispatchOutcome.LAUNCHED,
    }
    assert core.services.jobs.get("ann-3").status_reason == owner_waiting_reason(2)
    core.services.jobs.update(
        "ann-1", lambda job: job.model_copy(update={"status": JobStatus.FAILED})
    )
    assert dispatch_or_capacity(core, "ann-3") == DispatchOutcome.LAUNCHED


def test_two_dispatch_instances_never_share_the_last_slot(core, unique):
    """Separate stores and locks, as two function instances: the transaction alone decides."""
    queued(core, "job-x", "job-y")
    instances = []
    for _ in range(2):
        store = JobStore(core.settings.project_id, collection=core.settings.jobs_collection)
        slots = GpuSlots(store, pool="gpu", limit=1)
        slots._lock = threading.Lock()  # not the process-wide one: contend in Firestore
        instances.append(slots)

    def claim(pair: tuple[GpuSlots, str]) -> ClaimOutcome:
        slots, job_id = pair
        claim = slots.claim(
            job_id, claim_id=job_id, now=utcnow(), claim_timeout=timedelta(minutes=1)
        )
        return claim.outcome

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(claim, zip(instances, ["job-x", "job-y"], strict=True)))

    assert sorted(outcomes) == [ClaimOutcome.AT_CAPACITY, ClaimOutcome.CLAIMED]
    assert len(instances[0].holders()) == 1


def cancel_now(core: Core) -> Callable[[JobRecord], None]:
    def cancel(job: JobRecord) -> None:
        event = CancelledEvent(
            job_id=job.job_id, attempt=0, seq=0, timestamp=utcnow(), source="user"
        )
        core.services.jobs.apply_event(event)

    return cancel


def test_a_job_cancelled_during_launch_has_its_new_execution_stopped(core):
    queued(core, "job-a")
    core.launcher.during_launch = cancel_now(core)

    result = dispatch_job("job-a", services=core.services)

    assert result.outcome is DispatchOutcome.CANCELLED_BEFORE_START
    assert core.launcher.cancelled == [result.execution]
    job = core.services.jobs.get("job-a")
    assert job.status is JobStatus.CANCELLED and job.execution is None


def test_a_job_deleted_during_launch_has_its_new_execution_stopped(core):
    queued(core, "job-a")
    core.launcher.during_launch = lambda job: core.services.jobs.delete(job.job_id) and None

    result = dispatch_job("job-a", services=core.services)

    assert result.outcome is DispatchOutcome.CANCELLED_BEFORE_START
    assert core.launcher.cancelled == [result.execution]


def test_a_transient_launch_failure_gives_the_claim_and_the_slot_back(core):
    queued(core, "job-a")
    core.launcher.error = TransientError("Cloud Run call failed: ServiceUnavailable")

    with pytest.raises(TransientError):
        dispatch_job("job-a", services=core.services)

    job = core.services.jobs.get("job-a")
    assert job.dispatch_claim is None and job.execution is None
    assert "retried" in (job.status_reason or "")
    assert (
        GpuSlots.for_tier(core.services.jobs, core.settings, core.settings.tiers[0]).holders() == {}
    )
    core.launcher.error = None
    assert dispatch_job("job-a", services=core.services).outcome is DispatchOutcome.LAUNCHED


def test_a_launch_that_can_never_work_fails_the_job_with_a_system_error(core):
    queued(core, "job-a")
    core.launcher.error = TuningError("Cloud Run job gemma-trainer not found")

    result = dispatch_job("job-a", services=core.services)

    assert result.outcome is DispatchOutcome.REJECTED
    (event,) = [parse_event(data) for data in core.pulled(core.events_subscription, 1)]
    assert (event.type.value, event.source, event.job_id) == ("failed", "dispatch", "job-a")
    assert event.payload.error.type.value == "system"  # type: ignore[union-attr]
    assert "not found" in event.payload.error.message  # type: ignore[union-attr]


@pytest.mark.parametrize("status", [JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.TRAINING])
def test_jobs_that_are_not_queued_are_never_launched(core, status):
    core.services.jobs.create(make_job("job-a", status=status))

    result = dispatch_job("job-a", services=core.services)

    assert result.outcome is DispatchOutcome.NOT_QUEUED
    assert core.launcher.launched == []


def test_a_reference_to_an_unknown_job_is_acknowledged(core):
    data = JobReference(job_id="no-such-job").model_dump_json().encode()

    result = dispatch_message(data=data, message_id="5", attributes={}, services=core.services)

    assert result.outcome is DispatchOutcome.UNKNOWN_JOB
    assert core.launcher.launched == []


def test_a_full_request_makes_one_job_per_message_however_often_delivered(core):
    data = json.dumps(REQUEST).encode()

    first = dispatch_message(
        data=data, message_id="m-1", attributes={"owner": "svc@x.com"}, services=core.services
    )
    again = dispatch_message(
        data=data, message_id="m-1", attributes={"owner": "svc@x.com"}, services=core.services
    )
    other = dispatch_message(data=data, message_id="m-2", attributes={}, services=core.services)

    assert (first.outcome, again.outcome) == (
        DispatchOutcome.LAUNCHED,
        DispatchOutcome.ALREADY_DISPATCHED,
    )
    assert first.job_id == again.job_id != other.job_id
    job = core.services.jobs.get(first.job_id or "")
    assert job.owner == "svc@x.com"
    assert core.services.storage.exists(core.settings.layout.config_uri(job.job_id))


def test_a_full_request_with_a_request_id_survives_a_republish(core):
    data = json.dumps({**REQUEST, "request_id": "nightly-2026-01-01"}).encode()

    first = dispatch_message(data=data, message_id="m-1", attributes={}, services=core.services)
    republished = dispatch_message(
        data=data, message_id="m-9", attributes={}, services=core.services
    )

    assert first.job_id == republished.job_id
    assert [job_id for job_id, _ in core.launcher.launched] == [first.job_id]
    request = parse_train_request(json.loads(data))
    assert first.job_id == job_id_for(request, owner=None, idempotency_key=None)


def test_an_invalid_request_is_recorded_as_a_failed_job_and_announced(core):
    data = json.dumps({**REQUEST, "processed_dataset_id": "../etc"}).encode()

    result = dispatch_message(data=data, message_id="m-3", attributes={}, services=core.services)
    again = dispatch_message(data=data, message_id="m-3", attributes={}, services=core.services)

    assert result.outcome is again.outcome is DispatchOutcome.REJECTED
    job = core.services.jobs.get(result.job_id or "")
    assert job.status is JobStatus.FAILED
    assert job.error is not None and job.error.code == "invalid_request"
    notices = [json.loads(data) for data in core.pulled(core.notifications_subscription, 2, 3)]
    assert [(n["job_id"], n["status"]) for n in notices] == [(job.job_id, "failed")]


def test_a_claim_whose_dispatcher_died_is_taken_over(core):
    long_ago = utcnow() - timedelta(minutes=10)
    core.services.jobs.create(
        make_job("job-a", dispatch_claim="dead-dispatcher", dispatch_claimed_at=long_ago)
    )

    result = dispatch_job("job-a", services=core.services)

    assert result.outcome is DispatchOutcome.LAUNCHED
    assert core.services.jobs.get("job-a").dispatch_claim != "dead-dispatcher"


def test_each_tier_has_its_own_slots(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str
) -> None:
    from tests.unit.test_tiers import H100X8, L4
    from tuning.jobs import Placement

    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(tmp_path / "secrets.json"))
    tiers = [{**L4, "max_concurrent_jobs": 1}, {**H100X8, "max_concurrent_jobs": 1}]
    core = start_core(unique, GPU_TIERS=json.dumps(tiers))

    def on(tier: str) -> Placement:
        return Placement(tier=tier, gpu_type="g", gpu_memory_bytes=1)

    for job_id, tier in (("small-1", "l4"), ("small-2", "l4"), ("big-1", "h100x8")):
        core.services.jobs.create(make_job(job_id, placement=on(tier)))

    outcomes = {
        job_id: dispatch_or_capacity(core, job_id) for job_id in ("small-1", "small-2", "big-1")
    }

    # The L4 tier's one slot is taken; the H100 tier's is another tier's, still free.
    assert outcomes == {
        "small-1": DispatchOutcome.LAUNCHED,
        "small-2": "at_capacity",
        "big-1": DispatchOutcome.LAUNCHED,
    }
    assert core.services.jobs.get("small-2").status_reason == waiting_reason(1, 1)
    with pytest.raises(CapacityError, match="1 of 1 slots of tier l4 are in use"):
        dispatch_job("small-2", services=core.services)
    holders = {
        tier.name: set(GpuSlots.for_tier(core.services.jobs, core.settings, tier).holders())
        for tier in core.settings.tiers
    }
    assert holders == {"l4": {"small-1"}, "h100x8": {"big-1"}}
