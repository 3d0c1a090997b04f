"""`tuning watch`'s display of a job's progress: a tqdm bar, or one line per change.

A bar redraws one line in place, which shows nothing on a terminal that reports no width (some
CI runners, `docker exec` and serial consoles report 0 columns) or one too narrow for it. There
the progress is printed as lines instead, each when the status, step or loss changes.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

MIN_BAR_COLUMNS = 40  # below this the bar and its postfix do not fit on a line


def terminal_columns(stream: TextIO) -> int | None:
    """The width of the terminal `stream` writes to; None when it is not a terminal."""
    try:
        if not stream.isatty():
            return None
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None


def progress_fields(job: dict[str, Any]) -> dict[str, Any]:
    progress = job.get("progress") or {}
    fields: dict[str, Any] = {"status": job["status"]}
    if progress.get("loss") is not None:
        fields["loss"] = f"{progress['loss']:.4f}"
    if progress.get("eta_seconds") is not None:
        fields["eta"] = f"{progress['eta_seconds']:.0f}s"
    return fields


class BarProgress:
    """tqdm's bar: step of total steps, rate, and status, loss and ETA after it."""

    def __init__(self, stream: TextIO) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=None, unit="step", dynamic_ncols=True, file=stream)

    def show(self, job: dict[str, Any]) -> None:
        progress = job.get("progress") or {}
        total = progress.get("total_steps")
        if total and self.bar.total != total:
            self.bar.total = total
        step = progress.get("step") or 0
        if step != self.bar.n:
            self.bar.n = step
        self.bar.set_postfix(progress_fields(job), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class LineProgress:
    """One line per change: `training step 12/60 loss=1.2345 eta=40s`."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last: str | None = None

    def show(self, job: dict[str, Any]) -> None:
        progress = job.get("progress") or {}
        fields = progress_fields(job)
        status = fields.pop("status")
        step = progress.get("step")
        total = progress.get("total_steps")
        parts = [status]
        if step is not None or total:
            parts.append(f"step {step or 0}/{total or '?'}")
        parts += [f"{key}={value}" for key, value in fields.items() if key != "eta"]
        line = " ".join(parts)
        if line != self.last:  # the ETA alone changes every poll: not worth a line
            eta = f" eta={fields['eta']}" if "eta" in fields else ""
            print(line + eta, file=self.stream, flush=True)
            self.last = line

    def close(self) -> None:
        pass


class NoProgress:
    def show(self, job: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def open_progress(
    *, quiet: bool, stream: TextIO | None = None
) -> BarProgress | LineProgress | NoProgress:
    """The display for this terminal: none with --json, lines where a bar cannot show."""
    stream = stream or sys.stderr
    if quiet:
        return NoProgress()
    columns = terminal_columns(stream)
    if columns is not None and columns < MIN_BAR_COLUMNS:
        return LineProgress(stream)
    return BarProgress(stream)
