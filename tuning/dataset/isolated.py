"""Token counts from an untrusted model's files, in a child process with limits.

`IsolatedCounter` starts tuning.dataset.count_worker with the model's tokenizer files, under an
address-space and a CPU-time limit, and gives every answer a share of one wall-clock deadline:
past it, or when the worker dies of a limit, the worker is killed and `CountingLimitError`
says which bound it hit. Its `row_lengths` is ChatTokenizer's, so tuning.preflight counts
the same way either side of the process boundary.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tuning.dataset.rows import RowFormat
from tuning.dataset.splits import SplitFile
from tuning.dataset.tokens import CannotCountError
from tuning.failures import DatasetError

# What a worker may use. The address space is virtual memory (the Python interpreter, the Rust
# tokenizer and its threads' stacks count too), well inside the functions' 2 GiB instance,
# which the parent's split bytes share; a real Gemma tokenizer.json (33 MB, 262k entries)
# parses in a few hundred MiB.
WORKER_ADDRESS_SPACE = 1536 * 2**20
WORKER_THREADS = "2"  # the Rust tokenizer's pool: each thread's stack is address space too


class CountingLimitError(Exception):
    """The worker ran past its deadline or one of its limits; the message says which."""


class UnreadableModelFiles(Exception):  # noqa: N818  (named for what the caller reports)
    """The worker could not parse the model's tokenizer files or compile its template."""

    def __init__(self, message: str, *, template: bool) -> None:
        super().__init__(message)
        self.template = template  # the chat template is at fault (it does not compile)


class IsolatedCounter:
    def __init__(self, files: Mapping[str, bytes], *, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self._folder = tempfile.TemporaryDirectory(prefix="tokenizer-")
        for name, data in files.items():
            (Path(self._folder.name) / name).write_bytes(data)
        environment = {
            **os.environ,
            "RAYON_NUM_THREADS": WORKER_THREADS,
            "TOKENIZERS_PARALLELISM": "true",
        }
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tuning.dataset.count_worker",
                self._folder.name,
                str(WORKER_ADDRESS_SPACE),
                str(max(1, int(seconds))),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=environment,
        )
        answer = self._receive("reading the model's tokenizer files")
        if "unreadable" in answer:
            self.close()
            raise UnreadableModelFiles(answer["unreadable"], template=bool(answer.get("template")))

    def row_lengths(
        self,
        rows: list[dict[str, Any]],
        row_format: RowFormat,
        *,
        split: SplitFile,
        max_length: int | None = None,
        first_row: int = 0,
    ) -> list[int]:
        request = {
            "rows": rows,
            "format": row_format.value,
            "split": [split.name, split.uri, split.suffix],
            "max_length": max_length,
            "first_row": first_row,
        }
        stdin = self._pipe(self._process.stdin)
        try:
            stdin.write(json.dumps(request) + "\n")
            stdin.flush()
        except BrokenPipeError:
            raise self._died("counting tokens") from None
        answer = self._receive("counting tokens")
        if "dataset_error" in answer:
            raise DatasetError(answer["dataset_error"])
        if "cannot_count" in answer:
            raise CannotCountError(answer["cannot_count"])
        return [int(length) for length in answer["lengths"]]

    def _receive(self, doing: str) -> dict[str, Any]:
        stdout = self._pipe(self._process.stdout)
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 or not selector.select(timeout=remaining):
                self.close()
                raise CountingLimitError(
                    f"the model's chat template and tokenizer did not finish {doing} within "
                    f"{self.seconds:.0f} s"
                )
        line = stdout.readline()
        if not line:
            raise self._died(doing)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _died(self, doing: str) -> CountingLimitError:
        self.close()
        return CountingLimitError(
            f"the model's chat template and tokenizer used more than "
            f"{WORKER_ADDRESS_SPACE // 2**20} MiB or their CPU time while {doing}"
        )

    @staticmethod
    def _pipe(pipe: IO[str] | None) -> IO[str]:
        if pipe is None:
            raise RuntimeError("the worker was started without pipes")
        return pipe

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()
        self._folder.cleanup()

    def __enter__(self) -> IsolatedCounter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
