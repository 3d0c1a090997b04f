"""Dispatch and the publisher's `owner` attribute: refused requests, foreign references, limits."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.emulator.event_core_fixtures import Core, make_job, start_core
from tuning.capacity import OWNERLESS, GpuSlots, owner_waiting_reason
from tuning.dispatching import DispatchOutcome, dispatch_message
from tuning.errors import CapacityError
from tuning.jobs import JobStatus
from tuning.spec import JobReference

REQUEST = {
    "processed_dataset_id": "dataset_abc123",
    "training_config": {"base_model_id": "google/gemma-3-1b-it", "method": "LoRA"},
}


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> Core:
    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(tmp_path / "secrets.json"))
    return start_core(unique, MAX_CONCURRENT_JOBS="4", MAX_CONCURRENT_JOBS_PER_OWNER="1")


def deliver(core: Core, body: dict, message_id: str, **attributes: str) -> DispatchOutcome:
    data = json.dumps(body).encode()
    try:
        result = dispatch_message(
            data=data, message_id=message_id, attributes=attributes, services=core.services
        )
    except CapacityError:
        return "at_capacity"  # type: ignore[return-value]
    return result.outcome


def all_job_ids(core: Core) -> set[str]:
    return {job.job_id for job in core.services.jobs.list_jobs(limit=100).jobs}


def test_a_request_naming_another_owners_outputs_is_acknowledged_and_leaves_nothing(core, caplog):
    foreign = core.settings.layout.merged_prefix("alices-job")
    body = {**REQUEST, "training_config": {**REQUEST["training_config"], "base_model_id": foreign}}

    with caplog.at_level(logging.ERROR, logger="tuning.dispatching"):
        outcome = deliver(core, body, "m-1", owner="bob@example.com")

    assert outcome is DispatchOutcome.REJECTED  # returned, not raised: acknowledged
    assert all_job_ids(core) == set()
    assert core.launcher.launched == []
    assert any("base_model_id" in record.getMessage() for record in caplog.records)


def test_a_reference_to_someone_elses_job_is_rejected_without_touching_it(core):
    core.services.jobs.create(make_job("alices-job", owner="alice@example.com"))
    before = core.services.jobs.get("alices-job")
    reference = JobReference(job_id="alices-job").model_dump(mode="json")

    as_bob = deliver(core, reference, "m-1", owner="bob@example.com")

    assert as_bob is DispatchOutcome.REJECTED
    assert core.services.jobs.get("alices-job") == before
    assert core.launcher.launched == []
    # Submit publishes references without an owner: those dispatch as before, and so does
    # a publisher naming the job's own owner.
    assert deliver(core, reference, "m-2", owner="alice@example.com") is DispatchOutcome.LAUNCHED


def test_a_reference_without_an_owner_attribute_dispatches(core):
    core.services.jobs.create(make_job("alices-job", owner="alice@example.com"))
    reference = JobReference(job_id="alices-job").model_dump(mode="json")

    assert deliver(core, reference, "m-1") is DispatchOutcome.LAUNCHED


@pytest.mark.parametrize(
    "owner", ["bob@example.com\nroot", "b" * 100 * 1024, "bob example", "ann\x00", "é@x.com"]
)
def test_an_invalid_owner_attribute_is_acknowledged_rejected_and_not_echoed(core, caplog, owner):
    with caplog.at_level(logging.INFO, logger="tuning"):
        request = deliver(core, REQUEST, "m-1", owner=owner)
        core.services.jobs.create(make_job("a-job"))
        reference = deliver(
            core, JobReference(job_id="a-job").model_dump(mode="json"), "m-2", owner=owner
        )

    assert request is reference is DispatchOutcome.REJECTED
    assert all_job_ids(core) == {"a-job"}
    assert core.services.jobs.get("a-job").status is JobStatus.QUEUED
    assert core.launcher.launched == []
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "owner" in logged
    assert owner not in logged
    assert max(len(record.getMessage()) for record in caplog.records) < 2000


def test_an_empty_owner_attribute_counts_as_none(core):
    outcome = deliver(core, REQUEST, "m-1", owner="")

    assert outcome is DispatchOutcome.LAUNCHED
    ((job_id, _),) = core.launcher.launched
    assert core.services.jobs.get(job_id).owner is None


def test_ownerless_published_jobs_share_one_owner_slot_allowance(core):
    first = deliver(core, REQUEST, "m-1")
    second = deliver(core, REQUEST, "m-2")
    someone = deliver(core, REQUEST, "m-3", owner="ann@example.com")

    # The limit is 1 per owner: the second owner-less job waits though slots are free.
    assert (first, second, someone) == (
        DispatchOutcome.LAUNCHED,
        "at_capacity",
        DispatchOutcome.LAUNCHED,
    )
    waiting = [job for job in core.services.jobs.list_jobs(limit=10).jobs if job.execution is None]
    assert [(job.owner, job.status_reason) for job in waiting] == [(None, owner_waiting_reason(1))]
    slots = GpuSlots.for_tier(core.services.jobs, core.settings, core.settings.tiers[0]).slots()
    assert sorted(slots.owners.values()) == sorted([OWNERLESS, "ann@example.com"])
