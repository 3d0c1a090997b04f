"""Checkpoints through the status function: what the trainer's store writes, the API lists
and signs (against the emulators)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from tests.emulator.test_api_stack import ApiStack
from trainer.checkpoints import CheckpointStore, CheckpointSummary, Retention
from tuning.jobs import JobStatus


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> ApiStack:
    return ApiStack.start(monkeypatch, tmp_path, unique)


def saved_checkpoint(folder: Path, step: int) -> Path:
    """A LoRA checkpoint folder as the Trainer saves it."""
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(f"adapter at {step}".encode())
    (folder / "adapter_config.json").write_text('{"r": 16}')
    (folder / "trainer_state.json").write_text("{}")
    (folder / "optimizer.pt").write_bytes(b"optimizer state" * 10)
    (folder / "scheduler.pt").write_bytes(b"scheduler")
    (folder / "rng_state.pth").write_bytes(b"rng")
    return folder


def train(
    stack: ApiStack, tmp_path: Path, job_id: str, steps: list[int], eval_losses: dict[int, float]
) -> CheckpointStore:
    """Upload a checkpoint at each step as the trainer's callback would, with the Trainer
    state's log at that point (a training loss every step, evaluations where given)."""
    store = CheckpointStore(
        stack.services.storage,
        stack.settings.layout,
        job_id,
        ensure_job_active=lambda: None,
        retention=Retention(keep_last=3, keep_best=True),
    )
    history: list[dict[str, float]] = []
    for step in steps:
        history.append({"step": step, "loss": 2.0 / step, "epoch": step / 10})
        if step in eval_losses:
            history.append({"step": step, "eval_loss": eval_losses[step], "eval_runtime": 1.5})
        state = SimpleNamespace(global_step=step, epoch=step / 10, log_history=list(history))
        folder = saved_checkpoint(tmp_path / job_id / f"checkpoint-{step}", step)
        store.upload(folder, step, CheckpointSummary.from_state(state))
    return store


def test_checkpoints_are_listed_newest_first_with_losses_and_size_a_page_at_a_time(
    stack: ApiStack, tmp_path: Path
) -> None:
    stack.make_job("run", status=JobStatus.TRAINING)
    # Step 20 has the best eval loss: kept with the newest three (30, 40, 50); 10 goes.
    train(stack, tmp_path, "run", [10, 20, 30, 40, 50], {10: 1.2, 20: 0.7, 40: 0.9})

    first = stack.get("/jobs/run/checkpoints", limit=2).get_json()
    second = stack.get("/jobs/run/checkpoints", limit=2, page_token=first["next_page_token"])

    assert [c["step"] for c in first["checkpoints"]] == [50, 40]
    assert [c["step"] for c in second.get_json()["checkpoints"]] == [30, 20]
    assert second.get_json()["next_page_token"] is None
    newest, at_40 = first["checkpoints"]
    assert newest["train_loss"] == pytest.approx(2.0 / 50) and newest["epoch"] == 5.0
    assert (newest["eval_step"], newest["eval_metrics"]) == (40, {"eval_loss": 0.9})
    assert at_40["eval_metrics"] == {"eval_loss": 0.9}  # eval_runtime is about the run
    assert newest["size_bytes"] == sum(
        path.stat().st_size for path in (tmp_path / "run" / "checkpoint-50").iterdir()
    )
    assert newest["created_at"].endswith(("Z", "+00:00"))


def test_a_checkpoint_download_signs_its_weights_and_not_its_training_state(
    stack: ApiStack, tmp_path: Path
) -> None:
    stack.make_job("run", status=JobStatus.TRAINING)  # a running job's checkpoints download
    train(stack, tmp_path, "run", [10, 20], {})

    answer = stack.get("/jobs/download/run", checkpoint=10)

    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["artifact"], body["checkpoint"]) == ("checkpoint", 10)
    fetched = {
        file["path"]: requests.get(file["download_url"], timeout=10) for file in body["files"]
    }
    assert sorted(fetched) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "trainer_state.json",
    ]
    assert fetched["adapter_model.safetensors"].content == b"adapter at 10"
    assert requests.get(body["download_url"], timeout=10).content == b"adapter at 10"


def test_a_checkpoint_that_is_not_kept_or_not_complete_is_404_naming_the_field(
    stack: ApiStack, tmp_path: Path
) -> None:
    stack.make_job("run", status=JobStatus.TRAINING)
    train(stack, tmp_path, "run", [10, 20, 30, 40], {})  # 10 is beyond the newest three
    unfinished = stack.settings.layout.checkpoint_prefix("run", 50)
    stack.upload(f"{unfinished}adapter_model.safetensors")  # no marker: an upload cut short

    answers = [stack.get("/jobs/download/run", checkpoint=step) for step in (10, 50, 7)]

    assert [answer.status_code for answer in answers] == [404, 404, 404]
    assert {answer.get_json()["error"]["field"] for answer in answers} == {"checkpoint"}
    listed = stack.get("/jobs/run/checkpoints").get_json()["checkpoints"]
    assert [c["step"] for c in listed] == [40, 30, 20]


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ({"checkpoint": -1}, 422, "checkpoint"),
        ({"checkpoint": "ten"}, 422, "checkpoint"),
        ({"checkpoint": 10, "artifact": "adapter"}, 422, "checkpoint"),
        ({"artifact": "checkpoint"}, 422, "checkpoint"),
        ({"checkpoint": 10, "quantization": "q8_0"}, 422, "quantization"),
    ],
)
def test_bad_checkpoint_downloads_are_refused_naming_the_field(
    stack: ApiStack, query: dict[str, object], status: int, field: str
) -> None:
    stack.make_job("run", status=JobStatus.TRAINING)

    answer = stack.get("/jobs/download/run", **query)

    assert answer.status_code == status
    assert answer.get_json()["error"]["field"] == field


@pytest.mark.parametrize("token", ["abc", "-1", "1" * 30, "\uff11\uff12"])
def test_a_page_token_this_api_did_not_issue_is_400(stack: ApiStack, token: str) -> None:
    stack.make_job("run", status=JobStatus.TRAINING)

    answer = stack.get("/jobs/run/checkpoints", page_token=token)

    assert answer.status_code == 400
    assert answer.get_json()["error"]["field"] == "page_token"


def test_a_job_without_checkpoints_lists_none_and_an_unknown_job_is_404(stack: ApiStack) -> None:
    stack.make_job("fresh")

    assert stack.get("/jobs/fresh/checkpoints").get_json() == {
        "checkpoints": [],
        "next_page_token": None,
    }
    assert stack.get("/jobs/nobody/checkpoints").status_code == 404
