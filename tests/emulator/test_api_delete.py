"""The delete function: delete and cancel, against the emulators."""

from __future__ import annotations

import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.cloud.pubsub_v1 import PublisherClient

from tests.emulator.test_api_stack import ApiStack, seed_request
from tuning.events import JobNotification, ProgressEvent
from tuning.gcp.pubsub import Publisher
from tuning.jobs import Artifacts, JobStatus, Progress
from tuning.launchers import ExecutionState
from tuning.launchers.factory import launcher_from_settings
from tuning.launchers.local import LocalLauncher
from tuning.local.emulators import free_port
from tuning.services import Services
from tuning.spec import parse_train_request
from tuning.submission import submit_job

# job1's prefixes are prefixes of job10's names: deleting job1 must not touch job10.
JOB, NEIGHBOUR = "training_ds_gemma_job1", "training_ds_gemma_job10"


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> ApiStack:
    return ApiStack.start(monkeypatch, tmp_path, unique)


def make_full_job(stack: ApiStack, job_id: str) -> list[str]:
    """A job with config, secrets, events and a file under every prefix; its object URIs."""
    request = parse_train_request(seed_request())
    submit_job(request, services=stack.services, owner="alice", job_id=job_id, publish=False)
    stack.services.jobs.apply_event(
        ProgressEvent(
            job_id=job_id, attempt=0, seq=1, timestamp=datetime.now(UTC), payload=Progress(step=1)
        )
    )
    uris = [
        stack.upload(f"{prefix}file.bin") for prefix in stack.settings.layout.job_prefixes(job_id)
    ]
    return [*uris, stack.settings.layout.config_uri(job_id)]


def test_delete_removes_exactly_the_jobs_files_secrets_events_and_record(stack: ApiStack) -> None:
    mine = make_full_job(stack, JOB)
    theirs = make_full_job(stack, NEIGHBOUR)
    neighbour_secrets = {
        sid: secret
        for sid, secret in stack.stored_secrets().items()
        if secret["job_id"] == NEIGHBOUR
    }

    answer = stack.delete(JOB)

    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["job_id"], body["deleted"]) == (JOB, True)
    assert body["message"] == "Job and all associated files deleted successfully."
    layout = stack.settings.layout
    assert set(body["deleted_resources"]) >= {*layout.job_prefixes(JOB), layout.config_uri(JOB)}
    assert f"{stack.settings.jobs_collection}/{JOB}" in body["deleted_resources"]
    assert sum("/secrets/" in resource for resource in body["deleted_resources"]) == 2
    remaining = stack.gcs_objects()
    assert [uri for uri in mine if uri in remaining] == []
    assert [uri for uri in theirs if uri not in remaining] == []
    assert stack.job_ids() == [NEIGHBOUR]
    assert len(stack.services.jobs.list_events(NEIGHBOUR).events) == 1
    assert stack.services.jobs.list_events(JOB).events == []
    assert stack.stored_secrets() == neighbour_secrets


def test_a_second_delete_is_404_and_touches_nothing(stack: ApiStack) -> None:
    make_full_job(stack, JOB)
    stack.delete(JOB)
    make_full_job(stack, NEIGHBOUR)
    before = stack.gcs_objects()

    again = stack.delete(JOB)

    assert again.status_code == 404
    assert stack.gcs_objects() == before
    assert stack.job_ids() == [NEIGHBOUR]


def test_a_partial_failure_is_503_and_a_retry_finishes(stack: ApiStack) -> None:
    make_full_job(stack, JOB)
    healthy_secrets = stack.secrets_file.read_text()
    stack.secrets_file.write_text("{ damaged")  # the secret store fails the first time

    failed = stack.delete(JOB)

    assert failed.status_code == 503
    assert "retry" in failed.get_json()["error"]["message"]
    assert stack.job_ids() == [JOB]  # the record stays so that a retry can find the job
    stack.secrets_file.write_text(healthy_secrets)
    retried = stack.delete(JOB)
    assert retried.status_code == 200
    assert stack.job_ids() == []
    assert stack.gcs_objects() == {}
    assert stack.stored_secrets() == {}


def test_delete_stops_a_running_execution_first(stack: ApiStack) -> None:
    launcher = stack.use_recording_launcher()
    stack.make_job(JOB, status=JobStatus.TRAINING, execution="executions/run-1")
    stack.make_job(NEIGHBOUR, status=JobStatus.COMPLETED, execution="executions/run-0")

    answers = [stack.delete(JOB), stack.delete(NEIGHBOUR)]

    assert [answer.status_code for answer in answers] == [200, 200]
    assert launcher.cancelled == ["executions/run-1"]  # a finished execution is left alone


def test_cancel_stops_the_execution_records_cancelled_and_notifies(stack: ApiStack) -> None:
    launcher = stack.use_recording_launcher()
    stack.make_job(JOB, owner="alice", status=JobStatus.TRAINING, execution="executions/run-1")

    answer = stack.cancel(JOB, caller="alice")

    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["status"], body["status_reason"]) == ("cancelled", "cancelled by alice")
    assert body["finished_at"] is not None
    assert launcher.cancelled == ["executions/run-1"]
    assert stack.services.jobs.get(JOB).status is JobStatus.CANCELLED
    [(data, attributes)] = stack.pull(stack.settings.notifications_topic, expected=1)
    notification = JobNotification.model_validate(data)
    assert (notification.job_id, notification.status, notification.previous_status) == (
        JOB,
        JobStatus.CANCELLED,
        JobStatus.TRAINING,
    )
    assert attributes == {"job_id": JOB, "status": "cancelled"}
    [event] = stack.get(f"/jobs/{JOB}/events").get_json()["events"]
    assert (event["type"], event["source"]) == ("cancelled", "user")


def test_cancel_during_a_pubsub_outage_is_503_and_its_retry_cancels_and_notifies(
    stack: ApiStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    launcher = stack.use_recording_launcher()
    stack.make_job(JOB, status=JobStatus.TRAINING, execution="executions/run-1")
    with monkeypatch.context() as outage:
        outage.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # nobody listens
        unreachable = Publisher(stack.settings.project_id, PublisherClient(), timeout=2)
    stack.apis["delete"].use(Services(stack.settings, launcher=launcher, publisher=unreachable))

    during = stack.cancel(JOB)

    # The notification could not be sent, so the cancel was not recorded either...
    assert during.status_code == 503
    assert stack.services.jobs.get(JOB).status is JobStatus.TRAINING
    stack.use_recording_launcher()

    after = stack.cancel(JOB)

    # ...and the client's retry records it and announces it, once.
    assert (after.status_code, after.get_json()["status"]) == (200, "cancelled")
    assert launcher.cancelled == ["executions/run-1", "executions/run-1"]
    notices = stack.pull(stack.settings.notifications_topic, expected=2, timeout=3)
    assert [(data["job_id"], data["status"]) for data, _ in notices] == [(JOB, "cancelled")]


def test_cancel_stops_a_real_local_execution(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str
) -> None:
    sleeper = shlex.join([sys.executable, "-c", "import time; time.sleep(120)"])
    for name, value in {
        "LAUNCHER": "local",
        "LOCAL_LAUNCHER_DIR": str(tmp_path / "executions"),
        "LOCAL_TRAINER_COMMAND": sleeper,
        "TRAINER_MAX_RETRIES": "0",
    }.items():
        monkeypatch.setenv(name, value)
    stack = ApiStack.start(monkeypatch, tmp_path, unique)
    launcher = launcher_from_settings(stack.settings)  # what the delete function builds too
    assert isinstance(launcher, LocalLauncher)
    execution = launcher.launch(stack.make_job(JOB, status=JobStatus.TRAINING))
    try:
        stack.services.jobs.update(JOB, lambda job: job.model_copy(update={"execution": execution}))

        answer = stack.cancel(JOB)

        assert (answer.status_code, answer.get_json()["status"]) == (200, "cancelled")
        deadline = time.monotonic() + 30
        while not launcher.status(execution).state.is_finished and time.monotonic() < deadline:
            time.sleep(0.1)
        assert launcher.status(execution).state is ExecutionState.CANCELLED
    finally:
        launcher.kill_all()


def test_cancel_a_queued_job_needs_no_execution(stack: ApiStack) -> None:
    launcher = stack.use_recording_launcher()
    job_id = stack.submit(seed_request()).get_json()["job_id"]

    answer = stack.cancel(job_id)

    assert (answer.status_code, answer.get_json()["status"]) == (200, "cancelled")
    assert launcher.cancelled == []


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_cancel_a_finished_job_is_409(stack: ApiStack, status: JobStatus) -> None:
    launcher = stack.use_recording_launcher()
    stack.make_job(JOB, status=status, execution="executions/run-1")

    answer = stack.cancel(JOB)

    assert answer.status_code == 409
    assert answer.get_json()["error"]["code"] == "failed_precondition"
    assert launcher.cancelled == []
    assert stack.pull(stack.settings.notifications_topic, expected=1, timeout=1) == []


def test_cancel_twice_is_409_the_second_time(stack: ApiStack) -> None:
    stack.make_job(JOB)

    first, second = stack.cancel(JOB), stack.cancel(JOB)

    assert (first.status_code, second.status_code) == (200, 409)


def test_cancel_or_delete_an_unknown_job_is_404(stack: ApiStack) -> None:
    assert stack.cancel("training_nobody").status_code == 404
    assert stack.delete("training_nobody").status_code == 404


def test_a_completed_jobs_artifacts_go_with_it(stack: ApiStack) -> None:
    layout = stack.settings.layout
    stack.make_job(JOB)
    stack.upload(layout.gguf_uri(JOB, "q8_0"))
    stack.complete_job(JOB, Artifacts(gguf_path=layout.gguf_uri(JOB, "q8_0")))

    answer = stack.delete(JOB)

    assert layout.gguf_prefix(JOB) in answer.get_json()["deleted_resources"]
    assert stack.gcs_objects() == {}
