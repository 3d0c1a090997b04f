from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _emulators_running(emulators: dict[str, str]) -> None:
    """Every test in this tier runs against the session's emulators."""
