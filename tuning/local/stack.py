"""The whole system on one machine: `make up`, `make down`.

    python -m tuning.local.stack up      # emulators, bootstrap, six functions, demo assets
    python -m tuning.local.stack down    # stops everything it started, by process group

`up` starts, in the background: the Firestore and Pub/Sub emulators and
fake-gcs-server; the dispatch and on_job_event functions and the bootstrap
that wires push subscriptions (with dead letters) to them, as Terraform does;
submit, status, delete and reconcile; the front door that checks ID tokens in
front of submit, status and delete as Cloud Run's IAM does (the URLs the CLI
gets), with the local issuer whose key mints them; a scheduler that calls
reconcile every few seconds; and it uploads a tiny Gemma 3 (built on the spot) and a small
learnable chat dataset to local GCS. Dispatch runs the trainer through the
local launcher (a process per execution, restarted like a Cloud Run task).
When everything answers it writes `.local/stack.env`. Running `up` twice is
safe: a stack that still answers is reused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuning.local.emulators import (
    DEFAULT_PROJECT,
    LOCAL_GCS_ROOT_ENV,
    EmulatorStack,
    stop_process_group,
)
from tuning.local.front_door import FrontDoorProcess, start_front_door
from tuning.local.functions import (
    FUNCTIONS,
    FunctionServer,
    answers_http,
    start_function,
    stop_function,
)
from tuning.local.issuer import ISSUER_KEY_ENV, LocalIssuer
from tuning.tenancy import BASE_MODELS

STATE_FILE = "stack.json"
ENV_FILE = "stack.env"
PATH_LINE_PREFIX = "export PATH="
BUCKETS = {"data": "local-data", "config": "local-config", "models": "local-models"}
DEMO_DATASET = "demo-colours"
DEMO_MODEL_PREFIX = "base_models/tiny-gemma3/"
RECONCILE_PERIOD_SECONDS = 10
# The functions callers reach, each behind the front door (the others are called by Pub/Sub
# and the scheduler, whose IAM Terraform grants; locally they are called directly).
API_FUNCTIONS = ("submit", "status", "delete")
# The tiers Terraform's gpu_tiers would declare (tuning/tiers.py): the default one-GPU Cloud
# Run tier, and a two-GPU Vertex tier that the local launcher runs as two trainer processes
# under torchrun (gloo on CPU). `auto` takes the default tier; a request names the other.
MULTI_GPU_TIER = "local-2gpu"
LOCAL_TIERS = (
    {
        "name": "default",
        "engine": "cloudrun",
        "gpu_type": "nvidia-l4",
        "gpu_memory_gib": 22.4,
        "max_concurrent_jobs": 2,
        "cloud_run_job": "gemma-trainer",
    },
    {
        "name": MULTI_GPU_TIER,
        "engine": "vertex",
        "gpu_type": "NVIDIA_L4",
        "gpu_count": 2,
        "gpu_memory_gib": 22.4,
        "machine_type": "g2-standard-24",
        "max_concurrent_jobs": 1,
    },
)
ISSUER_KEY_FILE = "issuer-key.pem"


@dataclass
class StackState:
    """What `up` started, so that `down` (another process) can stop it."""

    environ: dict[str, str]
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    scheduler_pid: int | None = None
    front_door: dict[str, Any] | None = None  # pid and each function's port

    def save(self, workdir: Path) -> None:
        (workdir / STATE_FILE).write_text(json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, workdir: Path) -> StackState | None:
        path = workdir / STATE_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None


def stack_environment(emulator_env: dict[str, str], workdir: Path) -> dict[str, str]:
    """The settings every local deployable reads, as Terraform would set them in GCP."""
    return {
        **emulator_env,
        **models_mount_environment(emulator_env, BUCKETS["models"]),
        "PROJECT_ID": emulator_env["GOOGLE_CLOUD_PROJECT"],
        "REGION": "local",
        "GCS_DATA_BUCKET_NAME": BUCKETS["data"],
        "GCS_CONFIG_BUCKET_NAME": BUCKETS["config"],
        "GCS_MODELS_BUCKET_NAME": BUCKETS["models"],
        "SECRET_BACKEND": "local",
        # The stack's own secret store: two stacks (or a test's and the demo's) share nothing.
        "TUNING_LOCAL_SECRETS_FILE": str(workdir / "secrets" / "secrets.json"),
        ISSUER_KEY_ENV: str(workdir / ISSUER_KEY_FILE),
        "LAUNCHER": "local",
        "LOCAL_LAUNCHER_DIR": str(workdir / "executions"),
        "GPU_TIERS": json.dumps(LOCAL_TIERS),
        "TRAINER_MAX_RETRIES": "2",
        "RECONCILE_STALE_SECONDS": "30",
        "TRAINER_PROGRESS_INTERVAL_SECONDS": "1",
        # How often a trainer reads its job record: a pause or a cancel Cloud Run could not
        # deliver acts within this (60 s in GCP, where each read is a billed Firestore read).
        "TRAINER_JOB_CHECK_SECONDS": "2",
        "TRAINER_WORK_DIR": str(workdir / "trainer"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "WANDB_MODE": "offline",
        "TOKENIZERS_PARALLELISM": "false",
        "LOG_FORMAT": "text",
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
    }


def models_mount_environment(emulator_env: dict[str, str], models_bucket: str) -> dict[str, str]:
    """The trainer's models volume, imitated: Terraform mounts the models bucket's
    base_models/ folder read-only (gcsfuse only-dir) at MODELS_MOUNT_PATH; locally that
    folder is fake-gcs-server's own copy of it, `<filesystem root>/<bucket>/base_models`,
    where every object written through the API appears at once, as on the volume. The
    trainer only reads there (trainer/base_model.py); nothing else writes to it."""
    root = emulator_env.get(LOCAL_GCS_ROOT_ENV)
    if not root:
        return {}
    return {
        "MODELS_MOUNT_PATH": str(Path(root) / models_bucket / BASE_MODELS),
        "MODELS_MOUNT_ONLY_DIR": BASE_MODELS,
    }


def up(workdir: Path, project: str = DEFAULT_PROJECT) -> dict[str, str]:
    """Start the stack (or reuse a running one) and return the exports of stack.env."""
    workdir = workdir.resolve()
    running = _running_stack(workdir)
    if running is not None:
        print(f"local stack already up: {workdir / ENV_FILE}")
        return running
    down(workdir)  # whatever is left of an earlier, broken stack
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    emulators = EmulatorStack(workdir / "emulators", project=project)
    environ = stack_environment(emulators.start().environ(), workdir)
    state = StackState(environ=environ)
    try:
        servers = _start_functions(environ, logs, state, workdir)
        door = _start_front_door(environ, servers, logs)
        state.front_door = {"pid": door.pid, "ports": {n: r.port for n, r in door.routes.items()}}
        state.save(workdir)
        state.scheduler_pid = _start_scheduler(servers["reconcile"].url, environ, logs)
        state.save(workdir)
        exports = _exports(environ, servers, door)
        _upload_demo_assets(environ, workdir)
    except BaseException:
        down(workdir)
        raise
    (workdir / ENV_FILE).write_text(env_file_text(exports))
    print(f"local stack up: source {workdir / ENV_FILE}")
    return exports


def env_file_text(exports: dict[str, str], bin_dir: Path | None = None) -> str:
    """stack.env: the exports, then the virtual environment's bin/ put first on PATH, so that
    `source .local/stack.env` in a fresh shell is enough to run `tuning` (README quick start)."""
    bin_dir = bin_dir or Path(sys.executable).parent  # .venv/bin under `make up`
    lines = [f"export {key}={value}\n" for key, value in exports.items()]
    lines.append(f'{PATH_LINE_PREFIX}{shlex.quote(str(bin_dir))}:"$PATH"\n')
    return "".join(lines)


def _start_functions(
    environ: dict[str, str], logs: Path, state: StackState, workdir: Path
) -> dict[str, FunctionServer]:
    from tuning.local.bootstrap import bootstrap
    from tuning.settings import ServiceSettings

    servers: dict[str, FunctionServer] = {}
    for name in FUNCTIONS:
        servers[name] = start_function(name, environ=environ, log_dir=logs)
        state.functions[name] = {"pid": servers[name].pid, "port": servers[name].port}
        state.save(workdir)
    with pointed_at(environ):
        bootstrap(
            ServiceSettings.from_env(environ),
            dispatch_url=servers["dispatch"].url,
            events_url=servers["on_job_event"].url,
        )
    return servers


def _start_front_door(
    environ: dict[str, str], servers: dict[str, FunctionServer], logs: Path
) -> FrontDoorProcess:
    """Cloud Run's IAM check in front of the API functions, with the issuer it trusts."""
    key = Path(environ[ISSUER_KEY_ENV])
    LocalIssuer.create(key)
    return start_front_door(
        {name: servers[name].url for name in API_FUNCTIONS}, issuer_key=key, log_dir=logs
    )


def _start_scheduler(reconcile_url: str, environ: dict[str, str], logs: Path) -> int:
    """Cloud Scheduler's stand-in: call reconcile every few seconds."""
    with (logs / "scheduler.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tuning.local.stack", "schedule", reconcile_url],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environ,
            start_new_session=True,
        )
    return process.pid


def schedule(url: str, period: float = RECONCILE_PERIOD_SECONDS) -> None:
    while True:
        time.sleep(period)
        request = urllib.request.Request(url, data=b"{}", method="POST")  # noqa: S310
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
                print(f"reconcile: {response.status} {response.read()[:300]!r}", flush=True)
        except (urllib.error.URLError, OSError) as error:
            print(f"reconcile failed: {error}", flush=True)


def _exports(
    environ: dict[str, str], servers: dict[str, FunctionServer], door: FrontDoorProcess
) -> dict[str, str]:
    emulator_keys = (
        "GOOGLE_CLOUD_PROJECT",
        "FIRESTORE_EMULATOR_HOST",
        "PUBSUB_EMULATOR_HOST",
        "STORAGE_EMULATOR_HOST",
        "CLOUDSDK_CORE_CHECK_GCE_METADATA",
        "TUNING_LOCAL_SECRETS_FILE",
        ISSUER_KEY_ENV,
    )
    return {
        **{key: environ[key] for key in emulator_keys},
        "TUNING_SUBMIT_URL": door.url("submit"),
        "TUNING_STATUS_URL": door.url("status"),
        "TUNING_DELETE_URL": door.url("delete"),
        "TUNING_RECONCILE_URL": servers["reconcile"].url,
        "TUNING_REQUESTS_TOPIC": "training-requests",
        "TUNING_EVENTS_TOPIC": "job-events",
        "TUNING_NOTIFICATIONS_TOPIC": "job-notifications",
        "TUNING_DATA_BUCKET": BUCKETS["data"],
        "TUNING_MODELS_BUCKET": BUCKETS["models"],
        "TUNING_CONFIG_BUCKET": BUCKETS["config"],
        "TUNING_DEMO_MODEL": f"gs://{BUCKETS['models']}/{DEMO_MODEL_PREFIX}",
        "TUNING_DEMO_DATASET": DEMO_DATASET,
        "TUNING_EXECUTIONS_DIR": environ["LOCAL_LAUNCHER_DIR"],  # `tuning logs`
    }


def _upload_demo_assets(environ: dict[str, str], workdir: Path) -> None:
    """A tiny Gemma 3 built on the spot and a small chat task it can learn in a minute."""
    from tuning.gcp.storage import GcsStore
    from tuning.local.demo import VOCABULARY_WORDS, demo_dataset_splits

    # llama.cpp's layer layout, so that GGUF export works on the demo model; the task's words
    # as single tokens. A new name, so that a workdir's older demo model is not reused.
    model_dir = workdir / "tiny-gemma3-demo"
    if not (model_dir / "config.json").is_file():
        # A subprocess, so that this orchestrator never imports torch itself.
        build = ["--out", str(model_dir), "--llama-cpp-layers", "--words", *VOCABULARY_WORDS]
        subprocess.run(
            [sys.executable, "-m", "trainer.tiny", *build],
            check=True,
            env=environ,
            stdout=subprocess.DEVNULL,
        )
    with pointed_at(environ):
        storage = GcsStore()
        storage.upload_dir(model_dir, f"gs://{BUCKETS['models']}/{DEMO_MODEL_PREFIX}")
        for split, rows in demo_dataset_splits().items():
            body = "".join(json.dumps(row) + "\n" for row in rows).encode()
            uri = f"gs://{BUCKETS['data']}/processed_datasets/{DEMO_DATASET}/{split}.jsonl"
            storage.upload_bytes(uri, body, content_type="application/jsonl")


@contextlib.contextmanager
def pointed_at(environ: dict[str, str]) -> Iterator[None]:
    """Temporarily point this process's Google clients at the stack."""
    saved = {key: os.environ.get(key) for key in environ}
    os.environ.update(environ)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _running_stack(workdir: Path) -> dict[str, str] | None:
    state = StackState.load(workdir)
    env_file = workdir / ENV_FILE
    if (
        state is None
        or not env_file.is_file()
        or EmulatorStack.attach(workdir / "emulators") is None
    ):
        return None
    ports = [server["port"] for server in state.functions.values()]
    ports += list((state.front_door or {}).get("ports", {}).values())
    if state.front_door is None or not all(answers_http(f"http://127.0.0.1:{p}/") for p in ports):
        return None
    exports = {}
    for line in env_file.read_text().splitlines():
        if line.startswith(PATH_LINE_PREFIX):  # the shell's PATH, extended: not an export
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        exports[key] = value
    return exports


def down(workdir: Path) -> None:
    """Stop every process the stack started: trainers, scheduler, functions, emulators."""
    workdir = workdir.resolve()
    state = StackState.load(workdir)
    if state is not None:
        _stop_trainers(state.environ)
        if state.scheduler_pid:
            stop_process_group(state.scheduler_pid)
        if state.front_door:
            stop_process_group(state.front_door["pid"])
        servers = [
            FunctionServer(name, server["pid"], server["port"], Path(os.devnull))
            for name, server in state.functions.items()
        ]
        # Each server gets a grace period to drain; wait for them side by side.
        with ThreadPoolExecutor(max_workers=len(servers) or 1) as pool:
            list(pool.map(stop_function, servers))
    emulators = EmulatorStack.attach(workdir / "emulators")
    if emulators is not None:
        emulators.stop()
    for name in (STATE_FILE, ENV_FILE):
        (workdir / name).unlink(missing_ok=True)


def _stop_trainers(environ: dict[str, str]) -> None:
    from tuning.launchers.local import LocalLauncher

    launcher_dir = environ.get("LOCAL_LAUNCHER_DIR")
    if launcher_dir and Path(launcher_dir).is_dir():
        LocalLauncher(Path(launcher_dir)).kill_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["up", "down", "schedule"])
    parser.add_argument("url", nargs="?", help="for schedule: the reconcile URL")
    parser.add_argument("--workdir", type=Path, default=Path(".local"))
    args = parser.parse_args(argv)
    if args.action == "up":
        up(args.workdir)
    elif args.action == "down":
        down(args.workdir)
    else:
        schedule(args.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
