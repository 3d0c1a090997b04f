"""A throw-away copy of the local stack, for the emulator tests, the reliability suite and
the benchmarks.

What `make up` runs, with three differences: names (buckets, topics, collection,
folders) carry a unique suffix, so that many stacks share one set of emulators; only
the functions asked for are started, from `FUNCTIONS` or from specs the caller gives
(the benchmarks run instrumented copies); and nothing is uploaded. The emulators must
already run, with this process pointed at them (`tuning.local.stack.pointed_at`).

    stack = ScratchStack.start(tmp / "stack", functions=("submit", "dispatch", "on_job_event"))
    stack.request("POST", "submit", "/train", json=request)
    stack.stop()
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

from tuning.gcp.pubsub import Publisher, PubSubAdmin
from tuning.gcp.secrets import LocalSecretStore
from tuning.identity import AUTHORIZATION, SIGNATURE_REMOVED
from tuning.launchers.local import LocalLauncher
from tuning.local.bootstrap import (
    DeliveryPolicy,
    LocalResources,
    bootstrap,
    dead_letter_topic,
    push_endpoint,
)
from tuning.local.front_door import FrontDoorProcess, start_front_door
from tuning.local.functions import (
    FUNCTIONS,
    FunctionServer,
    FunctionSpec,
    start_function,
    stop_function,
)
from tuning.local.issuer import ISSUER_KEY_ENV, LocalIssuer
from tuning.local.stack import API_FUNCTIONS
from tuning.services import Services
from tuning.settings import LauncherSettings

T = TypeVar("T")
S = TypeVar("S", bound="ScratchStack")
ALL_FUNCTIONS = tuple(FUNCTIONS)
# Without a retry policy the emulator redelivers a rejected push about once a second
# (tuning/local/bootstrap.py says why); dead letters after these many attempts.
DISPATCH_POLICY = DeliveryPolicy(ack_deadline_seconds=30, max_delivery_attempts=100)
EVENTS_POLICY = DeliveryPolicy(ack_deadline_seconds=30, max_delivery_attempts=10)


def unique_names(unique: str) -> dict[str, str]:
    """Project, buckets, topics and collection of their own, for stacks sharing emulators."""
    return {
        "PROJECT_ID": os.environ["GOOGLE_CLOUD_PROJECT"],
        "GCS_CONFIG_BUCKET_NAME": f"config-{unique}",
        "GCS_DATA_BUCKET_NAME": f"data-{unique}",
        "GCS_MODELS_BUCKET_NAME": f"models-{unique}",
        "TRAINING_REQUESTS_TOPIC": f"requests-{unique}",
        "JOB_EVENTS_TOPIC": f"events-{unique}",
        "JOB_NOTIFICATIONS_TOPIC": f"notifications-{unique}",
        "JOBS_COLLECTION": f"jobs_{unique}",
    }


def scratch_environment(workdir: Path, unique: str, **variables: str) -> dict[str, str]:
    """The deployables' settings for a stack whose names end in `unique`; `variables` win."""
    return {
        **os.environ,
        **unique_names(unique),
        "REGION": "local",
        "SECRET_BACKEND": "local",
        "TUNING_LOCAL_SECRETS_FILE": str(workdir / "secrets.json"),
        "TUNING_LOCAL_SIGNER_KEY_FILE": str(workdir / "signer-key.json"),
        ISSUER_KEY_ENV: str(workdir / "issuer-key.pem"),
        "LAUNCHER": "local",
        "LOCAL_LAUNCHER_DIR": str(workdir / "executions"),
        "TRAINER_WORK_DIR": str(workdir / "trainer"),
        "TRAINER_MAX_RETRIES": "0",
        "RECONCILE_STALE_SECONDS": "900",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_MODE": "offline",
        "LOG_FORMAT": "text",
        **variables,
    }


@dataclass
class ScratchStack:
    unique: str
    workdir: Path
    environ: dict[str, str]
    settings: LauncherSettings
    services: Services
    launcher: LocalLauncher
    admin: PubSubAdmin
    publisher: Publisher
    servers: dict[str, FunctionServer]
    resources: LocalResources | None
    issuer: LocalIssuer
    front_door: FrontDoorProcess | None  # in front of the API functions started
    captures: list[str] = field(default_factory=list)
    extra_subscriptions: list[str] = field(default_factory=list)
    session: requests.Session = field(default_factory=requests.Session)

    @classmethod
    def start(
        cls: type[S],
        workdir: Path,
        *,
        functions: Iterable[str] = ALL_FUNCTIONS,
        specs: Mapping[str, FunctionSpec] | None = None,
        capture_messages: bool = False,
        dispatch_policy: DeliveryPolicy = DISPATCH_POLICY,
        events_policy: DeliveryPolicy = EVENTS_POLICY,
        **variables: str,
    ) -> S:
        """Start the functions with `variables` on top of the stack's environment.

        Push subscriptions are wired (as Terraform does) when both dispatch and
        on_job_event run. `capture_messages` adds a pull subscription to every topic
        before any traffic, so that everything published can be read back later.
        """
        unique = uuid.uuid4().hex[:8]
        for folder in ("executions", "logs", "trainer"):
            (workdir / folder).mkdir(parents=True, exist_ok=True)
        environ = scratch_environment(workdir, unique, **variables)
        settings = LauncherSettings.from_env(environ)
        launcher = LocalLauncher(
            settings.local_launcher_dir,
            command=settings.local_trainer_command,
            max_retries=settings.trainer_max_retries,
            environ=environ,
            task_timeout_seconds=settings.trainer_task_timeout_seconds,
        )
        # The stack's own secret store (this process's environment names none, or another).
        secrets = LocalSecretStore(
            environ["TUNING_LOCAL_SECRETS_FILE"],
            project=settings.project_id,
            prefix=settings.secret_prefix,
        )
        services = Services(settings, launcher=launcher, secrets=secrets)
        admin = PubSubAdmin(settings.project_id)
        for bucket in (settings.config_bucket, settings.data_bucket, settings.models_bucket):
            services.storage.create_bucket_if_absent(bucket)
        topics = [settings.requests_topic, settings.events_topic, settings.notifications_topic]
        captures = []
        if capture_messages:
            for topic in [*topics, *(dead_letter_topic(t) for t in topics[:2])]:
                admin.ensure_topic(topic)
                captures.append(admin.ensure_pull_subscription(f"{topic}-capture", topic))
        else:
            for topic in topics:
                admin.ensure_topic(topic)
        servers = _start_servers(list(functions), dict(specs or {}), environ, workdir / "logs")
        issuer = LocalIssuer.create(environ[ISSUER_KEY_ENV])
        behind_door = {name: servers[name].url for name in API_FUNCTIONS if name in servers}
        front_door = (
            start_front_door(behind_door, issuer_key=issuer.key_path, log_dir=workdir / "logs")
            if behind_door
            else None
        )
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
            launcher=launcher,
            admin=admin,
            publisher=Publisher(settings.project_id),
            servers=servers,
            resources=resources,
            issuer=issuer,
            front_door=front_door,
            captures=[path.rsplit("/", 1)[1] for path in captures],
        )

    def stop(self) -> None:
        """Stop deliveries first, then the servers, then every trainer still running."""
        wired = (
            [self.resources.requests_subscription, self.resources.events_subscription]
            if self.resources is not None
            else []
        )
        for subscription in (*wired, *self.extra_subscriptions):
            self.admin.delete_subscription(subscription)
        with ThreadPoolExecutor(max_workers=len(self.servers) or 1) as pool:
            # Functions keep no state: no need to wait for a graceful shutdown.
            list(pool.map(lambda server: stop_function(server, grace=0), self.servers.values()))
        if self.front_door is not None:
            self.front_door.stop()
        self.launcher.kill_all()

    # Acting on the stack -----------------------------------------------------------

    def url(self, function: str, path: str = "/") -> str:
        """Where callers reach the function: the front door for the API functions."""
        if self.front_door is not None and function in self.front_door.routes:
            return f"{self.front_door.url(function)}{path}"
        return self.direct_url(function, path)

    def direct_url(self, function: str, path: str = "/") -> str:
        """The function's own server, past the front door (what only Cloud Run can reach)."""
        return f"{self.servers[function].url}{path}"

    def token(self, caller: str, function: str, **claims: Any) -> str:
        """An ID token naming `caller` for the function's URL, as `tuning --as` mints it."""
        return self.issuer.mint(caller, audience=self.url(function, ""), **claims)

    def request(
        self,
        method: str,
        function: str,
        path: str,
        *,
        caller: str | None = None,
        token_header: str = AUTHORIZATION,
        past_front_door: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        """An HTTP call to one of the functions; `caller` gets a token in `token_header`.

        `past_front_door` calls the function's own server with the header as Cloud Run
        delivers it (signature removed): the benchmarks time our function, not the
        local stand-in for Google's front end.
        """
        headers = dict(kwargs.pop("headers", None) or {})
        if caller is not None:
            token = self.token(caller, function)
            if past_front_door:
                token = f"{token.rpartition('.')[0]}.{SIGNATURE_REMOVED}"
            headers[token_header] = f"Bearer {token}"
        kwargs.setdefault("timeout", 60)
        url = self.direct_url(function, path) if past_front_door else self.url(function, path)
        return self.session.request(method, url, headers=headers, **kwargs)

    def publish_event(self, event: Any) -> str:
        """Publish a lifecycle event as a trainer does; returns its message id."""
        return self.publisher.publish(self.settings.events_topic, event, job_id=event.job_id)

    def add_dispatch_subscription(self, name: str) -> str:
        """Another push subscription to dispatch: each request is then delivered once more."""
        self.extra_subscriptions.append(name)
        topic = self.settings.requests_topic
        endpoint = push_endpoint(self.url("dispatch", ""), self.admin.project, topic)
        return self.admin.ensure_push_subscription(name, topic, endpoint, ack_deadline_seconds=30)

    def log_files(self) -> list[Path]:
        """Every log this stack wrote: servers, executions, trainers."""
        return [path for path in self.workdir.rglob("*.log") if path.is_file()]


def _start_servers(
    names: list[str], specs: dict[str, FunctionSpec], environ: dict[str, str], logs: Path
) -> dict[str, FunctionServer]:
    with ThreadPoolExecutor(max_workers=len(names) or 1) as pool:
        started = {
            name: pool.submit(
                start_function,
                name,
                environ=environ,
                log_dir=logs,
                spec=specs.get(name, FUNCTIONS[name]),
            )
            for name in names
        }
    return {name: future.result() for name, future in started.items()}


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
