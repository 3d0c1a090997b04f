"""Run Cloud Functions locally: one functions-framework server per function, as a subprocess.

Each server runs in its own session (process group) on a free 127.0.0.1 port
with its output in a log file, and is stopped by its group, so gunicorn's
worker goes with it. Used by the local stack and the emulator tests:

    server = start_function("dispatch", environ=env, log_dir=Path(".local/logs"))
    ...  # push subscriptions point at server.url
    stop_function(server)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tuning.local.emulators import HOST, free_port, stop_process_group

REPOSITORY = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class FunctionSpec:
    """Where a function's code is and how functions-framework must call it."""

    folder: str
    target: str
    signature_type: str  # "http" or "cloudevent"


FUNCTIONS = {
    "dispatch": FunctionSpec("dispatch", "dispatch_training_request", "cloudevent"),
    "on_job_event": FunctionSpec("on_job_event", "record_job_event", "cloudevent"),
    "reconcile": FunctionSpec("reconcile", "reconcile_jobs", "http"),
    "submit": FunctionSpec("submit", "submit_training_job", "http"),
    "status": FunctionSpec("status", "serve_job_status", "http"),
    "delete": FunctionSpec("delete", "delete_or_cancel_job", "http"),
}


class FunctionServerError(RuntimeError):
    """A function server exited or did not answer in time."""


@dataclass(frozen=True)
class FunctionServer:
    name: str
    pid: int  # also its process group id
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_function(
    name: str,
    *,
    environ: Mapping[str, str],
    log_dir: Path,
    spec: FunctionSpec | None = None,
    port: int | None = None,
    timeout: float = 30.0,
) -> FunctionServer:
    """Start the function's server and return once it answers HTTP."""
    spec = spec or FUNCTIONS[name]
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    source = REPOSITORY / "functions" / spec.folder / "main.py"
    command = [
        sys.executable,
        "-m",
        "tuning.local.function_server",  # functions-framework's app, gunicorn tuned (see there)
        f"--target={spec.target}",
        f"--source={source}",
        f"--signature-type={spec.signature_type}",
        f"--host={HOST}",
        f"--port={port}",
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**environ, "PYTHONUNBUFFERED": "1"},
            cwd=REPOSITORY,
            start_new_session=True,
        )
    server = FunctionServer(name=name, pid=process.pid, port=port, log_path=log_path)
    try:
        _wait_until_serving(server, process, timeout)
    except FunctionServerError:
        stop_function(server)
        raise
    return server


def _wait_until_serving(
    server: FunctionServer, process: subprocess.Popen[bytes], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not answers_http(f"{server.url}/health"):
        if process.poll() is not None:
            raise FunctionServerError(
                f"the {server.name} function exited during start-up:\n{server.log()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise FunctionServerError(f"the {server.name} function did not answer in {timeout}s")
        time.sleep(0.1)


def answers_http(url: str) -> bool:
    """Any HTTP answer counts: a CloudEvent function has no GET route and says 405."""
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback URL
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def stop_function(server: FunctionServer, grace: float = 2.0) -> None:
    """Stop the server: gunicorn's quick shutdown, then SIGKILL for whatever is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGINT)  # SIGTERM would wait for idle keep-alives
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _running(server.pid):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    stop_process_group(server.pid, grace=1.0)  # returns once no process of the group runs


def _running(pid: int) -> bool:
    """Whether the arbiter still runs; reaps it when this process started it."""
    with contextlib.suppress(ChildProcessError):
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
