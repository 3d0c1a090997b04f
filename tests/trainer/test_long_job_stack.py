"""On the local stack: a job longer than its task deadline runs over several executions.

Real parts throughout: submit behind the front door, dispatch and on_job_event fed by push
subscriptions, the local launcher enforcing the task timeout as Cloud Run does, and the
real trainer on a tiny Gemma. Each attempt is told a deadline that leaves time for one step
only, so the job goes on in a new execution after every step. The uninterrupted run it is
compared with runs in this process (tests/trainer/test_handoff.py covers the trainer's side
in depth); this test is about the executions the system starts, one after another.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.harness import TrainerStack, base_request, colour_rows, to_jsonl
from tests.trainer.test_handoff import completed_of, request_for
from trainer.main import main
from tuning.jobs import AttemptEnding, JobRecord
from tuning.local.scratch import ScratchStack

STEPS = 3
FUNCTIONS = ("submit", "status", "dispatch", "on_job_event")
OWNER = "long-jobs@example.com"


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[list[ScratchStack]]:
    started: list[ScratchStack] = []
    yield started
    for stack in started:
        stack.stop()


def run_job(stack: ScratchStack, tiny_gemma3: Path, timeout: float) -> JobRecord:
    models = stack.settings.models_bucket
    stack.services.storage.upload_dir(tiny_gemma3, f"gs://{models}/base_models/tiny/")
    data = stack.settings.data_bucket
    rows = to_jsonl(colour_rows(24, seed=5))
    stack.services.storage.upload_bytes(f"gs://{data}/processed_datasets/colours/train.jsonl", rows)
    request: dict[str, Any] = base_request()
    request["processed_dataset_id"] = "colours"
    config = request["training_config"]
    config["base_model_id"] = f"gs://{models}/base_models/tiny/"
    config["eval_config"] = {"samples": 0}  # no evaluation, no sample answers (their cost)
    config["export_config"] = {"format": "adapter"}
    config["hyperparameters"].update(
        {"max_steps": STEPS, "save_steps": 100, "logging_steps": 1, "batch_size": 2}
    )
    answer = stack.request("POST", "submit", "/train", caller=OWNER, json=request)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    deadline = time.monotonic() + timeout
    while True:
        job = stack.services.jobs.find(job_id)
        assert job is not None
        if job.status.is_terminal:
            return job
        assert time.monotonic() < deadline, f"still {job.status}: {job.status_reason}"
        time.sleep(1)


@pytest.mark.timeout(900)
def test_a_job_longer_than_its_task_runs_over_several_executions_to_the_same_result(
    tmp_path: Path, tiny_gemma3: Path, stack: TrainerStack, stacks: list[ScratchStack]
) -> None:
    whole = stack.submit(request_for(stack, tiny_gemma3, max_steps=STEPS))
    assert main(settings=stack.settings(whole), services=stack.services(whole)) == 0
    expected = completed_of(stack.pull_events(whole)).payload

    # 240 s per task attempt, enforced by the launcher; the trainer keeps 239 of them for its
    # checkpoint, so it hands off after its first step (its start-up takes longer than 1 s)
    # and is never killed, however slow the machine.
    split = ScratchStack.start(
        tmp_path / "split",
        functions=FUNCTIONS,
        TRAINER_PROGRESS_INTERVAL_SECONDS="0",
        TRAINER_MAX_RETRIES="1",
        TRAINER_TASK_TIMEOUT_SECONDS="240",
        TRAINER_DEADLINE_RESERVE_SECONDS="239",
    )
    stacks.append(split)
    job = run_job(split, tiny_gemma3, timeout=800)

    assert job.status.value == "completed", (job.error, job.status_reason)
    assert job.executions == STEPS >= 3  # one step per execution
    assert job.attempt == STEPS - 1  # attempts numbered over the job's executions
    assert job.last_attempt_end is not None
    assert job.last_attempt_end.reason is AttemptEnding.DEADLINE
    assert job.last_attempt_end.checkpoint_step == STEPS - 1
    assert job.resumed_from_step == STEPS - 1
    assert job.handoff is None
    assert job.progress is not None and job.progress.step == STEPS
    assert job.metrics is not None and expected.metrics is not None
    assert job.metrics.train_loss == pytest.approx(expected.metrics.train_loss, abs=1e-5)
    executions = list(split.launcher.executions())
    assert len(executions) == STEPS
    assert all(split.launcher.status(name).attempts == 1 for name in executions)  # no retries
