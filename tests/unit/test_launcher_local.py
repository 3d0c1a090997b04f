"""The local launcher: real child processes under a supervisor, state on disk."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tuning.errors import InvalidRequestError
from tuning.jobs import JobRecord
from tuning.launchers import ExecutionState, ExecutionStatus, execution_id
from tuning.launchers.local import LocalLauncher, describe_exit, read_record

# A task that logs its attempt, then behaves as its job's id says.
TASK = """
import os, sys, time, pathlib
attempt = int(os.environ["CLOUD_RUN_TASK_ATTEMPT"])
print("attempt", attempt, os.environ["JOB_ID"], os.environ["CLOUD_RUN_EXECUTION"], flush=True)
mode = os.environ["JOB_ID"]
if mode == "fail-then-pass" and attempt < 2:
    sys.exit(3)
if mode == "always-fail":
    sys.exit(5)
if mode == "hang":
    time.sleep(60)
if mode == "report-timeout":
    print("told", os.environ["TRAINER_TASK_TIMEOUT_SECONDS"], os.environ["TRAINER_ATTEMPT_BASE"])
    time.sleep(60)
"""


def job(job_id: str) -> JobRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return JobRecord(
        job_id=job_id,
        job_name=job_id,
        base_model_id="google/gemma-3-1b-it",
        processed_dataset_id="ds1",
        created_at=now,
        updated_at=now,
    )


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[LocalLauncher]:
    launcher = LocalLauncher(
        tmp_path / "executions", command=[sys.executable, "-c", TASK], max_retries=2
    )
    yield launcher
    launcher.kill_all()


def finished(launcher: LocalLauncher, execution: str, timeout: float = 20) -> ExecutionStatus:
    deadline = time.monotonic() + timeout
    while not (status := launcher.status(execution)).state.is_finished:
        assert time.monotonic() < deadline, f"{execution} still {status.state}"
        time.sleep(0.05)
    return status


def running_trainer(launcher: LocalLauncher, execution: str) -> int:
    deadline = time.monotonic() + 20
    while True:
        record = read_record(launcher.folder(execution))
        if record is not None and record.trainer_pid and record.state is ExecutionState.RUNNING:
            return record.trainer_pid
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_task_that_exits_zero_succeeds_in_one_attempt(launcher):
    execution = launcher.launch(job("pass"))

    status = finished(launcher, execution)

    assert status.state is ExecutionState.SUCCEEDED
    assert status.attempts == 1
    assert status.finished_at is not None
    log = launcher.log_path(execution).read_text()
    # As on Cloud Run, the task sees the execution's id, not the name `launch` returned.
    assert execution == f"local/executions/{execution_id(execution)}"
    assert f"attempt 0 pass {execution_id(execution)}\n" in log


def test_a_failing_task_is_retried_with_the_next_attempt_number(launcher):
    execution = launcher.launch(job("fail-then-pass"))

    status = finished(launcher, execution)

    assert status.state is ExecutionState.SUCCEEDED
    assert status.attempts == 3
    log = launcher.log_path(execution).read_text()
    started = [
        line.split()[1] for line in log.splitlines() if line.endswith(execution_id(execution))
    ]
    assert started == ["0", "1", "2"]


def test_a_task_that_keeps_failing_fails_after_max_retries(launcher):
    execution = launcher.launch(job("always-fail"))

    status = finished(launcher, execution)

    assert status.state is ExecutionState.FAILED
    assert status.attempts == 3
    assert status.message == "attempt 2 exited with code 5"


def test_a_killed_task_fails_and_says_how_it_died(tmp_path):
    launcher = LocalLauncher(
        tmp_path / "executions", command=[sys.executable, "-c", TASK], max_retries=0
    )
    execution = launcher.launch(job("hang"))
    trainer = running_trainer(launcher, execution)

    os.killpg(trainer, signal.SIGKILL)
    status = finished(launcher, execution)

    assert status.state is ExecutionState.FAILED
    assert status.message == "attempt 0 was killed by SIGKILL (out of memory?)"


def test_cancel_stops_the_task_and_does_not_retry_it(launcher):
    execution = launcher.launch(job("hang"))
    trainer = running_trainer(launcher, execution)

    launcher.cancel(execution)
    status = finished(launcher, execution)

    assert status.state is ExecutionState.CANCELLED
    assert status.attempts == 1
    with pytest.raises(ProcessLookupError):
        os.killpg(trainer, 0)
    launcher.cancel(execution)  # cancelling a finished execution changes nothing
    assert launcher.status(execution).state is ExecutionState.CANCELLED


def test_another_process_reads_the_same_execution_from_disk(launcher, tmp_path):
    execution = launcher.launch(job("pass"))
    finished(launcher, execution)

    elsewhere = LocalLauncher(tmp_path / "executions")  # e.g. the reconcile server

    assert elsewhere.status(execution).state is ExecutionState.SUCCEEDED
    assert list(elsewhere.executions()) == [execution]


def test_a_supervisor_that_died_leaves_a_failed_execution(launcher):
    execution = launcher.launch(job("hang"))
    running_trainer(launcher, execution)
    record = read_record(launcher.folder(execution))
    assert record is not None

    os.killpg(record.supervisor_pid, signal.SIGKILL)
    status = finished(launcher, execution)

    assert status.state is ExecutionState.FAILED
    assert "supervisor" in (status.message or "")


def test_unknown_and_malformed_execution_names(launcher):
    assert launcher.status("local-000000000000").state is ExecutionState.NOT_FOUND
    launcher.cancel("local-000000000000")  # nothing to stop: not an error
    with pytest.raises(InvalidRequestError):
        launcher.status("../../etc")


def test_a_command_that_cannot_start_fails_the_execution(tmp_path):
    launcher = LocalLauncher(tmp_path / "executions", command=["/no/such/trainer"], max_retries=3)

    status = finished(launcher, launcher.launch(job("pass")))

    assert status.state is ExecutionState.FAILED
    assert "cannot start the trainer" in (status.message or "")


def test_exit_descriptions():
    assert describe_exit(0, 1) == "attempt 0 exited with code 1"
    assert describe_exit(2, -signal.SIGTERM) == "attempt 2 was killed by SIGTERM"
    assert describe_exit(1, -9) == "attempt 1 was killed by SIGKILL (out of memory?)"


def test_an_attempt_past_the_task_timeout_is_stopped_and_retried(tmp_path):
    launcher = LocalLauncher(
        tmp_path / "executions",
        command=[sys.executable, "-c", TASK],
        max_retries=1,
        task_timeout_seconds=1.5,
    )
    try:
        started = time.monotonic()
        execution = launcher.launch(job("report-timeout"))
        status = finished(launcher, execution, timeout=30)
    finally:
        launcher.kill_all()

    # Each attempt got its own timeout (as on Cloud Run), then counted as failed.
    assert status.state is ExecutionState.FAILED
    assert status.attempts == 2
    assert status.message == "attempt 1 timed out after 1.5 s"
    assert time.monotonic() - started < 20  # stopped by SIGTERM, not after its 60 s sleep
    log = launcher.log_path(execution).read_text()
    assert log.count("told 2 0") == 2  # the trainer hears the timeout (rounded up)
