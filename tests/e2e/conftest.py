"""The e2e tier: one local stack (`make up`'s) for the whole session, driven from outside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tuning.local import stack

CLI = str(Path(sys.executable).with_name("tuning"))


class LocalStack:
    """The running stack's exports, and the CLI pointed at it."""

    def __init__(self, exports: dict[str, str], workdir: Path) -> None:
        self.exports = exports
        self.workdir = workdir
        self.environ = {**os.environ, **exports, "TUNING_CALLER": "e2e@example.com"}

    def cli(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [CLI, *args], env=self.environ, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"tuning {args} -> {result.returncode}\n{result.stderr}")
        return result

    def job(self, job_id: str) -> dict[str, Any]:
        return json.loads(self.cli("--json", "status", job_id).stdout)

    def wait_for(
        self, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 300
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if done(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
            time.sleep(1)

    def submit(self, request: dict[str, Any], name: str) -> str:
        path = self.workdir / f"{name}.json"
        path.write_text(json.dumps(request))
        return self.cli("submit", str(path)).stdout.strip()

    def scoped(self) -> Any:
        """A context in which this process's Google clients talk to the stack."""
        return stack.pointed_at(self.exports)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("stack")
    exports = stack.up(workdir)
    try:
        yield LocalStack(exports, workdir)
    finally:
        stack.down(workdir)
