"""The producer side of the lifecycle-event protocol (trainer, dispatch, reconcile).

An `EventReporter` numbers one producer's events (`seq` per task attempt),
stamps them, publishes each and waits for Pub/Sub to confirm it, and keeps
the latest progress, metrics, W&B URL and dataset statistics so that the
terminal event carries the final snapshot the state machine relies on.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, Protocol

from tuning.events import (
    CancelledEvent,
    CancelledPayload,
    CompletedEvent,
    CompletedPayload,
    EvaluationEvent,
    EvaluationPayload,
    EventSource,
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
)
from tuning.jobs import (
    Artifacts,
    AttemptEnding,
    DatasetStats,
    ErrorType,
    JobError,
    Metrics,
    Progress,
    utcnow,
)

logger = logging.getLogger(__name__)


class EventPublisher(Protocol):
    def publish(self, topic: str, message: JobEvent, **attributes: str) -> str: ...


class EventReporter:
    """Publishes one job's events from one producer and one task attempt, in order."""

    def __init__(
        self,
        publisher: EventPublisher,
        topic: str,
        *,
        job_id: str,
        attempt: int = 0,
        execution: str | None = None,
        source: EventSource = "trainer",
        clock: Callable[[], datetime] = utcnow,
        first_seq: int = 0,
    ) -> None:
        self.publisher = publisher
        self.topic = topic
        self.job_id = job_id
        self.attempt = attempt
        self.execution = execution
        self.source = source
        self.clock = clock
        self._seq = itertools.count(first_seq)
        self.progress: Progress | None = None
        self.metrics: Metrics | None = None
        self.wandb_url: str | None = None
        self.dataset_stats: DatasetStats | None = None
        self.resumed_from_step: int | None = None

    def _common(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "attempt": self.attempt,
            "seq": next(self._seq),
            "timestamp": self.clock(),
            "source": self.source,
            "execution": self.execution,
        }

    def publish(self, event: JobEvent) -> JobEvent:
        """Publish and wait for confirmation; raises TransientError when Pub/Sub fails."""
        self.publisher.publish(
            self.topic,
            event,
            job_id=event.job_id,
            event_type=event.type.value,
            attempt=str(event.attempt),
        )
        logger.info("published %s event %s", event.type.value, event.event_id)
        return event

    def preparing(self, message: str | None = None) -> JobEvent:
        return self.publish(
            PreparingEvent(**self._common(), payload=PreparingPayload(message=message))
        )

    def training(
        self,
        *,
        total_steps: int | None,
        wandb_url: str | None = None,
        dataset_stats: DatasetStats | None = None,
    ) -> JobEvent:
        self.wandb_url = wandb_url or self.wandb_url
        self.dataset_stats = dataset_stats or self.dataset_stats
        if self.progress is None:
            self.progress = Progress(step=0, total_steps=total_steps)
        payload = TrainingPayload(
            total_steps=total_steps, wandb_url=self.wandb_url, dataset_stats=self.dataset_stats
        )
        return self.publish(TrainingEvent(**self._common(), payload=payload))

    def progress_update(self, progress: Progress) -> JobEvent:
        self.progress = progress
        return self.publish(ProgressEvent(**self._common(), payload=progress))

    def evaluation(self, metrics: Metrics) -> JobEvent:
        self.metrics = metrics
        payload = EvaluationPayload(metrics=metrics)
        return self.publish(EvaluationEvent(**self._common(), payload=payload))

    def message(self, text: str, level: Literal["info", "warning", "error"] = "info") -> JobEvent:
        payload = MessagePayload(text=text, level=level)
        return self.publish(MessageEvent(**self._common(), payload=payload))

    def restarted(self, resumed_from_step: int, checkpoint: str | None = None) -> JobEvent:
        self.resumed_from_step = resumed_from_step
        payload = RestartedPayload(resumed_from_step=resumed_from_step, checkpoint=checkpoint)
        return self.publish(RestartedEvent(**self._common(), payload=payload))

    def handoff(
        self,
        reason: AttemptEnding,
        *,
        step: int,
        checkpoint_step: int | None,
        checkpoint: str | None = None,
    ) -> JobEvent:
        payload = HandoffPayload(
            reason=reason,
            step=step,
            checkpoint_step=checkpoint_step,
            checkpoint=checkpoint,
            **self._snapshot(),
        )
        return self.publish(HandoffEvent(**self._common(), payload=payload))

    def exporting(self, formats: list[str]) -> JobEvent:
        payload = ExportingPayload(formats=formats)
        return self.publish(ExportingEvent(**self._common(), payload=payload))

    def completed(self, artifacts: Artifacts, metrics: Metrics | None = None) -> JobEvent:
        self.metrics = metrics or self.metrics
        payload = CompletedPayload(artifacts=artifacts, **self._snapshot())
        return self.publish(CompletedEvent(**self._common(), payload=payload))

    def failed(self, message: str, *, error_type: ErrorType, code: str | None = None) -> JobEvent:
        error = JobError(type=error_type, message=message[:4000], code=code)
        payload = FailedPayload(error=error, **self._snapshot())
        return self.publish(FailedEvent(**self._common(), payload=payload))

    def cancelled(self, reason: str | None = None) -> JobEvent:
        payload = CancelledPayload(reason=reason)
        return self.publish(CancelledEvent(**self._common(), payload=payload))

    def _snapshot(self) -> dict[str, Any]:
        return {
            "progress": self.progress,
            "metrics": self.metrics,
            "wandb_url": self.wandb_url,
            "dataset_stats": self.dataset_stats,
            "resumed_from_step": self.resumed_from_step,
        }
