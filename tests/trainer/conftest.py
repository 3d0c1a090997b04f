"""The trainer tier: tiny Gemma models built on the spot, jobs on the emulators."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.trainer.harness import TrainerStack

# Nothing may reach the Hub, and W&B writes its run files locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _emulators_running(emulators: dict[str, str]) -> None:
    """Every test in this tier runs against the session's emulators."""


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.tiny import build_tiny_gemma

    return build_tiny_gemma(tmp_path_factory.mktemp("models") / "tiny-gemma3", family="gemma3")


@pytest.fixture(scope="session")
def tiny_gemma2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.tiny import build_tiny_gemma

    return build_tiny_gemma(tmp_path_factory.mktemp("models") / "tiny-gemma2", family="gemma2")


@pytest.fixture(scope="session")
def tiny_gemma3_vision(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.tiny import build_tiny_gemma

    return build_tiny_gemma(
        tmp_path_factory.mktemp("models") / "tiny-gemma3-vision", family="gemma3-vision"
    )


@pytest.fixture(scope="session")
def tiny_gemma3_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Gemma 3 with llama.cpp's layer layout, which GGUF export requires."""
    from trainer.tiny import build_tiny_gemma

    return build_tiny_gemma(
        tmp_path_factory.mktemp("models") / "tiny-gemma3-gguf",
        family="gemma3",
        llama_cpp_layers=True,
    )


@pytest.fixture
def stack(emulators: dict[str, str], unique: str, tmp_path: Path) -> TrainerStack:
    return TrainerStack(
        project=emulators["GOOGLE_CLOUD_PROJECT"],
        unique=unique,
        work_dir=tmp_path / "work",
        secrets_file=tmp_path / "secrets" / "secrets.json",
    )
