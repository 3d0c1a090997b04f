"""Shared test set-up: tiers by folder, and the emulator stack for the `emulator` tier."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

TIER_BY_FOLDER = {
    "emulator": "emulator",
    "trainer": "trainer",
    "e2e": "e2e",
    "terraform": "terraform",
    "reliability": "reliability",
    "slow": "slow",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the tier its folder names, so `-m` selects tiers."""
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in TIER_BY_FOLDER:
            item.add_marker(TIER_BY_FOLDER[folder])


@pytest.fixture
def unique() -> str:
    """A short suffix that keeps names from different tests apart."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start Firestore, Pub/Sub and fake-gcs-server once per session and point clients at them."""
    from tuning.local.emulators import EmulatorStack

    stack = EmulatorStack(tmp_path_factory.mktemp("emulators"))
    endpoints = stack.start()
    environ = endpoints.environ()
    saved = {key: os.environ.get(key) for key in environ}
    os.environ.update(environ)
    try:
        yield environ
    finally:
        stack.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
