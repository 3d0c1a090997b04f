"""A job paused mid-training checkpoints, stops and, resumed in a new execution, ends with the
weights of an uninterrupted run (within test_exact_resume's tolerance)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.trainer.harness import TrainerStack
from tests.trainer.test_exact_resume import adapter_weights, completed_of, request_for
from trainer.checkpoints import CheckpointStore
from trainer.main import main
from tuning.events import HandoffEvent, JobEvent, ProgressEvent, RestartedEvent
from tuning.jobs import AttemptEnding, JobStatus, utcnow
from tuning.services import Services
from tuning.settings import TrainerSettings
from tuning.state import resumed

PAUSE_AT = 3  # the owner pauses once the trainer reported this step


class PausingPublisher:
    """The trainer's publisher; once it publishes progress at PAUSE_AT, the job's owner
    pauses the job (what `POST /jobs/{id}/pause` writes on a training job's record)."""

    def __init__(self, services: Services, job_id: str) -> None:
        self.inner = services.publisher
        self.jobs = services.jobs
        self.job_id = job_id

    def publish(self, topic: str, message: Any, **attributes: str) -> str:
        message_id = self.inner.publish(topic, message, **attributes)
        if isinstance(message, ProgressEvent) and message.payload.step == PAUSE_AT:
            now = utcnow()
            self.jobs.update(
                self.job_id,
                lambda job: job.model_copy(
                    update={"status": JobStatus.TRAINING, "pause_requested_at": now}
                ),
            )
        return message_id


def settings_for(stack: TrainerStack, job_id: str, **variables: str) -> TrainerSettings:
    # The job record is read after every step, as the local stack's low check interval does.
    environ = {**stack.environ(job_id), "TRAINER_JOB_CHECK_SECONDS": "0", **variables}
    return TrainerSettings.from_env(environ)


def test_a_job_paused_mid_training_and_resumed_ends_with_the_uninterrupted_weights(
    stack: TrainerStack, tiny_gemma3: Path, tmp_path: Path
) -> None:
    request = request_for(stack, tiny_gemma3)
    whole = stack.submit(request)
    assert main(settings=stack.settings(whole), services=stack.services(whole)) == 0
    whole_completed = completed_of(stack.pull_events(whole))
    total_steps = whole_completed.payload.metrics.step
    assert total_steps is not None and total_steps > PAUSE_AT + 2

    split = stack.submit(request)
    services = stack.services(split)
    # Dispatched: one execution recorded, as dispatch leaves it.
    services.jobs.update(
        split, lambda job: job.model_copy(update={"execution": "first", "executions": 1})
    )
    services.publisher = PausingPublisher(services, split)  # type: ignore[assignment]
    first = settings_for(stack, split, CLOUD_RUN_EXECUTION="first")

    assert main(settings=first, services=services) == 0  # it stopped on purpose

    events: list[JobEvent] = stack.pull_events(split, until_terminal=False, timeout=5)
    (pause,) = [event for event in events if isinstance(event, HandoffEvent)]
    assert pause.payload.reason is AttemptEnding.PAUSED
    stopped = pause.payload.step
    assert PAUSE_AT <= stopped <= PAUSE_AT + 1 < total_steps  # at the next check after it
    assert pause.payload.checkpoint_step == stopped  # saved where it stopped: nothing lost
    checkpoints = CheckpointStore(
        stack.storage, first.layout, split, ensure_job_active=lambda: None
    )
    assert checkpoints.latest() is not None and checkpoints.latest().step == stopped  # type: ignore[union-attr]
    # What on_job_event and then `POST /jobs/{id}/resume` leave on the record.
    transition = services.jobs.apply_event(pause)
    assert transition is not None and transition.after.status is JobStatus.PAUSED
    again = services.jobs.update(split, resumed)
    assert again is not None and again.after.status is JobStatus.QUEUED

    # The next execution, its attempts numbered on from the paused one, as the launcher does.
    second = settings_for(stack, split, CLOUD_RUN_EXECUTION="second", TRAINER_ATTEMPT_BASE="1")
    assert main(settings=second, services=stack.services(split)) == 0

    events = stack.pull_events(split)
    restarted = [e.payload.resumed_from_step for e in events if isinstance(e, RestartedEvent)]
    assert restarted == [stopped]
    split_completed = completed_of(events)
    assert split_completed.attempt == 1 and split_completed.payload.metrics.step == total_steps
    expected = adapter_weights(stack, whole_completed, tmp_path / "whole")
    resumed_weights = adapter_weights(stack, split_completed, tmp_path / "split")
    assert expected.keys() == resumed_weights.keys() and expected
    trained = max(float(tensor.abs().max()) for tensor in expected.values())
    assert trained > 1e-3  # the adapter did train, so a different data order would show
    worst = max(float((expected[name] - resumed_weights[name]).abs().max()) for name in expected)
    assert worst < 1e-5, f"resumed weights differ by {worst:.2e} (weights up to {trained:.3f})"
    assert split_completed.payload.metrics.train_loss == pytest.approx(
        whole_completed.payload.metrics.train_loss, abs=1e-5
    )
