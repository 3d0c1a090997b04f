"""The Cloud Run launcher: one execution of the trainer job per training job.

`run_job` returns a long-running operation whose metadata already names the
new execution, so `launch` returns without waiting for the training to end.
The overrides are the job's id, its task timeout and the attempt count it goes on
from (`tuning.launchers.trainer_environment`): the trainer reads everything else
(config, secret references) itself, so no secret ever sits in an execution's
definition.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.cloud import run_v2
from google.protobuf import duration_pb2

from tuning.errors import NotFoundError, TuningError
from tuning.gcp.errors import google_api_errors
from tuning.gcp.permissions import requires
from tuning.jobs import JobRecord
from tuning.launchers import ExecutionState, ExecutionStatus, trainer_environment

COMPLETED_CONDITION = "Completed"
_CANCEL_REASONS = {
    run_v2.Condition.ExecutionReason.CANCELLED,
    run_v2.Condition.ExecutionReason.CANCELLING,
}


def job_path(project: str, region: str, job_name: str) -> str:
    return f"projects/{project}/locations/{region}/jobs/{job_name}"


def run_job_request(
    job_resource: str, job: JobRecord, *, task_timeout_seconds: int
) -> run_v2.RunJobRequest:
    """The request that starts one execution for `job`: the job's id, its task timeout
    (the `timeout` override applies to each task attempt:
    https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.jobs/run), and
    the same timeout told to the trainer so that it checkpoints before it."""
    environment = trainer_environment(job, task_timeout_seconds=task_timeout_seconds)
    container = run_v2.RunJobRequest.Overrides.ContainerOverride(
        env=[run_v2.EnvVar(name=name, value=value) for name, value in environment.items()]
    )
    return run_v2.RunJobRequest(
        name=job_resource,
        overrides=run_v2.RunJobRequest.Overrides(
            container_overrides=[container],
            timeout=duration_pb2.Duration(seconds=task_timeout_seconds),
        ),
    )


def execution_status(execution: run_v2.Execution) -> ExecutionStatus:
    """What an execution resource says about how its (single) task went."""
    completed = next((c for c in execution.conditions if c.type_ == COMPLETED_CONDITION), None)
    failed = [c for c in execution.conditions if c.state == run_v2.Condition.State.CONDITION_FAILED]
    message = (completed.message if completed else "") or (failed[0].message if failed else "")
    finished_at: datetime | None = execution.completion_time
    state: ExecutionState
    if execution.cancelled_count or (completed and completed.execution_reason in _CANCEL_REASONS):
        state = ExecutionState.CANCELLED
    elif finished_at or (completed and completed.state == run_v2.Condition.State.CONDITION_FAILED):
        done = execution.succeeded_count >= max(execution.task_count, 1)
        state = ExecutionState.SUCCEEDED if done else ExecutionState.FAILED
    elif completed and completed.state == run_v2.Condition.State.CONDITION_SUCCEEDED:
        state = ExecutionState.SUCCEEDED
    elif execution.running_count:
        state = ExecutionState.RUNNING
    else:
        state = ExecutionState.PENDING
    started = execution.running_count + execution.succeeded_count + execution.failed_count
    return ExecutionStatus(
        state=state,
        message=message or None,
        finished_at=finished_at,
        # Per-task retry counts need the Tasks API; a retried task counts at least twice.
        attempts=started + execution.retried_count,
    )


class CloudRunLauncher:
    """Runs the trainer as executions of one Cloud Run job."""

    def __init__(
        self,
        *,
        project: str,
        region: str,
        job_name: str,
        task_timeout_seconds: int = 3600,
        jobs_client: Any = None,
        executions_client: Any = None,
    ) -> None:
        self.job_resource = job_path(project, region, job_name)
        self.task_timeout_seconds = task_timeout_seconds
        # Clients are made on first use: creating them costs cold-start time.
        self._jobs_client = jobs_client
        self._executions_client = executions_client

    @property
    def jobs_client(self) -> Any:
        if self._jobs_client is None:
            self._jobs_client = run_v2.JobsClient()
        return self._jobs_client

    @property
    def executions_client(self) -> Any:
        if self._executions_client is None:
            self._executions_client = run_v2.ExecutionsClient()
        return self._executions_client

    @requires("run.jobs.run", "run.jobs.runWithOverrides", "iam.serviceAccounts.actAs")
    def launch(self, job: JobRecord) -> str:
        """Start an execution and return its full resource name, without waiting for it."""
        request = run_job_request(
            self.job_resource, job, task_timeout_seconds=self.task_timeout_seconds
        )
        with google_api_errors("Cloud Run", self.job_resource):
            operation = self.jobs_client.run_job(request=request)
            execution: run_v2.Execution | None = operation.metadata
        if execution is None or not execution.name:
            raise TuningError(f"Cloud Run started {self.job_resource} but named no execution")
        return str(execution.name)

    @requires("run.executions.get")
    def status(self, execution: str) -> ExecutionStatus:
        try:
            with google_api_errors("Cloud Run", execution):
                resource = self.executions_client.get_execution(name=execution)
        except NotFoundError:
            return ExecutionStatus(state=ExecutionState.NOT_FOUND, message="no such execution")
        return execution_status(resource)

    @requires("run.executions.cancel")
    def cancel(self, execution: str) -> None:
        """Ask Cloud Run to cancel; an execution that is gone or already over is left alone."""
        try:
            with google_api_errors("Cloud Run", execution):
                self.executions_client.cancel_execution(name=execution)
        except (NotFoundError, api_exceptions.FailedPrecondition):
            return
