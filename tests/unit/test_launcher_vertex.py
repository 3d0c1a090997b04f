"""The Vertex AI launcher, through its real HTTP calls to an in-process stand-in of the REST API.

Vertex AI cannot run here, so a small HTTP server answers the three calls the launcher
makes (customJobs create, get and cancel) as the v1 REST API does: it records each request,
keeps the custom jobs it created in the states a test sets, answers 404 for an unknown
job, 400 FAILED_PRECONDITION for cancelling a finished one, and any error a test injects.
The launcher talks to it with a plain `requests.Session`, which carries no credentials.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from google.api_core import exceptions as api_exceptions

from tuning.errors import TransientError, TuningError
from tuning.gcp.permissions import operations_of
from tuning.jobs import JobRecord
from tuning.launchers import ExecutionState
from tuning.launchers.vertex import (
    LABEL_VALUE_MAX,
    VertexLauncher,
    custom_job_status,
    display_name,
    is_custom_job,
    label_value,
)

PARENT = "projects/demo/locations/europe-west4"
# Vertex names a created job by project number, not id: the launcher returns what it is told.
CUSTOM_JOB = "projects/123456789/locations/europe-west4/customJobs/8123456789012345678"
FINISHED = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}


@dataclass
class Request:
    method: str
    path: str
    body: Any
    headers: dict[str, str]


@dataclass
class FakeVertex:
    """Records requests; answers with the jobs in `jobs` or the errors queued in `errors`."""

    requests: list[Request] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[tuple[int, str | None]] = field(default_factory=list)  # (HTTP status, rpc status)

    def answer(self, request: Request) -> tuple[int, Any]:
        self.requests.append(request)
        if self.errors:
            status, rpc_status = self.errors.pop(0)
            if rpc_status is None:
                return status, "<html>upstream error</html>"
            return status, error_body(status, rpc_status, "injected")
        path = request.path.removeprefix("/v1/")
        if request.method == "POST" and path == f"{PARENT}/customJobs":
            created = {**request.body, "name": CUSTOM_JOB, "state": "JOB_STATE_PENDING"}
            self.jobs[CUSTOM_JOB] = created
            return 200, created
        name, _, verb = path.partition(":")
        if name not in self.jobs:
            return 404, error_body(404, "NOT_FOUND", f'The CustomJob "{name}" does not exist.')
        job = self.jobs[name]
        if request.method == "GET" and not verb:
            return 200, job
        if request.method == "POST" and verb == "cancel":
            if job["state"] in FINISHED:
                message = f"The job {name} is in state {job['state']} and cannot be cancelled."
                return 400, error_body(400, "FAILED_PRECONDITION", message)
            job["state"] = "JOB_STATE_CANCELLING"
            return 200, {}
        return 404, error_body(404, "NOT_FOUND", "no such method")


def error_body(code: int, status: str, message: str) -> dict[str, Any]:
    # The shape of Google's REST errors: https://cloud.google.com/apis/design/errors#http_mapping
    return {"error": {"code": code, "message": message, "status": status}}


def serve(fake: FakeVertex) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            status, answer = fake.answer(
                Request(
                    self.command, self.path, body, {k.lower(): v for k, v in self.headers.items()}
                )
            )
            data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    ).start()
    return server


def make_launcher(endpoint: str, **overrides: Any) -> VertexLauncher:
    settings: dict[str, Any] = {
        "machine_type": "a3-highgpu-8g",
        "accelerator_type": "NVIDIA_H100_80GB",
        "accelerator_count": 8,
        "image_uri": "europe-west4-docker.pkg.dev/demo/tuning/trainer:latest",
        "service_account": "tuning-trainer@demo.iam.gserviceaccount.com",
        "task_timeout_seconds": 86400,
        "session": requests.Session(),
        "endpoint": endpoint,
        "extra_env": {"PROJECT_ID": "demo", "GCS_MODELS_BUCKET_NAME": "demo-models"},
    }
    return VertexLauncher("demo", "europe-west4", **(settings | overrides))


def fake_endpoint(vertex: tuple[FakeVertex, VertexLauncher]) -> str:
    """The stand-in's address, for a launcher configured otherwise than the fixture's."""
    return vertex[1].endpoint


@pytest.fixture
def vertex() -> Iterator[tuple[FakeVertex, VertexLauncher]]:
    fake = FakeVertex()
    server = serve(fake)
    yield fake, make_launcher(f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()
    server.server_close()


def job(job_id: str = "training_ds1_gemma-3-27b-it_abc") -> JobRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return JobRecord(
        job_id=job_id,
        job_name="my job",
        base_model_id="google/gemma-3-27b-it",
        processed_dataset_id="ds1",
        created_at=now,
        updated_at=now,
        secret_references={"hf_token": "projects/p/secrets/s/versions/1"},
    )


def test_launch_creates_one_custom_job_on_the_tiers_machine_under_torchrun(vertex):
    fake, launcher = vertex

    execution = launcher.launch(job())

    assert execution == CUSTOM_JOB  # the name Vertex gave, without waiting for the job
    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", f"/v1/{PARENT}/customJobs")
    assert request.body == {
        "displayName": "training_ds1_gemma-3-27b-it_abc",
        "labels": {"system": "gemma-tuning", "job_id": "training_ds1_gemma-3-27b-it_abc"},
        "jobSpec": {
            "workerPoolSpecs": [
                {
                    "machineSpec": {
                        "machineType": "a3-highgpu-8g",
                        "acceleratorType": "NVIDIA_H100_80GB",
                        "acceleratorCount": 8,
                    },
                    "replicaCount": "1",
                    "containerSpec": {
                        "imageUri": "europe-west4-docker.pkg.dev/demo/tuning/trainer:latest",
                        "command": [
                            "torchrun",
                            "--standalone",
                            "--nproc_per_node=8",
                            "-m",
                            "trainer",
                        ],
                        "env": [
                            {"name": "PROJECT_ID", "value": "demo"},
                            {"name": "GCS_MODELS_BUCKET_NAME", "value": "demo-models"},
                            {"name": "JOB_ID", "value": "training_ds1_gemma-3-27b-it_abc"},
                            {"name": "TRAINER_TASK_TIMEOUT_SECONDS", "value": "86400"},
                            {"name": "TRAINER_ATTEMPT_BASE", "value": "0"},
                        ],
                    },
                }
            ],
            "serviceAccount": "tuning-trainer@demo.iam.gserviceaccount.com",
            # Vertex stops the job at this timeout; the trainer was told the same figure.
            "scheduling": {"timeout": "86400s"},
        },
    }
    assert "projects/p/secrets" not in json.dumps(request.body)  # no secret reference at all
    assert request.headers["content-type"] == "application/json"


def test_a_continuation_numbers_its_attempts_after_the_jobs_and_peers_a_network(vertex):
    fake, _ = vertex
    launcher = make_launcher(
        fake_endpoint(vertex), network="projects/123456789/global/networks/tuning"
    )

    launcher.launch(job().model_copy(update={"executions": 1, "attempt": 2}))

    (request,) = fake.requests
    (pool,) = request.body["jobSpec"]["workerPoolSpecs"]
    environment = {item["name"]: item["value"] for item in pool["containerSpec"]["env"]}
    assert environment["TRAINER_ATTEMPT_BASE"] == "3"
    assert request.body["jobSpec"]["network"] == "projects/123456789/global/networks/tuning"


def test_a_machine_without_accelerators_runs_one_process(vertex):
    fake, _ = vertex
    launcher = make_launcher(fake_endpoint(vertex), accelerator_type="", accelerator_count=0)

    launcher.launch(job())

    (pool,) = fake.requests[0].body["jobSpec"]["workerPoolSpecs"]
    assert pool["machineSpec"] == {"machineType": "a3-highgpu-8g"}
    assert "--nproc_per_node=1" in pool["containerSpec"]["command"]


def test_long_or_odd_job_ids_become_valid_distinct_labels_and_display_names():
    first = "Training_" + "x" * 120 + "_ONE"
    second = "Training_" + "x" * 120 + "_TWO"

    assert label_value("training_ds1_gemma-3-1b-it_abc") == "training_ds1_gemma-3-1b-it_abc"
    assert label_value("Job.ID/ä") == "job-id--"
    for value in (label_value(first), label_value(second)):
        assert len(value) <= LABEL_VALUE_MAX
        assert set(value) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-")
    assert label_value(first) != label_value(second)  # the hash of the whole id tells them apart
    assert len(display_name("j" * 300)) == 128


@pytest.mark.parametrize(
    "extra_env",
    [{"JOB_ID": "another"}, {"HF_TOKEN": "hf_x"}, {"WANDB_API_KEY": "k"}],
)
def test_extra_env_may_neither_override_the_job_nor_carry_a_credential(extra_env):
    with pytest.raises(ValueError, match="extra_env"):
        make_launcher("http://127.0.0.1:9", extra_env=extra_env)


def test_the_credentials_are_not_looked_up_before_the_first_call(monkeypatch):
    # No Application Default Credentials exist here: constructing must not need them.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")

    launcher = make_launcher("http://127.0.0.1:9", session=None)

    assert launcher._session is None


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("JOB_STATE_QUEUED", ExecutionState.PENDING),
        ("JOB_STATE_PENDING", ExecutionState.PENDING),
        ("JOB_STATE_PAUSED", ExecutionState.PENDING),
        ("JOB_STATE_RUNNING", ExecutionState.RUNNING),
        ("JOB_STATE_UPDATING", ExecutionState.RUNNING),
        ("JOB_STATE_SUCCEEDED", ExecutionState.SUCCEEDED),
        ("JOB_STATE_FAILED", ExecutionState.FAILED),
        ("JOB_STATE_EXPIRED", ExecutionState.FAILED),
        ("JOB_STATE_PARTIALLY_SUCCEEDED", ExecutionState.FAILED),
        ("JOB_STATE_CANCELLING", ExecutionState.CANCELLED),
        ("JOB_STATE_CANCELLED", ExecutionState.CANCELLED),
    ],
)
def test_status_maps_the_custom_jobs_state(vertex, state, expected):
    fake, launcher = vertex
    fake.jobs[CUSTOM_JOB] = {"name": CUSTOM_JOB, "state": state}
    if expected.is_finished:
        fake.jobs[CUSTOM_JOB]["updateTime"] = "2026-01-01T10:00:00Z"

    status = launcher.status(CUSTOM_JOB)

    assert status.state is expected
    assert (status.finished_at is not None) == expected.is_finished
    assert (fake.requests[0].method, fake.requests[0].path) == ("GET", f"/v1/{CUSTOM_JOB}")


def test_a_failed_job_reports_its_error_and_end_time(vertex):
    fake, launcher = vertex
    fake.jobs[CUSTOM_JOB] = {
        "name": CUSTOM_JOB,
        "state": "JOB_STATE_FAILED",
        "startTime": "2026-01-01T09:00:00.5Z",
        "endTime": "2026-01-01T10:00:00.123456789Z",
        "updateTime": "2026-01-01T10:00:05Z",
        "error": {
            "code": 3,
            "message": "The replica workerpool0-0 exited with a non-zero status of 1.",
        },
    }

    status = launcher.status(CUSTOM_JOB)

    assert status.state is ExecutionState.FAILED
    assert status.message == "The replica workerpool0-0 exited with a non-zero status of 1."
    assert status.finished_at == datetime(2026, 1, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert status.attempts == 1


def test_a_queued_job_has_neither_message_nor_end():
    status = custom_job_status({"state": "JOB_STATE_QUEUED"})

    assert (status.state, status.message, status.finished_at, status.attempts) == (
        ExecutionState.PENDING,
        None,
        None,
        0,
    )


def test_status_of_an_unknown_custom_job_is_not_found(vertex):
    _, launcher = vertex

    assert launcher.status(CUSTOM_JOB).state is ExecutionState.NOT_FOUND


def test_only_custom_job_names_are_asked_about(vertex):
    _, launcher = vertex
    cloud_run = "projects/demo/locations/europe-west4/jobs/gemma-trainer/executions/x7k2p"

    assert is_custom_job(CUSTOM_JOB) and not is_custom_job(cloud_run)
    with pytest.raises(ValueError, match="custom job"):
        launcher.status(cloud_run)


def test_cancel_asks_vertex_and_tolerates_gone_or_finished_jobs(vertex):
    fake, launcher = vertex
    fake.jobs[CUSTOM_JOB] = {"name": CUSTOM_JOB, "state": "JOB_STATE_RUNNING"}
    finished = CUSTOM_JOB.replace("8123456789012345678", "1")
    fake.jobs[finished] = {"name": finished, "state": "JOB_STATE_SUCCEEDED"}
    unknown = CUSTOM_JOB.replace("8123456789012345678", "2")

    launcher.cancel(CUSTOM_JOB)
    launcher.cancel(finished)  # 400 FAILED_PRECONDITION
    launcher.cancel(unknown)  # 404

    assert [(r.method, r.path) for r in fake.requests] == [
        ("POST", f"/v1/{CUSTOM_JOB}:cancel"),
        ("POST", f"/v1/{finished}:cancel"),
        ("POST", f"/v1/{unknown}:cancel"),
    ]
    assert launcher.status(CUSTOM_JOB).state is ExecutionState.CANCELLED
    assert fake.jobs[finished]["state"] == "JOB_STATE_SUCCEEDED"


@pytest.mark.parametrize(
    ("status", "rpc_status"),
    [(503, "UNAVAILABLE"), (429, "RESOURCE_EXHAUSTED"), (500, "INTERNAL"), (502, None)],
)
def test_flaky_or_overloaded_vertex_is_transient_for_every_call(vertex, status, rpc_status):
    fake, launcher = vertex
    fake.jobs[CUSTOM_JOB] = {"name": CUSTOM_JOB, "state": "JOB_STATE_RUNNING"}

    for call in (lambda: launcher.launch(job()), lambda: launcher.status(CUSTOM_JOB)):
        fake.errors.append((status, rpc_status))
        with pytest.raises(TransientError):
            call()
    fake.errors.append((status, rpc_status))
    with pytest.raises(TransientError):
        launcher.cancel(CUSTOM_JOB)  # an unanswered cancel is retried, not taken as done


def test_a_refused_definition_fails_the_launch_for_good(vertex):
    fake, launcher = vertex
    fake.errors.append((400, "INVALID_ARGUMENT"))

    with pytest.raises(TuningError, match="refused the custom job: injected") as raised:
        launcher.launch(job())

    assert not isinstance(raised.value, TransientError)  # dispatch fails the job visibly


def test_a_missing_permission_is_raised_as_google_apis_permission_error(vertex):
    fake, launcher = vertex
    fake.errors.append((403, "PERMISSION_DENIED"))

    with pytest.raises(api_exceptions.PermissionDenied):
        launcher.launch(job())


def test_an_unreachable_endpoint_is_transient():
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()  # nothing listens there any more

    with pytest.raises(TransientError):
        make_launcher(f"http://127.0.0.1:{port}").status(CUSTOM_JOB)


def test_each_call_declares_the_vertex_permissions_it_needs():
    needed = {
        name: sorted(mark.permissions) for name, mark in operations_of(VertexLauncher).items()
    }

    assert needed == {
        "launch": ["aiplatform.customJobs.create", "iam.serviceAccounts.actAs"],
        "status": ["aiplatform.customJobs.get"],
        "cancel": ["aiplatform.customJobs.cancel"],
    }


def test_importing_the_launcher_loads_no_vertex_client_and_no_http_stack():
    # A fresh interpreter: what this module costs a function's cold start on its own.
    probe = (
        "import sys, time\n"
        "import tuning.launchers\n"
        "start = time.perf_counter()\n"
        "import tuning.launchers.vertex\n"
        "print(time.perf_counter() - start)\n"
        "print(sorted(m for m in sys.modules if m.startswith('google.cloud.aiplatform')))\n"
        "print('google.auth.transport.requests' in sys.modules)\n"
    )
    seconds, aiplatform, http_stack = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.splitlines()

    assert aiplatform == "[]"
    assert http_stack == "False"  # requests and google-auth's transport load on first call
    assert float(seconds) < 0.5  # measured ~0.01 s; generous for a loaded CI machine
