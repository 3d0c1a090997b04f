"""The local launcher: a trainer process instead of a Cloud Run execution.

Each execution is a folder under the launcher directory that any process can
read, so the reconcile server sees executions the dispatch server started:

    <dir>/<execution>/spec.json      what to run (written once by `launch`)
    <dir>/<execution>/state.json     where it stands (written only by the supervisor)
    <dir>/<execution>/cancel         present once a cancel was asked for
    <dir>/<execution>/execution.log  the supervisor's notes and every attempt's output

Like Cloud Run, the launcher names an execution with a path
(`local/executions/local-…`, what `launch` returns and the job records) while the
trainer sees only its last segment in CLOUD_RUN_EXECUTION, so code that compares
the two (`tuning.launchers.same_execution`) is exercised locally as in production.

A detached supervisor process (`python -m tuning.launchers.local supervise DIR`,
its own session) runs the trainer like a Cloud Run task with `max_retries`: a
task that exits non-zero or is killed is started again with
`CLOUD_RUN_TASK_ATTEMPT` incremented. Being detached, an execution outlives the
server that launched it, as a Cloud Run execution outlives its dispatcher.

The task timeout is enforced like Cloud Run's: it applies to each attempt, and an attempt
still running at it is stopped (SIGTERM, then SIGKILL after Cloud Run's 10 s grace) and
counts as failed, to be retried while retries remain
(https://cloud.google.com/run/docs/configuring/task-timeout: "If the task attempt does not
complete within this time, it will be stopped").
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuning.errors import InvalidRequestError, TransientError
from tuning.jobs import JobRecord
from tuning.launchers import ExecutionState, ExecutionStatus, trainer_environment
from tuning.settings import SettingsError

DEFAULT_COMMAND = (sys.executable, "-m", "trainer")
SPEC_FILE = "spec.json"
STATE_FILE = "state.json"
CANCEL_FILE = "cancel"
LOG_FILE = "execution.log"
EXECUTION_ID = re.compile(r"^local-[0-9a-f]{12}$")
NAME_PREFIX = "local/executions/"
NICENESS_VARIABLE = "LOCAL_TRAINER_NICENESS"
DEFAULT_NICENESS = 10  # trainers yield the CPU to the API processes of the local stack
# What a functions-framework server sets for itself; a trainer must not inherit it.
SERVER_VARIABLES = ("FUNCTION_TARGET", "FUNCTION_SOURCE", "FUNCTION_SIGNATURE_TYPE", "PORT")
POLL_SECONDS = 0.1
# Between SIGTERM and SIGKILL, as Cloud Run's container contract gives a task
# (https://cloud.google.com/run/docs/container-contract#lifecycle).
STOP_GRACE_SECONDS = 10.0
SUPERVISOR_START_SECONDS = 15.0


@dataclass(frozen=True)
class ExecutionSpec:
    """What the supervisor runs: one task of one job, with its retry budget."""

    execution: str
    job_id: str
    command: list[str]
    max_retries: int
    cwd: str
    task_timeout_seconds: float | None = None  # per attempt; None: no timeout
    environment: dict[str, str] = field(default_factory=dict)  # the launch's overrides


@dataclass(frozen=True)
class ExecutionRecord:
    """The supervisor's view of its execution, as stored in state.json."""

    state: ExecutionState
    supervisor_pid: int
    supervisor_started: int | None = None
    attempt: int = 0  # the task attempt running now (or that ran last)
    attempts: int = 0  # task attempts started so far
    trainer_pid: int | None = None  # also the trainer's process group id
    trainer_started: int | None = None
    message: str | None = None
    finished_at: str | None = None

    def to_status(self) -> ExecutionStatus:
        finished = datetime.fromisoformat(self.finished_at) if self.finished_at else None
        return ExecutionStatus(
            state=self.state, message=self.message, finished_at=finished, attempts=self.attempts
        )


class LocalLauncher:
    """Starts, inspects and stops trainer processes; the state lives on disk under `directory`."""

    def __init__(
        self,
        directory: Path | str,
        *,
        command: Sequence[str] | str | None = None,
        max_retries: int = 3,
        environ: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        task_timeout_seconds: float | None = None,
        processes: int = 1,
    ) -> None:
        self.directory = Path(directory).resolve()
        if isinstance(command, str):
            command = shlex.split(command)
        self.command = under_torchrun(list(command or DEFAULT_COMMAND), processes)
        self.max_retries = max_retries
        self.environ = environ
        self.cwd = str(Path(cwd or Path.cwd()).resolve())
        self.task_timeout_seconds = task_timeout_seconds

    def launch(self, job: JobRecord) -> str:
        """Start a supervised execution for the job and return its name once it runs."""
        identifier = f"local-{secrets.token_hex(6)}"
        execution = NAME_PREFIX + identifier
        folder = self.directory / identifier
        folder.mkdir(parents=True)
        spec = ExecutionSpec(
            execution=identifier,
            job_id=job.job_id,
            command=self.command,
            max_retries=self.max_retries,
            cwd=self.cwd,
            task_timeout_seconds=self.task_timeout_seconds,
            environment=trainer_environment(
                job,
                task_timeout_seconds=math.ceil(self.task_timeout_seconds)
                if self.task_timeout_seconds
                else None,
            ),
        )
        _write_json(folder / SPEC_FILE, asdict(spec))
        environ = {
            key: value
            for key, value in (os.environ if self.environ is None else self.environ).items()
            if key not in SERVER_VARIABLES
        }
        with (folder / LOG_FILE).open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tuning.launchers.local", "supervise", str(folder)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environ,
                cwd=self.cwd,
                start_new_session=True,  # survives the server that launched it
            )
        # Reap the supervisor when it ends, so it never lingers as a zombie of this server.
        threading.Thread(target=process.wait, name=f"reap-{identifier}", daemon=True).start()
        self._wait_for_supervisor(folder, process)
        return execution

    def _wait_for_supervisor(self, folder: Path, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + SUPERVISOR_START_SECONDS
        while not (folder / STATE_FILE).exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise TransientError(
                    f"the local supervisor for {folder.name} did not start; see {folder / LOG_FILE}"
                )
            time.sleep(0.02)

    def status(self, execution: str) -> ExecutionStatus:
        """Where the execution stands, from its state file and whether its supervisor lives."""
        folder = self.folder(execution)
        record = read_record(folder)
        if record is None:
            return ExecutionStatus(state=ExecutionState.NOT_FOUND, message="no such execution")
        if record.state.is_finished or _is_running(
            record.supervisor_pid, record.supervisor_started
        ):
            return record.to_status()
        # The supervisor died without writing an outcome (killed, machine restarted).
        cancelled = (folder / CANCEL_FILE).exists()
        return ExecutionStatus(
            state=ExecutionState.CANCELLED if cancelled else ExecutionState.FAILED,
            message="the local supervisor of this execution stopped unexpectedly",
            attempts=record.attempts,
        )

    def cancel(self, execution: str) -> None:
        """Ask the supervisor to stop the task and not retry it; a finished one is left as is."""
        folder = self.folder(execution)
        record = read_record(folder)
        if record is None or record.state.is_finished:
            return
        (folder / CANCEL_FILE).touch()
        # Signal the task now rather than at the supervisor's next poll; it escalates if needed.
        if record.trainer_pid is not None and _is_running(
            record.trainer_pid, record.trainer_started
        ):
            _signal_group(record.trainer_pid, signal.SIGTERM)

    def executions(self) -> Iterator[str]:
        """Names (as `launch` returned them) of every execution under the launcher directory."""
        if self.directory.is_dir():
            for folder in sorted(self.directory.iterdir()):
                if EXECUTION_ID.fullmatch(folder.name):
                    yield NAME_PREFIX + folder.name

    def log_path(self, execution: str) -> Path:
        return self.folder(execution) / LOG_FILE

    def kill_all(self) -> None:
        """SIGKILL every supervisor and task under the directory (test and stack teardown)."""
        for execution in self.executions():
            record = read_record(self.folder(execution))
            if record is None:
                continue
            for pid, started in (
                (record.supervisor_pid, record.supervisor_started),
                (record.trainer_pid, record.trainer_started),
            ):
                if pid is not None and _is_running(pid, started):
                    _signal_group(pid, signal.SIGKILL)

    def folder(self, execution: str) -> Path:
        """The folder of an execution, by the name `launch` returned or by its id."""
        identifier = execution.removeprefix(NAME_PREFIX)
        if not EXECUTION_ID.fullmatch(identifier):
            raise InvalidRequestError(f"not a local execution name: {execution!r}")
        return self.directory / identifier


# The supervisor ------------------------------------------------------------------------


@dataclass
class Supervisor:
    """Runs one execution's task until it succeeds, is cancelled or runs out of retries."""

    folder: Path
    spec: ExecutionSpec
    record: ExecutionRecord
    stop_requested: bool = field(default=False)
    timed_out: bool = field(default=False)  # the last attempt was stopped at the timeout

    @classmethod
    def start(cls, folder: Path) -> Supervisor:
        spec = ExecutionSpec(**json.loads((folder / SPEC_FILE).read_text()))
        pid = os.getpid()
        record = ExecutionRecord(
            state=ExecutionState.PENDING, supervisor_pid=pid, supervisor_started=_start_ticks(pid)
        )
        supervisor = cls(folder=folder, spec=spec, record=record)
        supervisor.save()
        return supervisor

    def save(self) -> None:
        data = asdict(self.record)
        data["state"] = self.record.state.value
        _write_json(self.folder / STATE_FILE, data)

    def note(self, text: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        print(f"{stamp} [supervisor {self.spec.execution}] {text}", flush=True)

    @property
    def cancelled(self) -> bool:
        return self.stop_requested or (self.folder / CANCEL_FILE).exists()

    def run(self) -> ExecutionState:
        message = "no attempt was made"
        for attempt in range(self.spec.max_retries + 1):
            if self.cancelled:
                return self.finish(ExecutionState.CANCELLED, "cancelled before the task ran")
            try:
                process = self.start_task(attempt)
            except OSError as error:
                return self.finish(ExecutionState.FAILED, f"cannot start the trainer: {error}")
            code = self.wait(process)
            _signal_group(process.pid, signal.SIGKILL)  # whatever the task left behind
            if self.cancelled:
                return self.finish(ExecutionState.CANCELLED, f"attempt {attempt} was cancelled")
            if code == 0 and not self.timed_out:
                return self.finish(ExecutionState.SUCCEEDED, f"attempt {attempt} succeeded")
            message = describe_exit(attempt, code)
            if self.timed_out:
                message = f"attempt {attempt} timed out after {self.spec.task_timeout_seconds} s"
            self.note(message)
        return self.finish(ExecutionState.FAILED, message)

    def start_task(self, attempt: int) -> subprocess.Popen[bytes]:
        environ = {
            **os.environ,
            "JOB_ID": self.spec.job_id,
            **self.spec.environment,
            "CLOUD_RUN_EXECUTION": self.spec.execution,
            "CLOUD_RUN_TASK_ATTEMPT": str(attempt),
            "CLOUD_RUN_TASK_INDEX": "0",
            "CLOUD_RUN_TASK_COUNT": "1",
        }
        self.note(f"attempt {attempt}: {shlex.join(self.spec.command)}")
        with (self.folder / LOG_FILE).open("ab") as log:
            process = subprocess.Popen(
                self.spec.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environ,
                cwd=self.spec.cwd,
                start_new_session=True,  # its own group: cancel reaches every process it starts
            )
        self.record = replace(
            self.record,
            state=ExecutionState.RUNNING,
            attempt=attempt,
            attempts=attempt + 1,
            trainer_pid=process.pid,
            trainer_started=_start_ticks(process.pid),
        )
        self.save()
        return process

    def wait(self, process: subprocess.Popen[bytes]) -> int:
        """The task's exit code; stops it (TERM, then KILL after a grace) once cancelled or
        past its timeout."""
        stop_deadline: float | None = None
        timeout = self.spec.task_timeout_seconds
        started = time.monotonic()
        self.timed_out = False
        while (code := process.poll()) is None:
            past_timeout = timeout is not None and time.monotonic() - started > timeout
            if past_timeout and stop_deadline is None:
                self.note(f"the attempt ran past the task timeout ({timeout} s): stopping it")
                self.timed_out = True
            if (self.cancelled or past_timeout) and stop_deadline is None:
                if not past_timeout:
                    self.note("cancel requested: stopping the task")
                _signal_group(process.pid, signal.SIGTERM)
                stop_deadline = time.monotonic() + STOP_GRACE_SECONDS
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                _signal_group(process.pid, signal.SIGKILL)
            time.sleep(POLL_SECONDS)
        return code

    def finish(self, state: ExecutionState, message: str) -> ExecutionState:
        self.record = replace(
            self.record,
            state=state,
            message=message,
            finished_at=datetime.now(UTC).isoformat(),
        )
        self.save()
        self.note(f"{state.value}: {message}")
        return state


def under_torchrun(command: list[str], processes: int) -> list[str]:
    """`python ARGS` as `python -m torch.distributed.run ... ARGS` for several processes: the
    command Vertex runs (`torchrun --standalone --nproc_per_node=N -m trainer`), through
    this interpreter's torch. A command that is not a Python interpreter cannot be wrapped."""
    if processes == 1:
        return command
    if not Path(command[0]).name.startswith("python"):
        raise SettingsError(
            f"a tier with {processes} GPUs runs its trainer under torchrun: the trainer "
            f"command must start with a Python interpreter, not {command[0]!r}"
        )
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return [command[0], *launcher, *command[1:]]


def describe_exit(attempt: int, code: int) -> str:
    """A task's end in words: `subprocess` reports death by signal N as exit code -N."""
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"attempt {attempt} was killed by {name}{hint}"
    return f"attempt {attempt} exited with code {code}"


# Files and processes -------------------------------------------------------------------


def read_record(folder: Path) -> ExecutionRecord | None:
    try:
        data: dict[str, Any] = json.loads((folder / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    data["state"] = ExecutionState(data["state"])
    return ExecutionRecord(**data)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace the file atomically, so a reader never sees half of it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)


def _start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot), to tell it from a reused pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # no /proc (macOS): fall back to the pid alone
    return int(fields[19])


def _is_running(pid: int, started: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    return started is None or _start_ticks(pid) in (started, None)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def lower_priority() -> None:
    """Run this supervisor and its trainers below the stack's other processes.

    On Cloud Run a trainer has its own machine; locally it shares the CPUs with the functions,
    the front door and the emulators, and a GGUF export (llama.cpp's converter and quantizer,
    torch's logit checks) keeps every core busy for tens of seconds, at the same priority as
    the API's processes. Niced, the trainer still gets every idle cycle, and a request to the
    API is served first. LOCAL_TRAINER_NICENESS=0 turns it off.
    """
    increment = int(os.environ.get(NICENESS_VARIABLE) or DEFAULT_NICENESS)
    if increment > 0:
        with contextlib.suppress(OSError):
            os.nice(increment)


def main(argv: list[str] | None = None) -> int:
    """`supervise DIR`: run one execution (started by `LocalLauncher.launch`)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "supervise":
        print("usage: python -m tuning.launchers.local supervise EXECUTION_DIR", file=sys.stderr)
        return 2
    lower_priority()
    supervisor = Supervisor.start(Path(args[1]))

    def stop(signum: int, _frame: object) -> None:
        supervisor.stop_requested = True  # a stopped supervisor stops its task, then records it

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    state = supervisor.run()
    return 0 if state is ExecutionState.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
