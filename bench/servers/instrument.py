"""What the instrumented entry points add to the real functions, switched on by environment.

- DELIVERY_LOG_DIR: every pushed message a CloudEvent function receives is appended to
  `<dir>/<function>.jsonl` (message id, size, outcome, times), so a test knows when every
  message was handled, how often each came, and whether any made the handler fail.
- RECORDING_LAUNCHER_FILE: dispatch launches nothing; each launch is appended to the file
  and answered at once, so load and latency figures measure our path, not process starts.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudevents.http import CloudEvent

from tuning.jobs import JobRecord
from tuning.launchers import ExecutionState, ExecutionStatus

DELIVERY_LOG_DIR = "DELIVERY_LOG_DIR"
RECORDING_LAUNCHER_FILE = "RECORDING_LAUNCHER_FILE"
_write_lock = threading.Lock()


def append_line(path: Path, entry: dict[str, Any]) -> None:
    """One JSON line; the lock keeps lines of concurrent requests whole."""
    with _write_lock, path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(entry) + "\n")


def log_deliveries(function: str, handler: Callable[[CloudEvent], None]) -> Any:
    """The handler, writing one line per delivery when DELIVERY_LOG_DIR is set."""
    folder = os.environ.get(DELIVERY_LOG_DIR)
    if not folder:
        return handler
    path = Path(folder) / f"{function}.jsonl"

    @functools.wraps(handler)
    def handle(cloud_event: CloudEvent) -> None:
        message = (cloud_event.data or {}).get("message") or {}
        entry: dict[str, Any] = {
            "message_id": message.get("messageId"),
            "bytes": len(message.get("data") or ""),
            "start": time.time(),
            "outcome": "ok",
        }
        try:
            handler(cloud_event)
        except BaseException as error:
            entry["outcome"] = type(error).__name__  # then re-raised: Pub/Sub redelivers
            raise
        finally:
            entry["end"] = time.time()
            append_line(path, entry)

    return handle


class RecordingLauncher:
    """A launcher that starts nothing: it records each launch and cancel, and returns at once."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def launch(self, job: JobRecord) -> str:
        execution = f"local-{secrets.token_hex(6)}"  # the local launcher's name format
        append_line(self.path, {"job_id": job.job_id, "execution": execution, "at": time.time()})
        return execution

    def status(self, execution: str) -> ExecutionStatus:
        return ExecutionStatus(state=ExecutionState.RUNNING)

    def cancel(self, execution: str) -> None:
        append_line(self.path, {"cancelled": execution, "at": time.time()})


def recording_launcher() -> RecordingLauncher | None:
    path = os.environ.get(RECORDING_LAUNCHER_FILE)
    return RecordingLauncher(Path(path)) if path else None
