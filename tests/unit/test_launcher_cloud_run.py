"""The Cloud Run launcher, through the real google-cloud-run clients to an in-process gRPC server.

Cloud Run cannot run here, so a small gRPC server answers the three calls the
launcher makes (RunJob, GetExecution, CancelExecution) with real `run_v2`
protos: the tests see exactly the requests the clients send and check how the
responses are parsed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.cloud import run_v2
from google.cloud.run_v2.services.executions.transports import ExecutionsGrpcTransport
from google.cloud.run_v2.services.jobs.transports import JobsGrpcTransport
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, timestamp_pb2

from tuning.errors import TransientError
from tuning.jobs import JobRecord
from tuning.launchers import ExecutionState
from tuning.launchers.cloud_run import CloudRunLauncher, execution_status

JOB = "projects/demo/locations/europe-west4/jobs/gemma-trainer"
EXECUTION = f"{JOB}/executions/gemma-trainer-x7k2p"
Condition = run_v2.Condition


@dataclass
class FakeCloudRun:
    """Records requests; answers with what the test put in `executions` or `error`."""

    run_requests: list[run_v2.RunJobRequest] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    executions: dict[str, run_v2.Execution] = field(default_factory=dict)
    error: grpc.StatusCode | None = None

    def run_job(self, request: run_v2.RunJobRequest, context: grpc.ServicerContext) -> Any:
        self.run_requests.append(request)
        self._fail_if_asked(context)
        metadata = any_pb2.Any()
        metadata.Pack(run_v2.Execution.pb(run_v2.Execution(name=EXECUTION, job=JOB)))
        return operations_pb2.Operation(name="operations/run-1", metadata=metadata)

    def get_execution(self, request: run_v2.GetExecutionRequest, context: Any) -> Any:
        self._fail_if_asked(context)
        if request.name not in self.executions:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such execution")
        return self.executions[request.name]

    def cancel_execution(self, request: run_v2.CancelExecutionRequest, context: Any) -> Any:
        self._fail_if_asked(context)
        self.cancelled.append(request.name)
        return operations_pb2.Operation(name="operations/cancel-1")

    def _fail_if_asked(self, context: grpc.ServicerContext) -> None:
        if self.error is not None:
            context.abort(self.error, "injected")


def handler(method: Callable[..., Any], request_type: Any, response_type: Any) -> Any:
    return grpc.unary_unary_rpc_method_handler(
        method,
        request_deserializer=request_type.deserialize,
        response_serializer=response_type.SerializeToString
        if hasattr(response_type, "SerializeToString")
        else response_type.serialize,
    )


@pytest.fixture
def cloud_run() -> Iterator[tuple[FakeCloudRun, CloudRunLauncher]]:
    fake = FakeCloudRun()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "google.cloud.run.v2.Jobs",
                {"RunJob": handler(fake.run_job, run_v2.RunJobRequest, operations_pb2.Operation)},
            ),
            grpc.method_handlers_generic_handler(
                "google.cloud.run.v2.Executions",
                {
                    "GetExecution": handler(
                        fake.get_execution, run_v2.GetExecutionRequest, run_v2.Execution
                    ),
                    "CancelExecution": handler(
                        fake.cancel_execution,
                        run_v2.CancelExecutionRequest,
                        operations_pb2.Operation,
                    ),
                },
            ),
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    launcher = CloudRunLauncher(
        project="demo",
        region="europe-west4",
        job_name="gemma-trainer",
        jobs_client=run_v2.JobsClient(
            transport=JobsGrpcTransport(channel=grpc.insecure_channel(address))
        ),
        executions_client=run_v2.ExecutionsClient(
            transport=ExecutionsGrpcTransport(channel=grpc.insecure_channel(address))
        ),
    )
    yield fake, launcher
    server.stop(grace=None)


def job(job_id: str = "training_ds1_gemma-3-1b-it_abc") -> JobRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return JobRecord(
        job_id=job_id,
        job_name="my job",
        base_model_id="google/gemma-3-1b-it",
        processed_dataset_id="ds1",
        created_at=now,
        updated_at=now,
        secret_references={"hf_token": "projects/p/secrets/s/versions/1"},
    )


def stamp(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def test_launch_runs_the_configured_job_with_its_id_and_task_timeout(cloud_run):
    fake, launcher = cloud_run

    execution = launcher.launch(job())

    assert execution == EXECUTION  # read from the operation's metadata, without waiting
    (request,) = fake.run_requests
    assert request.name == JOB
    (container,) = request.overrides.container_overrides
    assert [(env.name, env.value) for env in container.env] == [
        ("JOB_ID", "training_ds1_gemma-3-1b-it_abc"),
        ("TRAINER_TASK_TIMEOUT_SECONDS", "3600"),
        ("TRAINER_ATTEMPT_BASE", "0"),
    ]
    # Cloud Run stops the task at this timeout; the trainer was told the same figure.
    assert request.overrides.timeout.seconds == 3600
    assert "projects/p/secrets" not in str(request)  # no secret reference, let alone a value
    assert not container.args and not request.overrides.task_count


def test_a_continuation_numbers_its_attempts_after_the_jobs(cloud_run):
    fake, launcher = cloud_run
    # The job ran in one execution and reached attempt 2 there (a retry, then a handoff).
    launcher.launch(job().model_copy(update={"executions": 1, "attempt": 2}))

    (request,) = fake.run_requests
    (container,) = request.overrides.container_overrides
    assert {env.name: env.value for env in container.env}["TRAINER_ATTEMPT_BASE"] == "3"


def test_launch_when_cloud_run_is_unavailable_is_transient(cloud_run):
    fake, launcher = cloud_run
    fake.error = grpc.StatusCode.UNAVAILABLE

    with pytest.raises(TransientError):
        launcher.launch(job())


@pytest.mark.parametrize(
    ("execution", "state", "message"),
    [
        (run_v2.Execution(task_count=1, running_count=1), ExecutionState.RUNNING, None),
        (run_v2.Execution(task_count=1), ExecutionState.PENDING, None),
        (
            run_v2.Execution(
                task_count=1,
                succeeded_count=1,
                completion_time=stamp(1_800_000_000),
                conditions=[
                    Condition(
                        type_="Completed",
                        state=Condition.State.CONDITION_SUCCEEDED,
                        message="Execution completed successfully.",
                    )
                ],
            ),
            ExecutionState.SUCCEEDED,
            "Execution completed successfully.",
        ),
        (
            run_v2.Execution(
                task_count=1,
                failed_count=1,
                retried_count=1,
                completion_time=stamp(1_800_000_000),
                conditions=[
                    Condition(
                        type_="Completed",
                        state=Condition.State.CONDITION_FAILED,
                        message="Task gemma-trainer-x7k2p-0 failed: exit code 137 (OOM).",
                        execution_reason=Condition.ExecutionReason.NON_ZERO_EXIT_CODE,
                    )
                ],
            ),
            ExecutionState.FAILED,
            "Task gemma-trainer-x7k2p-0 failed: exit code 137 (OOM).",
        ),
        (
            run_v2.Execution(
                task_count=1,
                cancelled_count=1,
                completion_time=stamp(1_800_000_000),
                conditions=[
                    Condition(
                        type_="Completed",
                        state=Condition.State.CONDITION_FAILED,
                        execution_reason=Condition.ExecutionReason.CANCELLED,
                        message="The execution was cancelled.",
                    )
                ],
            ),
            ExecutionState.CANCELLED,
            "The execution was cancelled.",
        ),
    ],
)
def test_status_maps_the_execution_resource(cloud_run, execution, state, message):
    fake, launcher = cloud_run
    fake.executions[EXECUTION] = run_v2.Execution(execution, name=EXECUTION)

    status = launcher.status(EXECUTION)

    assert status.state is state
    assert status.message == message
    assert (status.finished_at is not None) == state.is_finished


def test_a_failed_execution_counts_its_retried_attempts():
    status = execution_status(
        run_v2.Execution(
            task_count=1, failed_count=1, retried_count=1, completion_time=stamp(1_800_000_000)
        )
    )

    assert status.state is ExecutionState.FAILED
    assert status.attempts == 2
    assert status.finished_at == datetime.fromtimestamp(1_800_000_000, UTC)


def test_status_of_a_deleted_execution_is_not_found(cloud_run):
    _, launcher = cloud_run

    assert launcher.status(EXECUTION).state is ExecutionState.NOT_FOUND


def test_cancel_asks_cloud_run_and_tolerates_gone_or_finished_executions(cloud_run):
    fake, launcher = cloud_run

    launcher.cancel(EXECUTION)
    fake.error = grpc.StatusCode.NOT_FOUND
    launcher.cancel(EXECUTION)
    fake.error = grpc.StatusCode.FAILED_PRECONDITION
    launcher.cancel(EXECUTION)

    assert fake.cancelled == [EXECUTION]
