"""Start, inspect and stop trainer executions: Cloud Run in production, a process locally.

Both implementations honour one small interface so that dispatch, reconcile,
cancel and delete never know which one they talk to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from tuning.jobs import JobRecord


def execution_id(name: str) -> str:
    """An execution's own id. Cloud Run's API names an execution
    `projects/P/locations/R/jobs/J/executions/ID`, and its container sees only `ID` in
    CLOUD_RUN_EXECUTION, so the two are compared by this."""
    return name.rstrip("/").rsplit("/", 1)[-1]


def same_execution(first: str, second: str) -> bool:
    return execution_id(first) == execution_id(second)


class ExecutionState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NOT_FOUND = "not_found"

    @property
    def is_finished(self) -> bool:
        return self not in {ExecutionState.PENDING, ExecutionState.RUNNING}


@dataclass(frozen=True)
class ExecutionStatus:
    state: ExecutionState
    message: str | None = None
    finished_at: datetime | None = None
    attempts: int = 0


def trainer_environment(job: JobRecord, *, task_timeout_seconds: int | None) -> dict[str, str]:
    """What an execution of the trainer is told beyond its job template: which job, the
    task timeout it must checkpoint before, and (continuing a job that already ran in an
    execution) the attempts before it, so that attempts are numbered over the whole job."""
    environment = {"JOB_ID": job.job_id}
    if task_timeout_seconds is not None:
        environment["TRAINER_TASK_TIMEOUT_SECONDS"] = str(task_timeout_seconds)
    environment["TRAINER_ATTEMPT_BASE"] = str(job.attempt + 1 if job.executions else 0)
    return environment


class Launcher(Protocol):
    def launch(self, job: JobRecord) -> str:
        """Start an execution for the job and return its name, without waiting for it."""
        ...

    def status(self, execution: str) -> ExecutionStatus:
        """Where the execution stands now."""
        ...

    def cancel(self, execution: str) -> None:
        """Stop the execution; a finished or unknown execution is left as it is."""
        ...
