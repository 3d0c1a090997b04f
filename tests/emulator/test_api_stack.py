"""The three HTTP functions on the emulators: a per-test stack the API tests share.

Each test gets its own buckets, topics, pull subscriptions, jobs collection and local
secrets file (names carry the test's unique suffix), and fresh function apps created by
functions-framework from `functions/<name>/main.py`, which read that environment at
their first request, as they do when deployed.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tuning.api.removal import DeleteSettings
from tuning.events import CompletedEvent, CompletedPayload
from tuning.gcp.pubsub import PubSubAdmin
from tuning.http import Api
from tuning.jobs import Artifacts, JobRecord, JobStatus, Metrics, new_job_record
from tuning.launchers import ExecutionState, ExecutionStatus
from tuning.local.scratch import unique_names
from tuning.services import Services
from tuning.spec import parse_train_request

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
ENTRY_POINTS = {
    "submit": "submit_training_job",
    "status": "serve_job_status",
    "delete": "delete_or_cancel_job",
}


def restore_framework_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """create_app sets FUNCTION_TARGET and FUNCTION_SIGNATURE_TYPE for good: undo it after."""
    for name in ("FUNCTION_TARGET", "FUNCTION_SIGNATURE_TYPE"):
        monkeypatch.delenv(name, raising=False)


def seed_request() -> dict[str, Any]:
    """The seed service's example request, with secrets the tests look for."""
    return json.loads((FIXTURES / "api" / "train_request_with_secrets.json").read_text())


def fake_id_token(**claims: Any) -> str:
    """An ID token as Cloud Run hands it on after IAM checked it: signature removed."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.SIGNATURE_REMOVED_BY_GOOGLE"


def caller_headers(caller: str | None) -> dict[str, str]:
    """What a function receives from Cloud Run's front end for a checked caller's token."""
    if caller is None:
        return {}
    return {"Authorization": f"Bearer {fake_id_token(email=caller, sub=caller)}"}


class RecordingLauncher:
    """Cloud Run cannot run here; this stands in for it only to see what was stopped."""

    def __init__(self) -> None:
        self.cancelled: list[str] = []

    def launch(self, job: JobRecord) -> str:
        raise AssertionError("the API functions never launch executions")

    def status(self, execution: str) -> ExecutionStatus:
        return ExecutionStatus(state=ExecutionState.RUNNING)

    def cancel(self, execution: str) -> None:
        self.cancelled.append(execution)


@dataclass
class ApiStack:
    unique: str
    settings: DeleteSettings
    services: Services
    admin: PubSubAdmin
    secrets_file: Path
    clients: dict[str, FlaskClient]
    apis: dict[str, Api]
    launcher: RecordingLauncher = field(default_factory=RecordingLauncher)

    @classmethod
    def start(
        cls,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
        unique: str,
        *,
        owner_scoping: bool = False,
        create_requests_topic: bool = True,
    ) -> ApiStack:
        project = os.environ["GOOGLE_CLOUD_PROJECT"]
        environment = {
            **unique_names(unique),
            "SECRET_BACKEND": "local",
            "TUNING_LOCAL_SECRETS_FILE": str(tmp_path / "secrets" / "local.json"),
            "TUNING_LOCAL_SIGNER_KEY_FILE": str(tmp_path / "signer" / "key.json"),
            "OWNER_SCOPING": str(owner_scoping).lower(),
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        restore_framework_variables(monkeypatch)
        settings = DeleteSettings.from_env()
        services = Services(settings)
        for bucket in (settings.config_bucket, settings.data_bucket, settings.models_bucket):
            services.storage.create_bucket_if_absent(bucket)
        admin = PubSubAdmin(project)
        topics = [settings.notifications_topic, settings.events_topic]
        if create_requests_topic:
            topics.append(settings.requests_topic)
        for topic in topics:
            admin.ensure_topic(topic)
            admin.ensure_pull_subscription(f"{topic}-pull", topic, ack_deadline_seconds=10)
        clients, apis = {}, {}
        for name, target in ENTRY_POINTS.items():
            app = functions_framework.create_app(
                target=target, source=str(REPO / "functions" / name / "main.py")
            )
            apis[name] = sys.modules["main"].API  # the module create_app just loaded
            clients[name] = app.test_client()
        return cls(
            unique=unique,
            settings=settings,
            services=services,
            admin=admin,
            secrets_file=Path(environment["TUNING_LOCAL_SECRETS_FILE"]),
            clients=clients,
            apis=apis,
        )

    # Driving the functions -------------------------------------------------

    def use_recording_launcher(self) -> RecordingLauncher:
        """Serve the delete function with the recording launcher (Cloud Run cannot run here)."""
        self.apis["delete"].use(Services(self.settings, launcher=self.launcher))
        return self.launcher

    def submit(
        self, body: Any, *, caller: str | None = None, key: str | None = None
    ) -> TestResponse:
        headers = caller_headers(caller)
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.clients["submit"].post("/train", json=body, headers=headers)

    def get(self, path: str, *, caller: str | None = None, **query: Any) -> TestResponse:
        headers = caller_headers(caller)
        return self.clients["status"].get(path, query_string=query, headers=headers)

    def delete(self, job_id: str, *, caller: str | None = None) -> TestResponse:
        headers = caller_headers(caller)
        return self.clients["delete"].delete(f"/jobs/{job_id}", headers=headers)

    def cancel(self, job_id: str, *, caller: str | None = None) -> TestResponse:
        headers = caller_headers(caller)
        return self.clients["delete"].post(f"/jobs/{job_id}/cancel", headers=headers)

    # Making and inspecting state -------------------------------------------

    def make_job(
        self,
        job_id: str,
        *,
        owner: str | None = None,
        status: JobStatus = JobStatus.QUEUED,
        created_at: datetime | None = None,
        execution: str | None = None,
    ) -> JobRecord:
        """A job record written straight to Firestore (as dispatch and events would leave it)."""
        request = parse_train_request(
            {
                "processed_dataset_id": "ds1",
                "job_name": f"job {job_id}",
                "training_config": {"base_model_id": "google/gemma-3-1b-it"},
            }
        )
        record = new_job_record(
            request,
            job_id=job_id,
            owner=owner,
            config_uri=None,
            secret_references={},
            now=created_at or datetime.now(UTC),
        ).model_copy(update={"status": status, "execution": execution})
        stored, created = self.services.jobs.create(record)
        assert created
        return stored

    def complete_job(self, job_id: str, artifacts: Artifacts) -> JobRecord:
        """Apply the trainer's `completed` event through the state machine."""
        event = CompletedEvent(
            job_id=job_id,
            attempt=0,
            seq=99,
            timestamp=datetime.now(UTC),
            payload=CompletedPayload(
                artifacts=artifacts, metrics=Metrics(eval_loss=0.5, perplexity=1.65, accuracy=0.8)
            ),
        )
        transition = self.services.jobs.apply_event(event)
        assert transition is not None and transition.after.status is JobStatus.COMPLETED
        return transition.after

    def upload(self, uri: str, data: bytes = b"weights") -> str:
        return self.services.storage.upload_bytes(uri, data)

    def pull(self, topic: str, *, expected: int, timeout: float = 10) -> list[Any]:
        """Messages on a topic (decoded JSON with their attributes), waiting for `expected`."""
        messages = self.admin.pull(f"{topic}-pull", max_messages=expected, timeout=timeout)
        return [(json.loads(data), attributes) for data, attributes in messages]

    def firestore_dump(self) -> str:
        """Every document of the jobs collection and its subcollections, as text."""
        documents = []
        for snapshot in self.services.jobs.jobs.stream():
            documents.append(snapshot.to_dict())
            for collection in snapshot.reference.collections():
                documents.extend(child.to_dict() for child in collection.stream())
        return json.dumps(documents, default=str)

    def job_ids(self) -> list[str]:
        return sorted(snapshot.id for snapshot in self.services.jobs.jobs.stream())

    def gcs_objects(self) -> dict[str, bytes]:
        """Every object in the stack's three buckets, with its content."""
        settings, storage = self.settings, self.services.storage
        objects = {}
        for bucket in (settings.config_bucket, settings.data_bucket, settings.models_bucket):
            for uri in storage.list(f"gs://{bucket}/"):
                objects[uri] = storage.download_bytes(uri)
        return objects

    def stored_secrets(self) -> dict[str, Any]:
        if not self.secrets_file.exists():
            return {}
        return dict(json.loads(self.secrets_file.read_text())["secrets"])


def now_minus(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


# The stack itself -----------------------------------------------------------


def test_every_function_answers_health_and_the_same_document(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str
) -> None:
    stack = ApiStack.start(monkeypatch, tmp_path, unique)

    health = {name: client.get("/health") for name, client in stack.clients.items()}
    documents = [client.get("/openapi.json").get_json() for client in stack.clients.values()]

    assert {name: answer.get_json() for name, answer in health.items()} == {
        name: {"status": "ok", "function": name} for name in ENTRY_POINTS
    }
    assert documents[0]["openapi"] == "3.1.0"
    assert documents[0] == documents[1] == documents[2]


def test_functions_read_their_settings_at_the_first_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str
) -> None:
    monkeypatch.delenv("JOBS_COLLECTION", raising=False)
    restore_framework_variables(monkeypatch)
    app = functions_framework.create_app(
        target="serve_job_status", source=str(REPO / "functions" / "status" / "main.py")
    )
    # The environment is complete only after the module was loaded.
    stack = ApiStack.start(monkeypatch, tmp_path, unique)
    stack.make_job(f"job-{unique}")

    answer = app.test_client().get("/jobs")

    assert answer.status_code == 200
    assert [job["job_id"] for job in answer.get_json()["jobs"]] == [f"job-{unique}"]
