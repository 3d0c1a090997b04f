"""Events the job store cannot hold fail their job visibly; they never loop through redelivery.

Through the real on_job_event core (`record_job_event`) on the Firestore emulator: what the
event path bounds before writing (integers beyond 64 bits, deep nesting, oversized payloads,
reserved or empty names) and what Firestore itself refuses when an event gets past them.
A malformed event (not an event at all) is still acknowledged without effect.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.emulator.event_core_fixtures import T0, Core, make_job, start_core
from tuning.event_sink import record_event, record_job_event
from tuning.events import (
    MAX_EVENT_PAYLOAD_BYTES,
    EvaluationEvent,
    EvaluationPayload,
    EventType,
)
from tuning.gcp.firestore import UnwritableError
from tuning.jobs import ErrorType, JobStatus, Metrics

EXECUTION = "local-000000000001"


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> Core:
    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(tmp_path / "secrets.json"))
    started = start_core(unique)
    started.services.jobs.create(make_job("job-a", status=JobStatus.PREPARING, execution=EXECUTION))
    return started


def raw_event(kind: str, payload: dict[str, Any], **envelope: Any) -> bytes:
    event = {
        "type": kind,
        "job_id": "job-a",
        "attempt": 0,
        "seq": 3,
        "timestamp": (T0 + timedelta(minutes=1)).isoformat(),
        "execution": EXECUTION,
        "payload": payload,
        **envelope,
    }
    return json.dumps(event).encode()


def nested(depth: int) -> Any:
    value: Any = 1.0
    for _ in range(depth):
        value = {"inner": value}
    return value


UNSTORABLE = {
    "step beyond 64 bits": raw_event("progress", {"step": 2**64, "total_steps": 10}),
    "total steps beyond 64 bits": raw_event("training", {"total_steps": 2**63}),
    "dataset rows beyond 64 bits": raw_event("training", {"dataset_stats": {"train_rows": 10**30}}),
    "metric nested 30 deep": raw_event("evaluation", {"metrics": {"custom": nested(30)}}),
    "metric of 2 MiB": raw_event("evaluation", {"metrics": {"notes": "x" * 2 * 1024 * 1024}}),
    "reserved metric name": raw_event("evaluation", {"metrics": {"__name__": 1.0}}),
    "empty metric name": raw_event("evaluation", {"metrics": {"": 1.0}}),
    "a huge integer metric": raw_event("evaluation", {"metrics": {"tokens": 2**70}}),
}


@pytest.mark.parametrize("data", UNSTORABLE.values(), ids=UNSTORABLE.keys())
def test_an_event_the_store_cannot_hold_fails_its_job_once(core: Core, data: bytes) -> None:
    first = record_job_event(data=data, message_id="1", services=core.services)
    again = record_job_event(data=data, message_id="1", services=core.services)  # redelivered

    assert first is not None and first.became_terminal  # returned: acknowledged
    assert again is not None and not again.changed
    job = core.services.jobs.get("job-a")
    assert job.status is JobStatus.FAILED
    assert job.error is not None and job.error.type is ErrorType.SYSTEM
    assert job.error.code == "event_unrecordable"
    assert "could not be recorded" in job.error.message
    assert len(job.error.message) <= 4000
    notices = [json.loads(n) for n in core.pulled(core.notifications_subscription, 2, 3)]
    assert [(n["job_id"], n["status"]) for n in notices] == [("job-a", "failed")]


def test_the_cause_is_named(core: Core) -> None:
    record_job_event(data=UNSTORABLE["step beyond 64 bits"], message_id="1", services=core.services)

    error = core.services.jobs.get("job-a").error
    assert error is not None
    assert "progress" in error.message and "payload.step" in error.message
    assert "64-bit" in error.message


def constructed(event_id: str, metrics: Metrics) -> EvaluationEvent:
    """An event built without validation, as a producer's bug or a new field might be."""
    return EvaluationEvent.model_construct(
        event_id=event_id,
        job_id="job-a",
        attempt=0,
        seq=7,
        timestamp=T0 + timedelta(minutes=2),
        source="trainer",
        execution=EXECUTION,
        type=EventType.EVALUATION,
        payload=EvaluationPayload.model_construct(metrics=metrics),
    )


def test_a_write_firestore_refuses_fails_the_job_and_is_acknowledged(core: Core) -> None:
    # Within the payload bounds, but a history entry named like Firestore's reserved ids
    # (InvalidArgument): the store's own refusal ends the same way, not in a redelivery loop.
    # (The emulator does not enforce the 1 MiB document limit, which would end here too.)
    event = constructed("__job-a__", Metrics(step=1))

    transition = record_event(event, message_id="1", services=core.services)

    assert transition is not None and transition.became_terminal
    job = core.services.jobs.get("job-a")
    assert job.status is JobStatus.FAILED and job.error is not None
    assert job.error.code == "event_unrecordable"
    assert "Firestore refused the write" in job.error.message
    assert "InvalidArgument" in job.error.message


def test_the_store_refuses_with_its_own_error_and_writes_nothing(core: Core) -> None:
    event = constructed("job-a-trainer-a0-s7", Metrics.model_construct(step=1, tokens=2**64))

    with pytest.raises(UnwritableError, match="Firestore refused the write"):
        core.services.jobs.apply_event(event)

    assert core.services.jobs.get("job-a").status is JobStatus.PREPARING
    assert core.services.jobs.list_events("job-a").events == []


def test_text_that_cannot_be_encoded_fails_the_job(core: Core) -> None:
    # A lone surrogate: no JSON parser lets one in, and no client can encode it.
    event = constructed("job-a-trainer-a0-s8", Metrics.model_construct(step=1, note="\ud800"))

    transition = record_event(event, message_id="1", services=core.services)

    assert transition is not None and transition.became_terminal
    assert core.services.jobs.get("job-a").error.code == "event_unrecordable"  # type: ignore[union-attr]


def test_a_bad_event_of_an_older_attempt_leaves_the_current_attempt_alone(core: Core) -> None:
    core.services.jobs.update("job-a", lambda job: job.model_copy(update={"attempt": 1}))
    data = raw_event("progress", {"step": 2**64}, attempt=0)

    record_job_event(data=data, message_id="1", services=core.services)

    job = core.services.jobs.get("job-a")
    assert (job.status, job.attempt, job.error) == (JobStatus.PREPARING, 1, None)


def test_a_payload_at_the_size_bound_is_recorded(core: Core) -> None:
    notes = "x" * (MAX_EVENT_PAYLOAD_BYTES - 200)
    data = raw_event("evaluation", {"metrics": {"notes": notes, "step": 1}})

    record_job_event(data=data, message_id="1", services=core.services)

    job = core.services.jobs.get("job-a")
    assert job.status is JobStatus.TRAINING
    assert job.metrics is not None and job.metrics.model_extra == {"notes": notes}


@pytest.mark.parametrize(
    "data",
    [
        b'{"type": "progress", "job_id": "job-a", "payload": {"step": 1e400}}',  # no attempt
        raw_event("progress", {"step": 2**64}, job_id="../job-a"),
        raw_event("progress", {"step": 2**64}, attempt=2**64),
        raw_event("preparing", {}, event_id="job-a/../other"),  # names no history entry
    ],
)
def test_a_malformed_event_is_acknowledged_without_effect(core, data):
    assert record_job_event(data=data, message_id="1", services=core.services) is None
    assert core.services.jobs.get("job-a").status is JobStatus.PREPARING
