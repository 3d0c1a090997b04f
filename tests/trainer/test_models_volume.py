"""Jobs reading their base model through the models volume, imitated by fake-gcs-server's own
folder of the models bucket (tuning/local/stack.py does the same): a gs:// model read in place,
and a Hub model staged once, reused by the next job, refused to a token the Hub refuses.

Nothing of the weights may land in the work directory, which on Cloud Run is the task's memory.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.fake_hub import FakeHub
from tests.trainer.harness import TrainerStack, base_request, colour_rows, to_jsonl
from trainer import base_model, pipeline
from trainer.hub_staging import MARKER, staging_root
from trainer.main import main
from tuning.events import CompletedEvent, EventType, FailedEvent, JobEvent, MessageEvent
from tuning.gcp.storage import GcsStore
from tuning.jobs import ErrorType
from tuning.local.emulators import LOCAL_GCS_ROOT_ENV
from tuning.services import Services
from tuning.settings import TrainerSettings

HUB_REPO = "google/tiny-gemma-3"
TOKEN_A = "hf-token-of-a-caller-who-accepted-the-licence"
TOKEN_B = "hf-token-of-a-caller-who-did-not"


class RecordingStore(GcsStore):
    """The emulator-backed store, noting every URI read through it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def download_bytes(self, uri: str) -> bytes:
        self.reads.append(uri)
        return super().download_bytes(uri)

    def download_dir(self, prefix_uri: str, local_dir: Path | str) -> list[Path]:
        self.reads.append(prefix_uri)
        return super().download_dir(prefix_uri, local_dir)

    def total_size(self, prefix_uri: str) -> int:
        self.reads.append(prefix_uri)
        return super().total_size(prefix_uri)


def mount_path(stack: TrainerStack) -> Path:
    return Path(os.environ[LOCAL_GCS_ROOT_ENV]) / stack.models_bucket / "base_models"


def volume_settings(stack: TrainerStack, job_id: str) -> TrainerSettings:
    return TrainerSettings.from_env(
        {
            **stack.environ(job_id),
            "MODELS_MOUNT_PATH": str(mount_path(stack)),
            "MODELS_MOUNT_ONLY_DIR": "base_models",
        }
    )


def submit(stack: TrainerStack, base_model_id: str, hf_token: str | None = None) -> str:
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl(colour_rows(16, seed=1))})
    request = base_request()
    request["processed_dataset_id"] = "colours"
    config = request["training_config"]
    config["base_model_id"] = base_model_id
    config["hyperparameters"].update({"max_steps": 2, "save_steps": 2})
    config["eval_config"] = {"eval_strategy": "no"}
    if hf_token is not None:
        request["hf_token"] = hf_token
    # TrainerStack names jobs with `random`, which training reseeds (seed 7): without this,
    # the job submitted after a training run gets the id of the one submitted before it.
    random.seed()
    return stack.submit(request)


@pytest.fixture
def model_dirs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The directory each job trained from, as the pipeline received it."""
    seen: list[Path] = []
    real: Callable[..., Path] = base_model.obtain_base_model

    def recording(*args: Any, **kwargs: Any) -> Path:
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(pipeline, "obtain_base_model", recording)
    return seen


def run(stack: TrainerStack, job_id: str, storage: GcsStore) -> tuple[int, list[JobEvent]]:
    settings = volume_settings(stack, job_id)
    services = Services(settings, secrets=stack.secrets, storage=storage)
    code = main(settings=settings, services=services)
    return code, stack.pull_events(job_id)


def files_under(root: Path) -> dict[str, tuple[int, int]]:
    return {
        path.relative_to(root).as_posix(): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*")
        if path.is_file()
    }


def test_a_gs_base_model_is_trained_from_the_volume_without_a_copy(
    stack: TrainerStack, tiny_gemma3: Path, model_dirs: list[Path]
) -> None:
    uri = stack.upload_model(tiny_gemma3, "tiny-gemma3")
    job_id = submit(stack, uri)
    before = files_under(mount_path(stack))
    storage = RecordingStore()

    code, events = run(stack, job_id, storage)

    assert code == 0
    assert events[-1].type is EventType.COMPLETED, events[-1]
    assert model_dirs == [mount_path(stack) / "tiny-gemma3"]
    assert not any(read.startswith(uri) for read in storage.reads), storage.reads
    assert storage.reads  # the job's config and dataset came through the store
    assert not (stack.work_dir / job_id / "base").exists()
    base_weights = {path.name for path in (mount_path(stack) / "tiny-gemma3").glob("*.safetensors")}
    copies = [
        path
        for path in (stack.work_dir / job_id).rglob("*.safetensors")
        if path.name in base_weights and "merged" not in path.parts
    ]
    assert copies == []  # the merged export writes its own; nothing else has the base's
    assert files_under(mount_path(stack)) == before  # the volume is only read
    completed = events[-1]
    assert isinstance(completed, CompletedEvent)
    adapter = completed.payload.artifacts.adapter_path
    assert adapter is not None
    config = stack.storage.download_json(f"{adapter}adapter_config.json")
    assert config["base_model_name_or_path"] == uri  # not the volume's path


def test_a_hub_model_is_staged_once_reused_and_refused_to_a_token_without_access(
    stack: TrainerStack,
    tiny_gemma3: Path,
    model_dirs: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = FakeHub.with_model(HUB_REPO, tiny_gemma3, readers={TOKEN_A})
    monkeypatch.setattr(base_model, "default_hub", lambda: hub)
    sha = hub.repos[HUB_REPO].refs["main"]
    root = staging_root(stack.models_bucket, HUB_REPO, sha)

    # The first job stages it, and says where.
    first = submit(stack, HUB_REPO, TOKEN_A)
    code, events = run(stack, first, RecordingStore())
    assert code == 0 and events[-1].type is EventType.COMPLETED, events[-1]
    marker = json.loads(stack.storage.download_bytes(f"{root}{MARKER}"))
    staged_uri = f"{root}{marker['folder']}/"
    notes = [e.payload.text for e in events if isinstance(e, MessageEvent)]
    assert any("staged at " + staged_uri in note for note in notes), notes
    staged_dir = mount_path(stack) / "hub" / HUB_REPO / sha / marker["folder"]
    assert model_dirs == [staged_dir]
    assert not (stack.work_dir / first / "base").exists()
    staged_downloads = len(hub.downloads)
    assert staged_downloads == len(marker["files"])

    # A caller whose token the Hub refuses never trains on the copy.
    refused = submit(stack, HUB_REPO, TOKEN_B)
    code, events = run(stack, refused, RecordingStore())
    assert code == 0  # a user error, reported once
    assert {e.type for e in events} == {EventType.PREPARING, EventType.FAILED}
    failed = events[-1]
    assert isinstance(failed, FailedEvent) and failed.payload.error.type is ErrorType.USER
    assert "gated" in failed.payload.error.message
    assert ("check_access", HUB_REPO, TOKEN_B) in hub.calls
    assert len(model_dirs) == 1

    # The next job with access reuses it: nothing is downloaded again.
    again = submit(stack, HUB_REPO, TOKEN_A)
    code, events = run(stack, again, RecordingStore())
    assert code == 0 and events[-1].type is EventType.COMPLETED, events[-1]
    assert len(hub.downloads) == staged_downloads
    assert model_dirs[-1] == staged_dir
    notes = [e.payload.text for e in events if isinstance(e, MessageEvent)]
    assert any("reused the copy at " + staged_uri in note for note in notes), notes
