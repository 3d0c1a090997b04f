"""The opt-in real-model tier: Gemma 3 270M from PyPI, trained and exported on the CPU.

Runs only when asked for (`-m slow`, as `make test-slow` does); any other run shows these tests
as skipped, with the command. Once asked for, a missing prerequisite fails with the command that
installs it: a real-model check that skips itself proves nothing. The figures the run measured
(losses, generated text, timings) are printed in the terminal summary.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).parent
RUN_COMMAND = "make test-slow (or: python -m pytest -m slow tests/slow)"
# What the tests measured, for the terminal summary: name -> value, in insertion order.
REPORT: dict[str, Any] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason=f"opt-in real-model test: run `{RUN_COMMAND}`")
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORT:
        return
    terminalreporter.section("real Gemma 3 270M: what was measured")
    for name, value in REPORT.items():
        terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="session")
def report() -> dict[str, Any]:
    """Record a measured figure for the terminal summary: `report["eval loss"] = ...`."""
    return REPORT


@pytest.fixture(scope="session")
def real_gemma(report: dict[str, Any]) -> Path:
    """The Gemma 3 270M snapshot (built once from the PyPI package, then cached)."""
    from tests.slow.real_gemma import MissingPackageError, real_gemma_snapshot

    started = time.monotonic()
    try:
        snapshot = real_gemma_snapshot()
    except MissingPackageError as error:
        missing = str(error)
    else:
        missing = None
    if missing:  # outside the except block, so the failure is the message alone
        pytest.fail(missing, pytrace=False)
    report["snapshot"] = f"{snapshot} ({time.monotonic() - started:.0f} s to build or find)"
    return snapshot


@pytest.fixture(scope="session")
def llama_cpp_sources() -> None:
    """llama.cpp's converter, which the trainer's GGUF export runs (never fetched at run time)."""
    from trainer.llama_cpp import LlamaCppMissingError, LlamaCppTools

    try:
        LlamaCppTools.locate()
    except LlamaCppMissingError as error:
        pytest.fail(f"{error} (or run {RUN_COMMAND})", pytrace=False)
