"""The on_job_event core on the emulators: apply, drop, ignore, and announce the end once."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from tests.emulator.event_core_fixtures import T0, Core, make_job, start_core
from tuning.errors import TuningError
from tuning.event_sink import record_job_event
from tuning.events import CompletedEvent, CompletedPayload, PreparingEvent
from tuning.jobs import Artifacts, JobStatus
from tuning.services import Services


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> Core:
    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(tmp_path / "secrets.json"))
    return start_core(unique)


def completed(job_id: str) -> bytes:
    event = CompletedEvent(
        job_id=job_id,
        attempt=0,
        seq=9,
        timestamp=T0 + timedelta(minutes=5),
        payload=CompletedPayload(artifacts=Artifacts(adapter_path="gs://m/a/")),
    )
    return event.model_dump_json().encode()


def test_an_event_moves_its_job(core):
    core.services.jobs.create(make_job("job-a"))
    event = PreparingEvent(job_id="job-a", attempt=0, seq=0, timestamp=T0)

    transition = record_job_event(
        data=event.model_dump_json().encode(), message_id="1", services=core.services
    )

    assert transition is not None and transition.changed
    assert core.services.jobs.get("job-a").status is JobStatus.PREPARING


def test_the_end_of_a_job_is_announced_once_however_often_delivered(core):
    core.services.jobs.create(make_job("job-a", status=JobStatus.TRAINING))

    for message_id in ("1", "2", "3"):
        record_job_event(data=completed("job-a"), message_id=message_id, services=core.services)

    notices = [json.loads(data) for data in core.pulled(core.notifications_subscription, 3, 3)]
    assert len(notices) == 1
    assert notices[0]["job_id"] == "job-a"
    assert (notices[0]["status"], notices[0]["previous_status"]) == ("completed", "training")
    assert notices[0]["artifacts"]["adapter_path"] == "gs://m/a/"


def test_an_event_for_a_deleted_job_is_dropped(core):
    assert record_job_event(data=completed("gone"), message_id="1", services=core.services) is None
    assert core.services.jobs.find("gone") is None


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b'{"type": "completed"}', b'{"type": "teleported", "job_id": "job-a"}'],
)
def test_an_invalid_event_is_acknowledged_without_effect(core, data):
    core.services.jobs.create(make_job("job-a"))

    assert record_job_event(data=data, message_id="1", services=core.services) is None
    assert core.services.jobs.get("job-a").status is JobStatus.QUEUED


def test_a_failed_notification_ends_nothing_and_the_redelivery_ends_and_notifies(core, unique):
    core.services.jobs.create(make_job("job-a", status=JobStatus.TRAINING))
    # A topic that does not exist: the emulator refuses the publish, as Pub/Sub would
    # refuse one during an outage or after a misconfiguration.
    settings = core.settings.model_copy(update={"notifications_topic": f"absent-{unique}"})
    failing = Services(settings, jobs=core.services.jobs, launcher=core.launcher)

    with pytest.raises(TuningError):
        record_job_event(data=completed("job-a"), message_id="1", services=failing)

    # Nothing committed: the job is not ended, so the redelivered event still ends it...
    assert core.services.jobs.get("job-a").status is JobStatus.TRAINING
    assert core.services.jobs.list_events("job-a").events == []
    transition = record_job_event(data=completed("job-a"), message_id="1", services=core.services)

    # ...and this time the end is both recorded and announced.
    assert transition is not None and transition.became_terminal
    notices = [json.loads(data) for data in core.pulled(core.notifications_subscription, 3, 3)]
    assert [(n["job_id"], n["status"], n["previous_status"]) for n in notices] == [
        ("job-a", "completed", "training")
    ]
