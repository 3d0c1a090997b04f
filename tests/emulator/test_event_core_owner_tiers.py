"""The per-owner slot limit counts an owner's running jobs on every GPU tier together
(review finding F3), and stays exact when one owner's claims on two tiers race."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from tests.emulator.event_core_fixtures import Core, make_job, start_core
from tests.unit.test_tiers import H100X8, L4
from tuning.capacity import ClaimOutcome, GpuSlots, owner_waiting_reason
from tuning.dispatching import DispatchOutcome, dispatch_job
from tuning.errors import CapacityError
from tuning.gcp.firestore import JobStore
from tuning.jobs import JobStatus, Placement, utcnow


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> Core:
    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(tmp_path / "secrets.json"))
    tiers = [{**L4, "max_concurrent_jobs": 4}, {**H100X8, "max_concurrent_jobs": 4}]
    return start_core(unique, GPU_TIERS=json.dumps(tiers), MAX_CONCURRENT_JOBS_PER_OWNER="1")


def on(tier: str) -> Placement:
    return Placement(tier=tier, gpu_type="g", gpu_memory_bytes=1)


def dispatch_or_capacity(core: Core, job_id: str) -> DispatchOutcome | str:
    try:
        return dispatch_job(job_id, services=core.services).outcome
    except CapacityError:
        return "at_capacity"


def test_one_owner_cannot_hold_the_limit_on_each_tier(core: Core) -> None:
    for job_id, tier, owner in (
        ("ann-big", "h100x8", "ann"),
        ("ann-small", "l4", "ann"),
        ("bob-small", "l4", "bob"),
    ):
        core.services.jobs.create(make_job(job_id, owner=owner, placement=on(tier)))

    outcomes = {
        job_id: dispatch_or_capacity(core, job_id)
        for job_id in ("ann-big", "ann-small", "bob-small")
    }

    # Ann holds her one slot on the H100 tier: her L4 job waits although L4 slots are free.
    assert outcomes == {
        "ann-big": DispatchOutcome.LAUNCHED,
        "ann-small": "at_capacity",
        "bob-small": DispatchOutcome.LAUNCHED,
    }
    assert core.services.jobs.get("ann-small").status_reason == owner_waiting_reason(1)
    core.services.jobs.update(
        "ann-big", lambda job: job.model_copy(update={"status": JobStatus.COMPLETED})
    )
    # Her H100 job is over: the L4 claim drops it from the count (the H100 tier's document
    # still lists it until a claim there prunes it).
    assert dispatch_or_capacity(core, "ann-small") == DispatchOutcome.LAUNCHED


def test_one_owners_concurrent_claims_on_two_tiers_take_one_slot(core: Core) -> None:
    """Separate stores and locks, as two dispatch instances: the transactions alone decide."""
    rounds = [f"owner-{number}@example.com" for number in range(4)]
    for owner in rounds:
        core.services.jobs.create(make_job(f"{owner[:7]}-l4", owner=owner, placement=on("l4")))
        core.services.jobs.create(
            make_job(f"{owner[:7]}-h100", owner=owner, placement=on("h100x8"))
        )
    instances = {}
    for tier in core.settings.tiers:
        store = JobStore(core.settings.project_id, collection=core.settings.jobs_collection)
        slots = GpuSlots.for_tier(store, core.settings, tier)
        slots._lock = threading.Lock()  # not the process-wide one: contend in Firestore
        instances[tier.name] = slots

    def claim(pair: tuple[str, str]) -> ClaimOutcome:
        tier, job_id = pair
        return (
            instances[tier]
            .claim(job_id, claim_id=job_id, now=utcnow(), claim_timeout=timedelta(minutes=1))
            .outcome
        )

    for owner in rounds:
        pairs = [("l4", f"{owner[:7]}-l4"), ("h100x8", f"{owner[:7]}-h100")]
        with ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = list(pool.map(claim, pairs))

        assert sorted(outcomes) == [ClaimOutcome.CLAIMED, ClaimOutcome.OWNER_AT_LIMIT], owner
    held = {**instances["l4"].slots().owners, **instances["h100x8"].slots().owners}
    assert sorted(held.values()) == sorted(rounds)  # one slot per owner over both tiers
