"""Which checkpoints a job keeps, what their markers say, and load_best_model_at_end's export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.harness import TrainerStack, base_request, colour_rows, to_jsonl
from trainer.checkpoints import CheckpointStore
from trainer.evaluation import TokenMetricsSFTTrainer
from trainer.main import main
from tuning.checkpoints import read_marker
from tuning.events import EvaluationEvent, EventType, ProgressEvent

# The eval loss each evaluation reports, by step: best at 4, an early step that neither the
# newest two checkpoints nor the end of training would keep by themselves. A tiny model's
# real eval loss only falls over 12 steps, which would make the last checkpoint the best.
SCRIPTED_EVAL_LOSS = {2: 3.0, 4: 1.0, 6: 2.0, 8: 2.5, 10: 2.7, 12: 2.9}


def script_eval_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    original = TokenMetricsSFTTrainer.evaluation_loop

    def evaluation_loop(self: Any, *args: Any, **kwargs: Any) -> Any:
        output = original(self, *args, **kwargs)
        output.metrics["eval_loss"] = SCRIPTED_EVAL_LOSS[self.state.global_step]
        return output

    monkeypatch.setattr(TokenMetricsSFTTrainer, "evaluation_loop", evaluation_loop)


def test_the_newest_checkpoints_and_the_best_stay_and_the_best_is_exported(
    stack: TrainerStack, tiny_gemma3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script_eval_loss(monkeypatch)
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl(colour_rows(24, seed=5))})
    request = base_request()
    request["processed_dataset_id"] = "colours"
    request["training_config"]["base_model_id"] = stack.upload_model(tiny_gemma3, "tiny-gemma3")
    request["training_config"]["export_config"] = {"format": "adapter"}
    request["training_config"]["eval_config"] = {"eval_strategy": "steps", "eval_steps": 2}
    request["training_config"]["hyperparameters"].update(
        {
            "max_steps": 12,
            "save_steps": 2,
            "logging_steps": 1,
            "save_total_limit": 2,
            "load_best_model_at_end": True,
        }
    )
    job_id = stack.submit(request)
    settings = stack.settings(job_id)

    assert main(settings=settings, services=stack.services(job_id)) == 0

    events = stack.pull_events(job_id)
    assert events[-1].type is EventType.COMPLETED
    eval_losses = {
        e.payload.metrics.step: e.payload.metrics.eval_loss
        for e in events
        if isinstance(e, EvaluationEvent) and e.payload.metrics.step
    }
    train_losses = {e.payload.step: e.payload.loss for e in events if isinstance(e, ProgressEvent)}
    assert eval_losses == SCRIPTED_EVAL_LOSS
    best = 4
    store = CheckpointStore(stack.storage, settings.layout, job_id, ensure_job_active=lambda: None)
    assert store.complete_steps() == sorted({10, 12, best})
    for step in store.complete_steps():
        marker = read_marker(stack.storage, settings.layout, job_id, step)
        assert marker.eval_step == step
        assert marker.eval_loss == eval_losses[step]
        assert marker.train_loss == train_losses[step]
        assert marker.size_bytes and marker.created_at is not None
    # The exported adapter is the best checkpoint's, not the last step's.
    checkpoint = tmp_path / "best"
    stack.storage.download_dir(settings.layout.checkpoint_prefix(job_id, best), checkpoint)
    exported = tmp_path / "exported"
    stack.storage.download_dir(settings.layout.adapter_prefix(job_id), exported)
    at_best = load_file(checkpoint / "adapter_model.safetensors")
    final = load_file(exported / "adapter_model.safetensors")
    assert at_best.keys() == final.keys()
    assert all(torch.equal(at_best[name], final[name]) for name in at_best)
    last = tmp_path / "last"
    stack.storage.download_dir(settings.layout.checkpoint_prefix(job_id, 12), last)
    at_last = load_file(last / "adapter_model.safetensors")
    assert not all(torch.equal(at_last[name], final[name]) for name in at_last)
