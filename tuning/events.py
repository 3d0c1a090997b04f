"""Lifecycle events published on `job-events` and applied by `on_job_event`.

Every event names its job, the Cloud Run task `attempt` that produced it and
a per-attempt sequence number `seq`; `event_id` is derived from the three so a
redelivery is recognisably the same event. Terminal events carry the final
snapshot (progress, metrics, W&B URL) so that the record they produce does not
depend on which earlier events happened to arrive first.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from tuning.errors import InvalidRequestError
from tuning.ids import SegmentId
from tuning.jobs import Artifacts, DatasetStats, JobError, JobRecord, JobStatus, Metrics, Progress


class EventType(StrEnum):
    PREPARING = "preparing"
    TRAINING = "training"
    PROGRESS = "progress"
    EVALUATION = "evaluation"
    MESSAGE = "message"
    RESTARTED = "restarted"
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
    attempt: int = Field(..., ge=0, description="CLOUD_RUN_TASK_ATTEMPT of the producer.")
    seq: int = Field(..., ge=0, description="Order within the attempt.")
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


class JobNotification(BaseModel):
    """What `job-notifications` carries: one job reaching a terminal status."""

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
