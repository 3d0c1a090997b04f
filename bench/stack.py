"""A private copy of the local stack for the benchmarks and the reliability suite.

What `make up` runs, with three differences: names (buckets, topics, collection,
folders) carry a unique suffix, so several stacks share one set of emulators; only
the functions asked for are started; and dispatch and on_job_event run from
`bench/servers/`, the real handlers instrumented (delivery log, optionally a
launcher that only records; see `bench/servers/instrument.py`). The emulators must
already run, with this process pointed at them (`tuning.local.stack.pointed_at`).

    stack = Stack.start(tmp / "stack", functions=("submit", "dispatch"))
    stack.post("submit", "/train", json=request)
    stack.launches()   # what the recording launcher was asked to start
    stack.stop()
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import requests

from bench.servers.instrument import DELIVERY_LOG_DIR, RECORDING_LAUNCHER_FILE
from tuning.gcp.pubsub import Publisher, PubSubAdmin
from tuning.local.bootstrap import (
    DeliveryPolicy,
    LocalResources,
    bootstrap,
    dead_letter_topic,
)
from tuning.local.functions import FUNCTIONS, FunctionServer, start_function, stop_function
from tuning.services import Services
from tuning.settings import LauncherSettings

REPO = Path(__file__).resolve().parents[1]
FAKE_TRAINER = REPO / "tests" / "fixtures" / "fake_trainer.py"
ALL_FUNCTIONS = ("submit", "status", "delete", "dispatch", "on_job_event", "reconcile")
INSTRUMENTED = ("dispatch", "on_job_event")
# Without a retry policy the emulator redelivers a rejected push about once a second
# (tuning/local/bootstrap.py says why); dead letters after these many attempts.
DISPATCH_POLICY = DeliveryPolicy(ack_deadline_seconds=60, max_delivery_attempts=100)
EVENTS_POLICY = DeliveryPolicy(ack_deadline_seconds=30, max_delivery_attempts=5)


def function_spec(name: str) -> Any:
    """Where functions-framework finds the function: bench/servers/ for the instrumented ones."""
    spec = FUNCTIONS[name]
    if name in INSTRUMENTED:
        # start_function resolves folders under functions/; this one lives beside it.
        spec = replace(spec, folder=f"../bench/servers/{name}")
    return spec


@dataclass
class Stack:
    unique: str
    workdir: Path
    environ: dict[str, str]
    settings: LauncherSettings
    services: Services
    admin: PubSubAdmin
    publisher: Publisher
    servers: dict[str, FunctionServer]
    resources: LocalResources | None
    captures: list[str] = field(default_factory=list)
    session: requests.Session = field(default_factory=requests.Session)

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        functions: Iterable[str] = ALL_FUNCTIONS,
        recording_launcher: bool = True,
        capture_messages: bool = False,
        dispatch_policy: DeliveryPolicy = DISPATCH_POLICY,
        events_policy: DeliveryPolicy = EVENTS_POLICY,
        **variables: str,
    ) -> Stack:
        """Start the functions with `variables` on top of the stack's environment.

        `capture_messages` adds a pull subscription to every topic before any traffic,
        so that everything published can be read back later (the secrets scan does).
        """
        unique = uuid.uuid4().hex[:8]
        for folder in ("executions", "logs", "deliveries", "trainer", "fake-records"):
            (workdir / folder).mkdir(parents=True, exist_ok=True)
        project = os.environ["GOOGLE_CLOUD_PROJECT"]
        environ = {
            **os.environ,
            "PROJECT_ID": project,
            "REGION": "local",
            "GCS_CONFIG_BUCKET_NAME": f"config-{unique}",
            "GCS_DATA_BUCKET_NAME": f"data-{unique}",
            "GCS_MODELS_BUCKET_NAME": f"models-{unique}",
            "TRAINING_REQUESTS_TOPIC": f"requests-{unique}",
            "JOB_EVENTS_TOPIC": f"events-{unique}",
            "JOB_NOTIFICATIONS_TOPIC": f"notifications-{unique}",
            "JOBS_COLLECTION": f"jobs_{unique}",
            "SECRET_BACKEND": "local",
            "TUNING_LOCAL_SECRETS_FILE": str(workdir / "secrets.json"),
            "TUNING_LOCAL_SIGNER_KEY_FILE": str(workdir / "signer-key.json"),
            "TRUST_LOCAL_IDENTITY_HEADER": "true",
            "LAUNCHER": "local",
            "LOCAL_LAUNCHER_DIR": str(workdir / "executions"),
            "LOCAL_TRAINER_COMMAND": f"{sys.executable} {FAKE_TRAINER}",
            "FAKE_TRAINER_RECORD_DIR": str(workdir / "fake-records"),
            "TRAINER_WORK_DIR": str(workdir / "trainer"),
            "TRAINER_MAX_RETRIES": "0",
            "MAX_CONCURRENT_JOBS": "1000",
            "RECONCILE_STALE_SECONDS": "900",
            "TRAINER_PROGRESS_INTERVAL_SECONDS": "0",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "WANDB_MODE": "offline",
            "LOG_FORMAT": "text",
            DELIVERY_LOG_DIR: str(workdir / "deliveries"),
            **variables,
        }
        if recording_launcher:
            environ[RECORDING_LAUNCHER_FILE] = str(workdir / "launches.jsonl")
        settings = LauncherSettings.from_env(environ)
        services = Services(settings)
        admin = PubSubAdmin(project)
        for bucket in (settings.config_bucket, settings.data_bucket, settings.models_bucket):
            services.storage.create_bucket_if_absent(bucket)
        topics = [settings.requests_topic, settings.events_topic, settings.notifications_topic]
        for topic in topics:
            admin.ensure_topic(topic)
        captures = []
        if capture_messages:
            for topic in [*topics, *(dead_letter_topic(t) for t in topics[:2])]:
                admin.ensure_topic(topic)
                captures.append(admin.ensure_pull_subscription(f"{topic}-capture", topic))
        wanted = list(functions)
        with ThreadPoolExecutor(max_workers=len(wanted) or 1) as pool:
            started = {
                name: pool.submit(
                    start_function,
                    name,
                    environ=environ,
                    log_dir=workdir / "logs",
                    spec=function_spec(name),
                )
                for name in wanted
            }
        servers = {name: future.result() for name, future in started.items()}
        resources = None
        if "dispatch" in servers and "on_job_event" in servers:
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
            admin=admin,
            publisher=Publisher(project),
            servers=servers,
            resources=resources,
            captures=[path.rsplit("/", 1)[1] for path in captures],
        )

    def stop(self) -> None:
        """Stop deliveries first, then the servers, then any trainer still running."""
        from tuning.launchers.local import LocalLauncher

        if self.resources is not None:
            for subscription in (
                self.resources.requests_subscription,
                self.resources.events_subscription,
            ):
                self.admin.delete_subscription(subscription)
        with ThreadPoolExecutor(max_workers=len(self.servers) or 1) as pool:
            list(pool.map(lambda server: stop_function(server, grace=0), self.servers.values()))
        LocalLauncher(self.settings.local_launcher_dir).kill_all()

    # HTTP ---------------------------------------------------------------------

    def url(self, function: str, path: str = "/") -> str:
        return f"{self.servers[function].url}{path}"

    def request(
        self, method: str, function: str, path: str, *, caller: str | None = None, **kwargs: Any
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if caller is not None:
            headers["X-Tuning-Caller"] = caller
        kwargs.setdefault("timeout", 60)
        return self.session.request(method, self.url(function, path), headers=headers, **kwargs)

    def publish_event(self, event: Any) -> str:
        """Publish a lifecycle event as a trainer does; returns its message id."""
        return self.publisher.publish(self.settings.events_topic, event, job_id=event.job_id)

    # What the instrumented functions wrote --------------------------------------

    def deliveries(self, function: str) -> list[dict[str, Any]]:
        """Every push the function received, in the order it finished them."""
        return _read_lines(self.workdir / "deliveries" / f"{function}.jsonl")

    def launches(self) -> list[dict[str, Any]]:
        """What the recording launcher was asked to start (and to cancel)."""
        return _read_lines(self.workdir / "launches.jsonl")

    def log_files(self) -> list[Path]:
        """Every log this stack wrote: servers, executions, trainers."""
        return [path for path in self.workdir.rglob("*.log") if path.is_file()]


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
