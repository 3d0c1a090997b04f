"""Process faults: trainers SIGKILLed at random points end completed or failed, never stuck.

Two stacks with the real local launcher (a supervisor per execution, restarting a
killed task like a Cloud Run task with max_retries=1) and a reconcile loop standing
in for Cloud Scheduler:

- the real trainer on a tiny Gemma 3 (checkpoints every 2 steps): one job killed at
  a random step of its first attempt, which the second attempt resumes and completes;
  one killed in both attempts, which reconcile fails;
- the fake trainer (tests/fixtures/fake_trainer.py), more runs at random moments:
  killed once (completes on the retry), killed twice (fails), and one whose whole
  execution dies (supervisor and task), which reconcile fails too.

Each job must end `completed`, or `failed` with a system error naming the cause, and
none may be non-terminal one reconcile period after its execution ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from bench.stack import Stack
from tests.reliability.conftest import Ledger
from tests.reliability.support import train_request, wait_for
from trainer.checkpoints import MARKER
from tuning.jobs import JobRecord, JobStatus
from tuning.launchers import ExecutionState
from tuning.launchers.local import LocalLauncher, read_record
from tuning.local.demo import demo_dataset_splits, demo_request

STALE_SECONDS = 3  # RECONCILE_STALE_SECONDS: reconcile acts this long after an execution ended
RECONCILE_PERIOD = 2.0
REAL_STEPS = 16
rng = random.Random(int(os.environ.get("RELIABILITY_SEED", "11")))
# What a failed job's error must say: how its execution ended.
CAUSES = ("killed by SIGKILL", "stopped unexpectedly")


@dataclass
class Run:
    """One job and the faults planned for it."""

    job_id: str
    kill_attempts: tuple[int, ...]  # task attempts to SIGKILL
    whole_execution: bool = False  # kill the supervisor too, as if the machine died
    kills: int = 0


class Reconciler:
    """Cloud Scheduler's stand-in: POST reconcile every period, in a thread."""

    def __init__(self, stacks: list[Stack]) -> None:
        self.stacks, self.stopped = stacks, threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stopped.wait(RECONCILE_PERIOD):
            for stack in self.stacks:
                # A failed call is retried at the next period, as Cloud Scheduler would.
                with contextlib.suppress(requests.RequestException):
                    requests.post(stack.url("reconcile", "/"), timeout=60)

    def __enter__(self) -> Reconciler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()


def fault_stack(start_stack: Any, **variables: str) -> Stack:
    return start_stack(
        functions=("submit", "dispatch", "on_job_event", "reconcile"),
        recording_launcher=False,
        TRAINER_MAX_RETRIES="1",
        RECONCILE_STALE_SECONDS=str(STALE_SECONDS),
        **variables,
    )


@pytest.fixture(scope="module")
def real_stack(start_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The real trainer, with a tiny Gemma 3 and a small chat dataset in the stack's buckets."""
    stack = fault_stack(start_stack, LOCAL_TRAINER_COMMAND=f"{sys.executable} -m trainer")
    model = tmp_path_factory.mktemp("tiny-gemma3")
    # A subprocess: the test process does not need torch.
    subprocess.run(
        [sys.executable, "-m", "trainer.tiny", "--out", str(model)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    settings = stack.settings
    stack.services.storage.upload_dir(model, f"gs://{settings.models_bucket}/base_models/tiny/")
    for split, rows in demo_dataset_splits().items():
        stack.services.storage.upload_bytes(
            f"gs://{settings.data_bucket}/processed_datasets/colours/{split}.jsonl",
            "".join(json.dumps(row) + "\n" for row in rows).encode(),
        )
    yield stack


def real_request(stack: Stack, ledger: Ledger) -> dict[str, Any]:
    request = demo_request(f"gs://{stack.settings.models_bucket}/base_models/tiny/", "colours")
    request["hf_token"] = ledger.token("hf_")
    config = request["training_config"]
    config["hyperparameters"].update(
        {"max_steps": REAL_STEPS, "save_strategy": "steps", "save_steps": 2, "logging_steps": 1}
    )
    config["eval_config"] = {"eval_strategy": "no"}
    config["export_config"] = {"format": "adapter", "destination": "gcs"}
    return request


def submit(stack: Stack, body: dict[str, Any], ledger: Ledger) -> str:
    answer = stack.request("POST", "submit", "/train", json=body, caller="faults@example.com")
    assert answer.status_code == 202, answer.text
    ledger.add("requests sent")
    ledger.add("jobs created")
    return str(answer.json()["job_id"])


def attempt_running(stack: Stack, job_id: str, attempt: int) -> tuple[str, int] | None:
    """(execution, trainer pid) once the job's task `attempt` runs."""
    job = stack.services.jobs.get(job_id)
    if job.execution is None:
        return None
    record = read_record(stack.launcher.folder(job.execution))
    if record is None or record.attempt != attempt or record.trainer_pid is None:
        return None
    if record.state is not ExecutionState.RUNNING:
        return None
    return job.execution, record.trainer_pid


def inject(stack: Stack, run: Run, moment: Any) -> None:
    """Kill each planned attempt of the run once `moment(attempt)` says it is time."""
    for attempt in run.kill_attempts:
        execution, pid = wait_for(
            lambda attempt=attempt: attempt_running(stack, run.job_id, attempt),
            timeout=240,
            interval=0.1,
            what=f"attempt {attempt} of {run.job_id}",
        )
        moment(attempt)
        victims = [pid]
        if run.whole_execution:
            record = read_record(stack.launcher.folder(execution))
            assert record is not None
            victims.insert(0, record.supervisor_pid)
        for victim in victims:
            try:
                os.killpg(victim, signal.SIGKILL)
            except ProcessLookupError:
                continue  # it ended before its moment came: no fault was injected
            run.kills += 1


def at_random_step(stack: Stack, job_id: str, steps: int) -> Any:
    """A moment for the real trainer: a first attempt dies at a random step once it has a
    checkpoint (so that the retry has one to resume from); a second one at a random time."""
    checkpoints = stack.settings.layout.checkpoints_prefix(job_id)

    def moment(attempt: int) -> None:
        target = rng.randint(3, steps - 4)  # a margin: the kill must come before the end

        def reached() -> bool:
            progress = stack.services.jobs.get(job_id).progress
            if progress is None or progress.step < target:
                return False
            return any(uri.endswith(MARKER) for uri in stack.services.storage.list(checkpoints))

        if attempt == 0:
            wait_for(reached, timeout=240, interval=0.1, what=f"step {target}")
        else:
            time.sleep(rng.uniform(0.5, 8.0))  # anywhere in loading, training or export

    return moment


def after_random_delay(low: float, high: float) -> Any:
    return lambda attempt: time.sleep(rng.uniform(low, high))


def executions_over(stack: Stack, runs: list[Run]) -> bool:
    launcher = LocalLauncher(stack.settings.local_launcher_dir)
    for run in runs:
        execution = stack.services.jobs.get(run.job_id).execution
        if execution is None or not launcher.status(execution).state.is_finished:
            return False
    return True


def check_outcome(job: JobRecord) -> str | None:
    """What is wrong with how the job ended, or None."""
    if job.status is JobStatus.COMPLETED:
        return None
    if job.status is not JobStatus.FAILED:
        return f"{job.job_id} is {job.status.value}"
    error = job.error
    if error is None or error.type.value != "system":
        return f"{job.job_id} failed without a system error: {error}"
    if not any(cause in error.message for cause in CAUSES):
        return f"{job.job_id} failed without naming the cause: {error.message}"
    return None


def test_killed_trainers_end_completed_or_failed_with_the_cause(
    start_stack: Any, real_stack: Stack, ledger: Ledger
) -> None:
    fake_stack = fault_stack(start_stack, FAKE_TRAINER_SECONDS="4", FAKE_TRAINER_STEPS="8")
    real_runs = [
        Run(submit(real_stack, real_request(real_stack, ledger), ledger), kill_attempts=(0,)),
        Run(submit(real_stack, real_request(real_stack, ledger), ledger), kill_attempts=(0, 1)),
    ]
    fake_plans = [(0,), (0,), (0,), (0,), (0, 1), (0,)]
    fake_runs = [
        Run(submit(fake_stack, train_request(ledger), ledger), kill_attempts=plan)
        for plan in fake_plans
    ]
    fake_runs[-1].whole_execution = True
    moments = [at_random_step(real_stack, run.job_id, REAL_STEPS) for run in real_runs]

    with Reconciler([real_stack, fake_stack]), ThreadPoolExecutor(max_workers=8) as pool:
        faults = [
            pool.submit(inject, real_stack, run, moment)
            for run, moment in zip(real_runs, moments, strict=True)
        ]
        faults += [
            pool.submit(inject, fake_stack, run, after_random_delay(0.0, 3.5)) for run in fake_runs
        ]
        for fault in faults:
            fault.result()
        for stack, runs in ((real_stack, real_runs), (fake_stack, fake_runs)):
            wait_for(lambda s=stack, r=runs: executions_over(s, r), timeout=300, interval=0.5)
        # One reconcile period after the executions ended (the stale threshold, a pass, and
        # the event's way through Pub/Sub), nothing may be left running.
        time.sleep(STALE_SECONDS + 2 * RECONCILE_PERIOD + 5)
        jobs = {
            run.job_id: stack.services.jobs.get(run.job_id)
            for stack, runs in ((real_stack, real_runs), (fake_stack, fake_runs))
            for run in runs
        }
    ledger.add("kills injected", sum(run.kills for run in real_runs + fake_runs))
    stuck = [job_id for job_id, job in jobs.items() if not job.status.is_terminal]
    ledger.add("jobs stuck", len(stuck))
    report = {job_id: (job.status.value, job.attempt, job.error) for job_id, job in jobs.items()}

    assert stuck == [], report
    assert [problem for job in jobs.values() if (problem := check_outcome(job))] == [], report
    assert sum(run.kills for run in real_runs + fake_runs) >= 5
    resumed, twice_killed = (jobs[run.job_id] for run in real_runs)
    assert resumed.status is JobStatus.COMPLETED and resumed.attempt == 1, report
    if real_runs[1].kills == 2:  # both attempts died before their end
        assert twice_killed.status is JobStatus.FAILED, report
    events = real_stack.services.jobs.list_events(resumed.job_id, limit=1000).events
    restarts = [event for event in events if event["type"] == "restarted"]
    assert restarts and restarts[0]["payload"]["resumed_from_step"] > 0, restarts
