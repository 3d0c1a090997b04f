"""Jobs that continue earlier ones (`training_config.from_job`): from exactly those weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from tests.trainer.harness import TrainerStack, base_request, colour_rows, to_jsonl
from tests.trainer.test_preference import preference_rows
from trainer.main import main
from tuning.events import CompletedEvent, JobEvent, PreparingEvent
from tuning.lineage import check_parent
from tuning.spec import TrainRequest


def run(stack: TrainerStack, request: dict[str, Any]) -> tuple[str, list[JobEvent]]:
    """Submit as submit does (the parent checked, the lineage recorded) and train."""
    config = TrainRequest.model_validate(request).training_config
    lineage = check_parent(config, owner=None, services=stack.services("checking"))
    job_id = stack.submit(request, lineage=lineage)
    services = stack.services(job_id)
    assert main(settings=stack.settings(job_id), services=services) == 0
    events = stack.pull_events(job_id)
    assert isinstance(events[-1], CompletedEvent), events[-1]
    for event in events:  # as the event function would: the record follows the trainer
        services.jobs.apply_event(event)
    return job_id, events


def sft_request(stack: TrainerStack, model: str, **hyperparameters: Any) -> dict[str, Any]:
    request = base_request()
    request["processed_dataset_id"] = "colours"
    request["training_config"].update(
        base_model_id=model, eval_config=None, export_config={"format": "adapter"}
    )
    request["training_config"]["hyperparameters"].update(
        {"max_steps": 6, "save_steps": 3, "logging_steps": 1, **hyperparameters}
    )
    return request


def adapter(stack: TrainerStack, prefix: str, into: Path) -> dict[str, torch.Tensor]:
    stack.storage.download_dir(prefix, into)
    return load_file(into / "adapter_model.safetensors")


def test_a_job_continued_from_a_checkpoint_starts_from_exactly_its_adapter(
    stack: TrainerStack, tiny_gemma3: Path, tmp_path: Path
) -> None:
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl(colour_rows(24, seed=5))})
    model = stack.upload_model(tiny_gemma3, "tiny-gemma3")
    parent, _ = run(stack, sft_request(stack, model))
    layout = stack.settings(parent).layout
    at_3 = adapter(stack, layout.checkpoint_prefix(parent, 3), tmp_path / "checkpoint-3")
    final = adapter(stack, layout.adapter_prefix(parent), tmp_path / "parent-final")
    assert not all(torch.equal(at_3[name], final[name]) for name in at_3)

    # A learning rate of 1e-12 changes the weights by about that: what the child exports is
    # what it started from, to float precision, and far from the parent's final adapter.
    request = sft_request(stack, model, learning_rate=1e-12, max_steps=2, save_strategy="no")
    request["training_config"]["from_job"] = f"{parent}:3"
    child, events = run(stack, request)

    exported = adapter(stack, stack.settings(child).layout.adapter_prefix(child), tmp_path / "c")
    assert exported.keys() == at_3.keys()
    assert all(torch.allclose(exported[name], at_3[name], rtol=0, atol=1e-9) for name in at_3)
    assert any(not torch.allclose(exported[name], final[name], atol=1e-4) for name in final)
    preparing = [e.payload.message for e in events if isinstance(e, PreparingEvent)]
    assert f"fetching job {parent}'s weights (step 3)" in preparing


def test_an_sft_job_continues_as_dpo_on_its_final_adapter(
    stack: TrainerStack, tiny_gemma3: Path, tmp_path: Path
) -> None:
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl(colour_rows(24, seed=5))})
    stack.upload_dataset(
        "prefs", {"train.jsonl": to_jsonl(preference_rows(16, conversational=True))}
    )
    model = stack.upload_model(tiny_gemma3, "tiny-gemma3")
    parent, _ = run(stack, sft_request(stack, model, save_strategy="no"))
    request = sft_request(
        stack, model, max_steps=3, save_strategy="no", learning_rate=0.005, beta=0.5
    )
    request["processed_dataset_id"] = "prefs"
    request["training_config"].update(trainer_type="dpo", from_job=parent)
    request["training_config"]["hyperparameters"].update(max_prompt_length=16, max_seq_length=64)

    child, events = run(stack, request)

    layout = stack.settings(child).layout
    sft = adapter(stack, layout.adapter_prefix(parent), tmp_path / "sft")
    dpo = adapter(stack, layout.adapter_prefix(child), tmp_path / "dpo")
    assert dpo.keys() == sft.keys()  # the same adapter, trained on
    assert not all(torch.equal(dpo[name], sft[name]) for name in sft)
    assert events[-1].payload.metrics.model_dump().get("rewards_margins") is not None


def test_a_full_job_continues_from_the_weights_its_parent_exported(
    stack: TrainerStack, tiny_gemma3: Path, tmp_path: Path
) -> None:
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl(colour_rows(24, seed=5))})
    model = stack.upload_model(tiny_gemma3, "tiny-gemma3")
    full = {"method": "Full", "export_config": {"format": "adapter"}}
    parent_request = sft_request(stack, model, max_steps=3, save_strategy="no", learning_rate=1e-3)
    parent_request["training_config"].update(full)
    parent, _ = run(stack, parent_request)
    request = sft_request(stack, model, max_steps=1, save_strategy="no", learning_rate=1e-12)
    request["training_config"].update(full, from_job=parent)

    child, _ = run(stack, request)

    layout = stack.settings(child).layout
    stack.storage.download_dir(layout.adapter_prefix(parent), tmp_path / "parent")
    stack.storage.download_dir(layout.adapter_prefix(child), tmp_path / "child")
    base = load_file(next(tiny_gemma3.glob("*.safetensors")))
    before = load_file(tmp_path / "parent" / "model.safetensors")
    after = load_file(tmp_path / "child" / "model.safetensors")
    assert after.keys() == before.keys()
    # The child's weights are the parent's (a 1e-12 step vanishes in bf16), not the base's.
    assert all(torch.equal(after[name], before[name]) for name in before)
    assert any(
        not torch.equal(before[name], base[name].to(before[name].dtype))
        for name in before
        if name in base
    )
