"""A job longer than one task: the attempt checkpoints and hands off before its deadline or
on SIGTERM, and the next execution resumes from that checkpoint to the same result."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.harness import TrainerStack, base_request, colour_rows, to_jsonl
from tests.trainer.test_failures import run_trainer_process
from trainer.checkpoints import CheckpointStore
from trainer.main import main
from tuning.events import CompletedEvent, HandoffEvent, JobEvent, ProgressEvent, RestartedEvent
from tuning.jobs import AttemptEnding
from tuning.settings import TrainerSettings

TOTAL_STEPS = 6


def request_for(stack: TrainerStack, tiny_gemma3: Path, **hyperparameters: Any) -> dict[str, Any]:
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl(colour_rows(24, seed=5))})
    request = base_request()
    request["processed_dataset_id"] = "colours"
    request["training_config"]["base_model_id"] = stack.upload_model(tiny_gemma3, "tiny-gemma3")
    request["training_config"]["eval_config"] = None
    request["training_config"]["export_config"] = {"format": "adapter"}
    request["training_config"]["hyperparameters"].update(
        {"max_steps": TOTAL_STEPS, "save_steps": 100, "logging_steps": 1, "batch_size": 2}
        | hyperparameters
    )
    return request


def settings_for(stack: TrainerStack, job_id: str, **variables: str) -> TrainerSettings:
    return TrainerSettings.from_env({**stack.environ(job_id), **variables})


def completed_of(events: list[JobEvent]) -> CompletedEvent:
    (completed,) = [event for event in events if isinstance(event, CompletedEvent)]
    return completed


def test_a_job_hands_off_at_its_deadline_and_the_next_execution_finishes_it_alike(
    stack: TrainerStack, tiny_gemma3: Path
) -> None:
    request = request_for(stack, tiny_gemma3)
    whole = stack.submit(request)
    assert main(settings=stack.settings(whole), services=stack.services(whole)) == 0
    expected = completed_of(stack.pull_events(whole)).payload.metrics

    split = stack.submit(request)
    # Every attempt keeps all but 10 ms of its 1000 s for the checkpoint, so it hands off
    # after its first step; the launcher numbers the next executions' attempts on
    # (TRAINER_ATTEMPT_BASE).
    for attempt in range(TOTAL_STEPS):
        variables = {
            "TRAINER_TASK_TIMEOUT_SECONDS": "1000",
            "TRAINER_DEADLINE_RESERVE_SECONDS": "999.99",
            "TRAINER_ATTEMPT_BASE": str(attempt),
        }
        settings = settings_for(stack, split, **variables)
        assert main(settings=settings, services=stack.services(split)) == 0
        events = stack.pull_events(split, until_terminal=False, timeout=5)
        if any(isinstance(event, CompletedEvent) for event in events):
            break
    events = stack.pull_events(split)

    handoffs = [event for event in events if isinstance(event, HandoffEvent)]
    assert len(handoffs) >= 3 and len(handoffs) == TOTAL_STEPS - 1  # one per attempt but the last
    assert {event.payload.reason for event in handoffs} == {AttemptEnding.DEADLINE}
    assert [event.payload.checkpoint_step for event in handoffs] == list(range(1, TOTAL_STEPS))
    resumed = [
        event.payload.resumed_from_step for event in events if isinstance(event, RestartedEvent)
    ]
    assert resumed == list(range(1, TOTAL_STEPS))  # each attempt from the one before's checkpoint
    steps = [event.payload.step for event in events if isinstance(event, ProgressEvent)]
    assert steps == list(range(1, TOTAL_STEPS + 1))  # every step trained once
    whole_losses = [
        e.payload.loss for e in stack.pull_events(whole) if isinstance(e, ProgressEvent)
    ]
    split_losses = [e.payload.loss for e in events if isinstance(e, ProgressEvent)]
    assert split_losses == pytest.approx(whole_losses, abs=1e-5)  # the same batches, in order
    final = completed_of(events).payload.metrics
    assert final.step == expected.step == TOTAL_STEPS
    assert final.train_loss is not None and expected.train_loss is not None
    assert abs(final.train_loss - expected.train_loss) < 1e-5


def test_sigterm_mid_training_checkpoints_and_hands_off_losing_nothing(
    stack: TrainerStack, tiny_gemma3: Path
) -> None:
    job_id = stack.submit(request_for(stack, tiny_gemma3, max_steps=400))
    checkpoints = CheckpointStore(
        stack.storage, stack.settings(job_id).layout, job_id, ensure_job_active=lambda: None
    )
    # A checkpoint every second: the trainer then knows how long one takes.
    process = run_trainer_process(stack, job_id, TRAINER_CHECKPOINT_INTERVAL_SECONDS="1")
    deadline = time.monotonic() + 180
    while not checkpoints.complete_steps():
        assert process.poll() is None, process.communicate()[0].decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.1)
    before = [e for e in stack.pull_events(job_id, until_terminal=False, timeout=1)]
    seen = max(e.payload.step for e in before if isinstance(e, ProgressEvent))

    os.kill(process.pid, signal.SIGTERM)
    output = process.communicate(timeout=60)[0].decode()

    assert process.returncode == 0, output[-3000:]
    (handoff,) = [
        e
        for e in stack.pull_events(job_id, until_terminal=False, timeout=5)
        if isinstance(e, HandoffEvent)
    ]
    assert handoff.payload.reason is AttemptEnding.INTERRUPTED
    # Saved at the step it stopped at: nothing trained before the signal is lost.
    assert handoff.payload.checkpoint_step == handoff.payload.step >= seen
    assert checkpoints.latest() is not None
    assert checkpoints.latest().step == handoff.payload.checkpoint_step  # type: ignore[union-attr]
    assert handoff.payload.step < 400


def test_a_run_resumed_in_every_step_of_two_epochs_sees_the_uninterrupted_batches(
    stack: TrainerStack, tiny_gemma3: Path
) -> None:
    # 24 rows in batches of 8: 3 steps an epoch, 2 epochs; every attempt stops after one
    # step, so epoch 2 is resumed mid-epoch in fresh attempts, whose global RNG is not
    # where the uninterrupted run's was (the sampler must not depend on it).
    request = request_for(stack, tiny_gemma3, max_steps=-1, epochs=2, batch_size=8)
    request["training_config"]["hyperparameters"]["gradient_accumulation_steps"] = 1
    whole = stack.submit(request)
    assert main(settings=stack.settings(whole), services=stack.services(whole)) == 0
    expected = [e.payload.loss for e in stack.pull_events(whole) if isinstance(e, ProgressEvent)]

    split = stack.submit(request)
    for attempt in range(8):
        variables = {
            "TRAINER_TASK_TIMEOUT_SECONDS": "1000",
            "TRAINER_DEADLINE_RESERVE_SECONDS": "999.99",
            "TRAINER_ATTEMPT_BASE": str(attempt),
        }
        assert (
            main(settings=settings_for(stack, split, **variables), services=stack.services(split))
            == 0
        )
        events = stack.pull_events(split, until_terminal=False, timeout=5)
        if any(isinstance(event, CompletedEvent) for event in events):
            break
    events = stack.pull_events(split)
    losses = [e.payload.loss for e in events if isinstance(e, ProgressEvent)]

    assert len(expected) == 6
    assert sum(isinstance(e, HandoffEvent) for e in events) == 5
    assert losses == pytest.approx(expected, abs=1e-5)
