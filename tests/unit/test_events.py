"""Lifecycle events: parsing from JSON, the tagged union, and stable event ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tuning.errors import InvalidRequestError
from tuning.events import (
    STATUS_REACHED,
    TERMINAL_EVENT_TYPES,
    CancelledEvent,
    CancelledPayload,
    CompletedEvent,
    CompletedPayload,
    EvaluationEvent,
    EvaluationPayload,
    EventType,
    ExportingEvent,
    ExportingPayload,
    FailedEvent,
    FailedPayload,
    HandoffEvent,
    HandoffPayload,
    JobEvent,
    MessageEvent,
    MessagePayload,
    PreparingEvent,
    PreparingPayload,
    ProgressEvent,
    RestartedEvent,
    RestartedPayload,
    TrainingEvent,
    TrainingPayload,
    parse_event,
)
from tuning.jobs import (
    Artifacts,
    AttemptEnding,
    DatasetStats,
    ErrorType,
    JobError,
    JobStatus,
    Metrics,
    Progress,
)

JOB_ID = "training_ds_gemma-2b_abc"
WHEN = datetime(2025, 3, 1, 9, 30, 15, 123000, tzinfo=UTC)
COMMON: dict[str, Any] = {"job_id": JOB_ID, "attempt": 1, "seq": 7, "timestamp": WHEN}

EVENTS: list[JobEvent] = [
    PreparingEvent(**COMMON, payload=PreparingPayload(message="loading")),
    TrainingEvent(
        **COMMON,
        payload=TrainingPayload(
            total_steps=120,
            wandb_url="https://wandb.ai/t/p/runs/x",
            dataset_stats=DatasetStats(train_rows=900, eval_rows=100, train_tokens=123456),
        ),
    ),
    ProgressEvent(
        **COMMON,
        payload=Progress(
            step=12,
            total_steps=120,
            epoch=0.3,
            loss=1.25,
            learning_rate=1e-4,
            tokens_per_second=4321.5,
            eta_seconds=300,
        ),
    ),
    EvaluationEvent(
        **COMMON,
        payload=EvaluationPayload(
            metrics=Metrics(eval_loss=0.5, perplexity=1.6487, accuracy=0.8, step=12, rouge_l=0.4)  # type: ignore[call-arg]
        ),
    ),
    MessageEvent(**COMMON, payload=MessagePayload(level="warning", text="truncated 3 rows")),
    RestartedEvent(
        **COMMON,
        payload=RestartedPayload(resumed_from_step=10, checkpoint="gs://m/checkpoints/j/c-10/"),
    ),
    HandoffEvent(
        **COMMON,
        payload=HandoffPayload(
            reason=AttemptEnding.DEADLINE,
            step=41,
            checkpoint_step=40,
            checkpoint="gs://m/checkpoints/j/checkpoint-40/",
        ),
    ),
    ExportingEvent(**COMMON, payload=ExportingPayload(formats=["adapter", "gguf:q8_0"])),
    CompletedEvent(
        **COMMON,
        payload=CompletedPayload(
            progress=Progress(step=120, total_steps=120),
            metrics=Metrics(eval_loss=0.4),
            wandb_url="https://wandb.ai/t/p/runs/x",
            artifacts=Artifacts(
                adapter_path=f"gs://m/trained_adapters/{JOB_ID}/",
                gguf_files={"q8_0": f"gs://m/gguf_models/{JOB_ID}/model-q8_0.gguf"},
            ),
        ),
    ),
    FailedEvent(
        **COMMON,
        payload=FailedPayload(error=JobError(type=ErrorType.USER, message="row 4: no text")),
    ),
    CancelledEvent(**COMMON, source="user", payload=CancelledPayload(reason="not needed")),
]


def event_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "preparing",
        "job_id": JOB_ID,
        "attempt": 0,
        "seq": 0,
        "timestamp": "2025-03-01T09:30:15Z",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def test_every_event_type_is_covered_here():
    assert {event.type for event in EVENTS} == set(EventType)


@pytest.mark.parametrize("event", EVENTS, ids=[str(event.type) for event in EVENTS])
def test_event_round_trips_through_json_text(event: JobEvent):
    text = event.model_dump_json()

    parsed = parse_event(text)

    assert parsed == event
    assert type(parsed) is type(event)


@pytest.mark.parametrize("event", EVENTS, ids=[str(event.type) for event in EVENTS])
def test_event_round_trips_through_json_bytes_and_data(event: JobEvent):
    encoded = event.model_dump_json().encode()

    from_bytes = parse_event(encoded)
    from_data = parse_event(json.loads(encoded))

    assert from_bytes == event
    assert from_data == event


def test_event_with_default_payload_parses_without_one():
    parsed = parse_event(event_data(type="exporting"))

    assert isinstance(parsed, ExportingEvent)
    assert parsed.payload == ExportingPayload()
    assert parsed.source == "trainer"


def test_timestamp_keeps_its_offset_and_instant():
    parsed = parse_event(event_data(timestamp="2025-03-01T11:30:15+02:00"))

    assert parsed.timestamp == datetime(2025, 3, 1, 9, 30, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (event_data(type="exploded"), None),
        (event_data(type=None), None),
        (event_data(job_id=None), "job_id"),
        (event_data(job_id="../other"), "job_id"),
        (event_data(timestamp="2025-03-01T09:30:15"), "timestamp"),
        (event_data(timestamp="yesterday"), "timestamp"),
        (event_data(attempt=-1), "attempt"),
        (event_data(seq=None), "seq"),
        (event_data(source="somebody"), "source"),
        (event_data(surprise=1), "surprise"),
        (event_data(type="progress", payload={"step": -3}), "payload.step"),
        (event_data(type="message", payload={"text": "hi", "extra": 1}), "payload.extra"),
        (
            event_data(type="failed", payload={"error": {"type": "cosmic", "message": "x"}}),
            "payload.error.type",
        ),
        (event_data(type="completed"), "payload"),
    ],
    ids=[
        "unknown-type",
        "missing-type",
        "missing-job-id",
        "job-id-traversal",
        "naive-timestamp",
        "bad-timestamp",
        "negative-attempt",
        "missing-seq",
        "unknown-source",
        "unknown-field",
        "negative-step",
        "unknown-payload-field",
        "unknown-error-type",
        "missing-payload",
    ],
)
def test_invalid_event_is_rejected_naming_the_field(data: dict[str, Any], field: str | None):
    with pytest.raises(InvalidRequestError) as caught:
        parse_event(data)

    assert caught.value.field == field


@pytest.mark.parametrize("text", ["{not json", b"\xff\xfe\x00", "", "[1, 2]", "null", '"x"'])
def test_input_that_is_not_an_event_object_is_rejected(text: str | bytes):
    with pytest.raises(InvalidRequestError):
        parse_event(text)


def test_naive_timestamp_is_rejected_from_json_text_too():
    text = json.dumps(event_data(timestamp="2025-03-01T09:30:15"))

    with pytest.raises(InvalidRequestError) as caught:
        parse_event(text)

    assert caught.value.field == "timestamp"


def test_event_id_is_derived_from_job_source_attempt_and_seq():
    data = event_data(attempt=2, seq=5, source="dispatch")

    first = parse_event(data)
    second = parse_event(json.dumps(data))

    assert first.event_id == second.event_id == f"{JOB_ID}-dispatch-a2-s5"


@pytest.mark.parametrize(
    "change", [{"attempt": 3}, {"seq": 6}, {"source": "reconcile"}, {"job_id": "other"}]
)
def test_event_id_differs_when_job_source_attempt_or_seq_differ(change: dict[str, Any]):
    base = parse_event(event_data(attempt=2, seq=5))

    other = parse_event(event_data(**{"attempt": 2, "seq": 5, **change}))

    assert other.event_id != base.event_id


def test_event_id_does_not_depend_on_time_or_payload():
    first = parse_event(event_data(type="message", payload={"text": "a"}))
    second = parse_event(
        event_data(type="message", payload={"text": "b"}, timestamp="2026-01-01T00:00:00Z")
    )

    assert first.event_id == second.event_id


def test_given_event_id_is_kept():
    parsed = parse_event(event_data(event_id="pubsub-123"))

    assert parsed.event_id == "pubsub-123"


def test_derived_event_id_survives_a_round_trip():
    parsed = parse_event(event_data(seq=9))

    again = parse_event(parsed.model_dump_json())

    assert again.event_id == parsed.event_id == f"{JOB_ID}-trainer-a0-s9"


def test_events_are_immutable():
    event = EVENTS[0]

    with pytest.raises(ValueError, match="frozen"):
        event.seq = 99  # type: ignore[misc]


def test_terminal_event_types_reach_terminal_statuses():
    reached = {STATUS_REACHED[event_type] for event_type in TERMINAL_EVENT_TYPES}

    assert reached == {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
    assert STATUS_REACHED[EventType.MESSAGE] is None
    assert set(STATUS_REACHED) == set(EventType)


def test_a_handoff_is_never_a_failure():
    # A failed attempt is Cloud Run's to retry; a handoff starts a new execution.
    with pytest.raises(InvalidRequestError, match="reason"):
        parse_event(
            {
                **EVENTS[0].model_dump(mode="json", exclude={"type", "payload", "event_id"}),
                "type": "handoff",
                "payload": {"reason": "failed", "step": 3, "checkpoint_step": 2},
            }
        )
