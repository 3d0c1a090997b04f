"""The event-driven core as it runs locally: real servers, real push subscriptions.

`EventCoreStack.start` gives a test its own buckets, topics, jobs collection and
launcher directory (names carry a unique suffix), starts the dispatch,
on_job_event and reconcile functions as functions-framework servers, and wires
Pub/Sub push subscriptions to them with `tuning.local.bootstrap`. Trainers are
`tests/fixtures/fake_trainer.py` processes started by the local launcher.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

from tuning.gcp.pubsub import Publisher, PubSubAdmin
from tuning.jobs import JobRecord
from tuning.launchers.local import LocalLauncher, read_record
from tuning.local.bootstrap import DeliveryPolicy, LocalResources, bootstrap, push_endpoint
from tuning.local.functions import FunctionServer, start_function, stop_function
from tuning.services import Services
from tuning.settings import LauncherSettings
from tuning.spec import JobReference, TrainRequest, parse_train_request
from tuning.submission import submit_job

REPO = Path(__file__).resolve().parents[2]
FAKE_TRAINER = REPO / "tests" / "fixtures" / "fake_trainer.py"
T = TypeVar("T")

# A rejected push comes back about once a second (no retry policy: see DeliveryPolicy).
TEST_DISPATCH = DeliveryPolicy(ack_deadline_seconds=30, max_delivery_attempts=100)
TEST_EVENTS = DeliveryPolicy(ack_deadline_seconds=30, max_delivery_attempts=10)


def train_request(**changes: Any) -> TrainRequest:
    """A small valid request without secrets."""
    data: dict[str, Any] = {
        "processed_dataset_id": "dataset_abc123",
        "job_name": "event-core",
        "training_config": {"base_model_id": "google/gemma-3-1b-it", "method": "LoRA"},
    }
    data.update(changes)
    return parse_train_request(data)


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, interval: float = 0.2, what: str = ""
) -> T:
    """The first truthy value `probe` returns, polling until `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}")
        time.sleep(interval)


@dataclass
class EventCoreStack:
    unique: str
    workdir: Path
    environ: dict[str, str]
    settings: LauncherSettings
    services: Services
    launcher: LocalLauncher
    admin: PubSubAdmin
    publisher: Publisher
    servers: dict[str, FunctionServer]
    resources: LocalResources
    extra_subscriptions: list[str] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        workdir: Path,
        unique: str,
        *,
        dispatch_policy: DeliveryPolicy = TEST_DISPATCH,
        events_policy: DeliveryPolicy = TEST_EVENTS,
        **variables: str,
    ) -> EventCoreStack:
        """Start the three functions with `variables` on top of the test environment."""
        project = os.environ["GOOGLE_CLOUD_PROJECT"]
        for folder in ("executions", "records", "control", "logs"):
            (workdir / folder).mkdir(parents=True, exist_ok=True)
        environ = {
            **os.environ,
            "PROJECT_ID": project,
            "GCS_CONFIG_BUCKET_NAME": f"config-{unique}",
            "GCS_DATA_BUCKET_NAME": f"data-{unique}",
            "GCS_MODELS_BUCKET_NAME": f"models-{unique}",
            "TRAINING_REQUESTS_TOPIC": f"requests-{unique}",
            "JOB_EVENTS_TOPIC": f"events-{unique}",
            "JOB_NOTIFICATIONS_TOPIC": f"notifications-{unique}",
            "JOBS_COLLECTION": f"jobs_{unique}",
            "SECRET_BACKEND": "local",
            "TUNING_LOCAL_SECRETS_FILE": str(workdir / "secrets.json"),
            "LAUNCHER": "local",
            "LOCAL_TRAINER_COMMAND": f"{sys.executable} {FAKE_TRAINER}",
            "LOCAL_LAUNCHER_DIR": str(workdir / "executions"),
            "TRAINER_MAX_RETRIES": "0",
            "RECONCILE_STALE_SECONDS": "900",
            "FAKE_TRAINER_RECORD_DIR": str(workdir / "records"),
            "FAKE_TRAINER_CONTROL_DIR": str(workdir / "control"),
            "LOG_FORMAT": "text",
            "THREADS": "8",
            **variables,
        }
        settings = LauncherSettings.from_env(environ)
        launcher = LocalLauncher(
            settings.local_launcher_dir,
            command=settings.local_trainer_command,
            max_retries=settings.trainer_max_retries,
            environ=environ,
        )
        services = Services(settings, launcher=launcher)
        with ThreadPoolExecutor(max_workers=3) as pool:
            started = {
                name: pool.submit(start_function, name, environ=environ, log_dir=workdir / "logs")
                for name in ("dispatch", "on_job_event", "reconcile")
            }
        servers = {name: future.result() for name, future in started.items()}
        admin = PubSubAdmin(project)
        resources = bootstrap(
            settings,
            dispatch_url=servers["dispatch"].url,
            events_url=servers["on_job_event"].url,
            dispatch_policy=dispatch_policy,
            events_policy=events_policy,
            admin=admin,
            storage=services.storage,
        )
        return cls(
            unique=unique,
            workdir=workdir,
            environ=environ,
            settings=settings,
            services=services,
            launcher=launcher,
            admin=admin,
            publisher=Publisher(project),
            servers=servers,
            resources=resources,
        )

    def stop(self) -> None:
        """Stop deliveries first, then the servers, then every trainer still running."""
        for subscription in (
            self.resources.requests_subscription,
            self.resources.events_subscription,
            *self.extra_subscriptions,
        ):
            self.admin.delete_subscription(subscription)
        with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
            # Functions keep no state: no need to wait for a graceful shutdown.
            list(pool.map(lambda server: stop_function(server, grace=0), self.servers.values()))
        self.launcher.kill_all()

    # Acting on the stack -----------------------------------------------------------

    def submit(self, request: TrainRequest | None = None, **behaviour: Any) -> str:
        """Queue a job as the submit function does; `behaviour` steers its fake trainer."""
        submitted = submit_job(
            request or train_request(),
            services=self.services,
            owner="tester@example.com",
            publish=False,
        )
        job_id = submitted.job.job_id
        if behaviour:
            self.control(job_id, **behaviour)
        self.publisher.publish(
            self.settings.requests_topic, JobReference(job_id=job_id), job_id=job_id
        )
        return job_id

    def add_dispatch_subscription(self, name: str) -> str:
        """Another push subscription to dispatch: each message is then delivered once more."""
        self.extra_subscriptions.append(name)
        return self.admin.ensure_push_subscription(
            name,
            self.settings.requests_topic,
            push_endpoint(
                self.servers["dispatch"].url, self.admin.project, self.settings.requests_topic
            ),
            ack_deadline_seconds=30,
        )

    def control(self, job_id: str, **behaviour: Any) -> None:
        """How the fake trainer behaves for one job (see tests/fixtures/fake_trainer.py)."""
        (self.workdir / "control" / f"{job_id}.json").write_text(json.dumps(behaviour))

    def publish_request(self, data: bytes, **attributes: str) -> str:
        return self.publisher.publish(self.settings.requests_topic, data, **attributes)

    def publish_event(self, event: Any) -> str:
        return self.publisher.publish(self.settings.events_topic, event, job_id=event.job_id)

    def reconcile(self) -> dict[str, Any]:
        response = requests.post(f"{self.servers['reconcile'].url}/", timeout=60)
        assert response.status_code == 200, response.text
        return dict(response.json())

    # Looking at the stack ----------------------------------------------------------

    def job(self, job_id: str) -> JobRecord:
        return self.services.jobs.get(job_id)

    def all_jobs(self) -> list[JobRecord]:
        return self.services.jobs.list_jobs(limit=100).jobs

    def executions(self, job_id: str | None = None) -> list[str]:
        """Every execution the local launcher started (for one job, when given)."""
        names = list(self.launcher.executions())
        if job_id is None:
            return names
        return [
            name
            for name in names
            if json.loads((self.launcher.directory / name / "spec.json").read_text())["job_id"]
            == job_id
        ]

    def trainer_pid(self, execution: str) -> int | None:
        record = read_record(self.launcher.directory / execution)
        return record.trainer_pid if record else None

    def trainer_runs(self) -> list[dict[str, Any]]:
        """What each fake trainer attempt wrote about itself."""
        folder = self.workdir / "records"
        return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]

    def log(self, function: str) -> str:
        return self.servers[function].log()

    def history_size(self, job_id: str) -> int:
        count, token = 0, None
        while True:
            page = self.services.jobs.list_events(job_id, limit=1000, page_token=token)
            count += len(page.events)
            token = page.next_page_token
            if token is None:
                return count
