"""The reliability tier: the local stack under load, faults and bad input (`make test-reliability`).

Every test drives real functions-framework servers through the Pub/Sub and Firestore
emulators (bench/stack.py starts them), and adds what it did to one `Ledger`, whose
figures are printed at the end of the run. The secrets scan (test_secrets.py, last
by name) looks through everything the other tests left behind for the token values
they submitted, so they all keep their stacks' state (and run in one session).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from bench.stack import Stack
from tests.fixtures.datasets import upload_test_datasets


@dataclass
class Ledger:
    """What the suite did, for the closing figures and the secrets scan."""

    figures: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "requests sent",
                "jobs created",
                "duplicates delivered",
                "kills injected",
                "malformed inputs tried",
                "secrets found",
                "jobs lost",
                "jobs stuck",
                "cross-tenant attempts",
                "cross-tenant succeeded",
            ),
            0,
        )
    )
    tokens: set[str] = field(default_factory=set)
    stacks: list[Stack] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, figure: str, count: int = 1) -> None:
        with self.lock:
            self.figures[figure] += count

    def token(self, prefix: str = "hf_") -> str:
        """A fresh secret value, remembered for the scan."""
        value = f"{prefix}Rel{secrets.token_hex(16)}"
        with self.lock:
            self.tokens.add(value)
        return value

    def remember(self, value: str) -> None:
        with self.lock:
            self.tokens.add(value)


_LEDGER = Ledger()


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return _LEDGER


@pytest.fixture(scope="module")
def start_stack(
    emulators: dict[str, str], tmp_path_factory: pytest.TempPathFactory, ledger: Ledger
) -> Iterator[Any]:
    """Start stacks for a module (stopped at its end; their state stays for the scan)."""
    started: list[Stack] = []

    def start(**options: Any) -> Stack:
        stack = Stack.start(tmp_path_factory.mktemp("stack"), capture_messages=True, **options)
        upload_test_datasets(stack.services)  # dispatch validates a job's dataset first
        started.append(stack)
        ledger.stacks.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not any(_LEDGER.figures.values()):
        return
    terminalreporter.section("reliability figures")
    tenancy = ("cross-tenant attempts", "cross-tenant succeeded")
    for name, value in _LEDGER.figures.items():
        if name not in tenancy:
            terminalreporter.write_line(f"{name:>24}: {value}")
    attempted, succeeded = (_LEDGER.figures[name] for name in tenancy)
    terminalreporter.write_line(f"cross-tenant attempts: {attempted}, succeeded: {succeeded}")
