"""Lifecycle events published on `job-events` and applied by `on_job_event`.

Every event names its job, the Cloud Run task `attempt` that produced it and
a per-attempt sequence number `seq`; `event_id` is derived from the three so a
redelivery is recognisably the same event. Terminal events carry the final
snapshot (progress, metrics, W&B URL) so that the record they produce does not
depend on which earlier events happened to arrive first.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from tuning.errors import InvalidRequestError
from tuning.ids import SegmentId
from tuning.jobs import (
    Artifacts,
    AttemptEnding,
    DatasetStats,
    ErrorType,
    JobError,
    JobRecord,
    JobStatus,
    Metrics,
    Progress,
)

# What the job store can hold (https://cloud.google.com/firestore/quotas: documents up to
# 1 MiB, maps nested at most 20 deep, field names up to 1,500 bytes and never `__.*__`;
# https://cloud.google.com/firestore/docs/concepts/data-types: 64-bit signed integers), with
# room to spare: an event is written to the job's history and parts of it to the record,
# which holds the latest of several payloads (progress, metrics, artifacts, error). The
# client refuses some of these itself (ValueError), the emulator others (InvalidArgument), and
# a message over 4 MiB is retried for a minute as "429": each of them, unchecked, made
# on_job_event fail until Pub/Sub dead-lettered the event and left the job where it was.
MAX_EVENT_PAYLOAD_BYTES = 64 * 1024  # as JSON; a real payload is under 2 KiB
MAX_PAYLOAD_DEPTH = 6  # maps and lists inside the payload (metrics are flat)
MAX_FIELD_NAME_LENGTH = 256
INT64 = range(-(2**63), 2**63)
_RESERVED_NAME = re.compile(r"^__.*__$")
# An event id is a Firestore document id (the history entry): no '/', not '.' or '..'.
EVENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,299}$"
UNRECORDABLE = "event_unrecordable"
# Cloud Run retries a task at most 10 times:
# https://cloud.google.com/run/docs/configuring/max-retries
MAX_ATTEMPT = 1000
MAX_SEQ = 2**53  # a counter per attempt; exact in every JSON reader


def storage_problem(value: Any, path: str, depth: int = 0) -> str | None:
    """What Firestore would refuse in `value` (see the limits above), or None."""
    if depth > MAX_PAYLOAD_DEPTH:
        return f"{path}: nested more than {MAX_PAYLOAD_DEPTH} deep"
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if value in INT64 else f"{path}: {_digits(value)} is beyond 64-bit integers"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not 0 < len(key) <= MAX_FIELD_NAME_LENGTH:
                return f"{path}: a field name must be 1 to {MAX_FIELD_NAME_LENGTH} characters"
            if _RESERVED_NAME.fullmatch(key):
                return f"{path}: field names like __name__ are reserved by Firestore"
            problem = storage_problem(item, f"{path}.{key}", depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = storage_problem(item, f"{path}.{index}", depth + 1)
            if problem is not None:
                return problem
    return None


def _digits(value: int) -> str:
    """A huge integer described without printing thousands of digits."""
    return f"an integer of {value.bit_length()} bits"


class EventType(StrEnum):
    PREPARING = "preparing"
    TRAINING = "training"
    PROGRESS = "progress"
    EVALUATION = "evaluation"
    MESSAGE = "message"
    RESTARTED = "restarted"
    HANDOFF = "handoff"
    EXPORTING = "exporting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# The status an event shows its attempt has reached (None: no status change).
STATUS_REACHED: dict[EventType, JobStatus | None] = {
    EventType.PREPARING: JobStatus.PREPARING,
    EventType.TRAINING: JobStatus.TRAINING,
    EventType.PROGRESS: JobStatus.TRAINING,
    EventType.EVALUATION: JobStatus.TRAINING,
    EventType.MESSAGE: None,
    EventType.RESTARTED: JobStatus.PREPARING,
    EventType.HANDOFF: None,
    EventType.EXPORTING: JobStatus.EXPORTING,
    EventType.COMPLETED: JobStatus.COMPLETED,
    EventType.FAILED: JobStatus.FAILED,
    EventType.CANCELLED: JobStatus.CANCELLED,
}

EventSource = Literal["trainer", "dispatch", "reconcile", "user"]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PreparingPayload(Payload):
    message: str | None = None


class TrainingPayload(Payload):
    total_steps: int | None = Field(None, ge=0)
    wandb_url: str | None = None
    dataset_stats: DatasetStats | None = None


class EvaluationPayload(Payload):
    metrics: Metrics


class MessagePayload(Payload):
    level: Literal["info", "warning", "error"] = "info"
    text: str = Field(..., max_length=4000)


class RestartedPayload(Payload):
    resumed_from_step: int = Field(0, ge=0)
    checkpoint: str | None = None


class ExportingPayload(Payload):
    formats: list[str] = Field(default_factory=list)


class FinalSnapshot(Payload):
    """What the job looked like when it ended; absent fields keep the record's values."""

    progress: Progress | None = None
    metrics: Metrics | None = None
    wandb_url: str | None = None
    dataset_stats: DatasetStats | None = None
    resumed_from_step: int | None = Field(None, ge=0, description="Where the attempt resumed.")


class HandoffPayload(FinalSnapshot):
    """An attempt stopped before its task deadline (or on SIGTERM) after a checkpoint; a
    new execution is to continue the job from it. Reason `paused`: the job's owner paused it
    (the trainer checkpointed and stopped, or the job was stopped before training, or
    reconcile found the trainer gone), and it waits for a resume. A pause carries the final
    snapshot like a terminal event, since a paused job takes no later event of its attempt."""

    reason: AttemptEnding = Field(..., description="deadline, interrupted or paused")
    step: int = Field(..., ge=0, description="The last step this attempt trained.")
    checkpoint_step: int | None = Field(
        None,
        ge=0,
        description="Its last complete checkpoint; null only for a pause that saved none "
        "(the next execution resumes from the job's latest complete checkpoint, if any).",
    )
    checkpoint: str | None = Field(None, max_length=2000)

    @field_validator("reason")
    @classmethod
    def _a_handoff_reason(cls, reason: AttemptEnding) -> AttemptEnding:
        if reason is AttemptEnding.FAILED:
            raise ValueError("a handoff is a deadline or an interruption, never a failure")
        return reason

    @model_validator(mode="after")
    def _a_checkpoint_unless_paused(self) -> HandoffPayload:
        if self.checkpoint_step is None and self.reason is not AttemptEnding.PAUSED:
            raise ValueError("a deadline or interrupted handoff names its checkpoint_step")
        return self


class CompletedPayload(FinalSnapshot):
    artifacts: Artifacts


class FailedPayload(FinalSnapshot):
    error: JobError


class CancelledPayload(Payload):
    reason: str | None = Field(None, max_length=1000)


class EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field("", max_length=300, description="Stable id; derived when omitted.")
    job_id: SegmentId
    attempt: int = Field(
        ...,
        ge=0,
        le=MAX_ATTEMPT,
        description="The producer's attempt over the whole job: the attempts of the job's "
        "earlier executions plus CLOUD_RUN_TASK_ATTEMPT.",
    )
    seq: int = Field(..., ge=0, le=MAX_SEQ, description="Order within the attempt.")
    timestamp: AwareDatetime
    source: EventSource = "trainer"
    execution: str | None = Field(
        None, max_length=500, description="The execution that produced it, when known."
    )

    @model_validator(mode="after")
    def _derive_event_id(self) -> EventBase:
        if not self.event_id:
            object.__setattr__(
                self, "event_id", f"{self.job_id}-{self.source}-a{self.attempt}-s{self.seq}"
            )
        elif re.fullmatch(EVENT_ID_PATTERN, self.event_id) is None:
            raise ValueError(f"event_id must match {EVENT_ID_PATTERN} (it names a document)")
        return self


class PreparingEvent(EventBase):
    type: Literal[EventType.PREPARING] = EventType.PREPARING
    payload: PreparingPayload = Field(default_factory=PreparingPayload)


class TrainingEvent(EventBase):
    type: Literal[EventType.TRAINING] = EventType.TRAINING
    payload: TrainingPayload = Field(default_factory=TrainingPayload)


class ProgressEvent(EventBase):
    type: Literal[EventType.PROGRESS] = EventType.PROGRESS
    payload: Progress


class EvaluationEvent(EventBase):
    type: Literal[EventType.EVALUATION] = EventType.EVALUATION
    payload: EvaluationPayload


class MessageEvent(EventBase):
    type: Literal[EventType.MESSAGE] = EventType.MESSAGE
    payload: MessagePayload


class RestartedEvent(EventBase):
    type: Literal[EventType.RESTARTED] = EventType.RESTARTED
    payload: RestartedPayload = Field(default_factory=RestartedPayload)


class HandoffEvent(EventBase):
    type: Literal[EventType.HANDOFF] = EventType.HANDOFF
    payload: HandoffPayload


class ExportingEvent(EventBase):
    type: Literal[EventType.EXPORTING] = EventType.EXPORTING
    payload: ExportingPayload = Field(default_factory=ExportingPayload)


class CompletedEvent(EventBase):
    type: Literal[EventType.COMPLETED] = EventType.COMPLETED
    payload: CompletedPayload


class FailedEvent(EventBase):
    type: Literal[EventType.FAILED] = EventType.FAILED
    payload: FailedPayload


class CancelledEvent(EventBase):
    type: Literal[EventType.CANCELLED] = EventType.CANCELLED
    payload: CancelledPayload = Field(default_factory=CancelledPayload)


JobEvent = Annotated[
    PreparingEvent
    | TrainingEvent
    | ProgressEvent
    | EvaluationEvent
    | MessageEvent
    | RestartedEvent
    | HandoffEvent
    | ExportingEvent
    | CompletedEvent
    | FailedEvent
    | CancelledEvent,
    Field(discriminator="type"),
]
JOB_EVENT = TypeAdapter(JobEvent)
TERMINAL_EVENT_TYPES = frozenset({EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED})


def parse_event(data: bytes | str | dict[str, Any]) -> JobEvent:
    """Validate an event from JSON (bytes or text) or decoded data."""
    from tuning.spec import describe_validation_error

    try:
        if isinstance(data, bytes | str):
            return JOB_EVENT.validate_json(data)
        return JOB_EVENT.validate_python(data)
    except ValidationError as error:
        raise describe_validation_error(error, tagged_union=True) from None
    except ValueError as error:  # not JSON at all
        raise InvalidRequestError(f"event is not valid JSON: {error}") from None


def storage_problem_of(event: EventBase) -> str | None:
    """Why the job store could not hold the event's payload, or None when it can.

    Checked by on_job_event before it writes, not by the model: such an event is well
    formed (its producer meant it), and its job must learn that it could not be recorded.
    """
    payload = getattr(event, "payload", None)
    if not isinstance(payload, BaseModel):
        return None
    where = f"the {getattr(event, 'type', 'event')} event's payload"
    problem = storage_problem(payload.model_dump(mode="python"), "payload")
    if problem is not None:
        return f"{where} cannot be stored: {problem}"
    try:
        size = len(payload.model_dump_json())
    except ValueError as error:  # text that is not UTF-8 (a lone surrogate) cannot be sent
        return f"{where} cannot be encoded: {str(error)[:200]}"
    if size > MAX_EVENT_PAYLOAD_BYTES:
        return f"{where} is {size} bytes as JSON, over the {MAX_EVENT_PAYLOAD_BYTES} allowed"
    return None


def unrecordable_failure(event: EventBase, *, cause: str) -> FailedEvent:
    """A `failed` event (system error) for an event its job's store could not take.

    Applied like any event, so a bad event of an older attempt or a superseded execution
    changes nothing, and its id is stable, so a redelivery records it once.
    """
    kind = getattr(event, "type", "unknown")
    message = (
        f"a {kind} event from the {event.source} (attempt {event.attempt}, seq {event.seq}) "
        f"could not be recorded, so the job cannot be followed: {cause[:1000]}"
    )
    return FailedEvent(
        event_id=f"{event.job_id}-{event.source}-a{event.attempt}-s{event.seq}-unrecordable",
        job_id=event.job_id,
        attempt=event.attempt,
        seq=event.seq,
        timestamp=event.timestamp,
        source=event.source,
        execution=event.execution,
        payload=FailedPayload(
            error=JobError(type=ErrorType.SYSTEM, message=message[:4000], code=UNRECORDABLE)
        ),
    )


class JobNotification(BaseModel):
    """What `job-notifications` carries: one job reaching a terminal status, or `paused`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    status: JobStatus
    previous_status: JobStatus
    owner: str | None = None
    finished_at: AwareDatetime | None = None
    error: JobError | None = None
    artifacts: Artifacts | None = None
    metrics: Metrics | None = None

    @classmethod
    def for_job(cls, job: JobRecord, previous_status: JobStatus) -> JobNotification:
        return cls(
            job_id=job.job_id,
            status=job.status,
            previous_status=previous_status,
            owner=job.owner,
            finished_at=job.finished_at,
            error=job.error,
            artifacts=job.artifacts,
            metrics=job.metrics,
        )
