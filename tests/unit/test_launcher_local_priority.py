"""Local trainers run below the stack's API processes, so that the API answers while they work."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.unit.test_launcher_local import finished, job
from tuning.launchers.local import DEFAULT_NICENESS, LocalLauncher

REPORT_PRIORITY = "import os; print('niceness', os.nice(0), flush=True)"


def test_a_trainer_runs_niced_below_the_server_that_launched_it(tmp_path: Path) -> None:
    launcher = LocalLauncher(
        tmp_path / "executions", command=[sys.executable, "-c", REPORT_PRIORITY]
    )
    try:
        execution = launcher.launch(job("niced"))
        finished(launcher, execution)
    finally:
        launcher.kill_all()
    log = launcher.log_path(execution).read_text()
    expected = min(19, os.nice(0) + DEFAULT_NICENESS)  # the kernel caps niceness at 19

    assert f"niceness {expected}" in log, log


def test_niceness_zero_leaves_the_trainer_at_the_server_priority(tmp_path: Path) -> None:
    environ = {**os.environ, "LOCAL_TRAINER_NICENESS": "0"}
    launcher = LocalLauncher(
        tmp_path / "executions", command=[sys.executable, "-c", REPORT_PRIORITY], environ=environ
    )
    try:
        execution = launcher.launch(job("not-niced"))
        finished(launcher, execution)
    finally:
        launcher.kill_all()

    assert f"niceness {os.nice(0)}" in launcher.log_path(execution).read_text()
