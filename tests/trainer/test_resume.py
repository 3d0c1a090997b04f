"""A task killed after a checkpoint resumes from it on the next attempt, not from step zero."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.trainer.harness import TrainerStack, base_request, colour_rows, to_jsonl
from tests.trainer.test_failures import run_trainer_process
from trainer.checkpoints import CheckpointStore
from trainer.main import main
from tuning.events import CompletedEvent, EventType, ProgressEvent, RestartedEvent

TOTAL_STEPS = 20


def test_sigkilled_run_resumes_from_its_checkpoint(stack: TrainerStack, tiny_gemma3: Path) -> None:
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl(colour_rows(24, seed=5))})
    request = base_request()
    request["processed_dataset_id"] = "colours"
    request["training_config"]["base_model_id"] = stack.upload_model(tiny_gemma3, "tiny-gemma3")
    request["training_config"]["eval_config"] = None
    request["training_config"]["export_config"] = {"format": "adapter"}
    request["training_config"]["hyperparameters"].update(
        {"max_steps": TOTAL_STEPS, "save_steps": 4, "logging_steps": 1, "batch_size": 2}
    )
    job_id = stack.submit(request)
    checkpoints = CheckpointStore(
        stack.storage, stack.settings(job_id).layout, job_id, ensure_job_active=lambda: None
    )

    process = run_trainer_process(stack, job_id, attempt=0)
    deadline = time.monotonic() + 120
    while not checkpoints.complete_steps() and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0].decode()[-3000:]
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    latest = checkpoints.latest()
    assert latest is not None and latest.step < TOTAL_STEPS, "killed too late to test a resume"

    code = main(settings=stack.settings(job_id, attempt=1), services=stack.services(job_id))

    events = stack.pull_events(job_id)
    first_attempt = [e for e in events if e.attempt == 0]
    retried = [e for e in events if e.attempt == 1]
    assert code == 0
    assert not any(e.type in (EventType.COMPLETED, EventType.FAILED) for e in first_attempt)
    restarted = [e for e in retried if isinstance(e, RestartedEvent)]
    assert [e.payload.resumed_from_step for e in restarted] == [latest.step]
    progress_steps = [e.payload.step for e in retried if isinstance(e, ProgressEvent)]
    assert progress_steps[0] == latest.step + 1  # the same global step, not zero
    assert progress_steps[-1] == TOTAL_STEPS
    completed = retried[-1]
    assert isinstance(completed, CompletedEvent) and completed.payload.metrics.step == TOTAL_STEPS
