"""Full and QLoRA fine-tuning, packing on Gemma 2, and the Hub destination, each end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.trainer.harness import (
    RecordingHubUploader,
    TrainerStack,
    base_request,
    colour_rows,
    to_jsonl,
)
from trainer.main import main
from tuning.events import CompletedEvent, EventType


def small_request(stack: TrainerStack, model: Path, **hyperparameters: Any) -> dict[str, Any]:
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl(colour_rows(24, seed=3))})
    request = base_request()
    request["processed_dataset_id"] = "colours"
    request["training_config"]["base_model_id"] = stack.upload_model(model, model.name)
    request["training_config"]["eval_config"] = None
    request["training_config"]["export_config"] = {"format": "adapter"}
    request["training_config"]["hyperparameters"].update(
        {"max_steps": 4, "save_strategy": "no", "logging_steps": 1, **hyperparameters}
    )
    return request


def run(stack: TrainerStack, request: dict[str, Any], **kwargs: Any) -> tuple[int, list[Any]]:
    job_id = stack.submit(request)
    code = main(settings=stack.settings(job_id), services=stack.services(job_id), **kwargs)
    return code, stack.pull_events(job_id)


def test_full_fine_tuning_changes_the_weights(
    stack: TrainerStack, tiny_gemma3: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    request = small_request(stack, tiny_gemma3)
    request["training_config"]["method"] = "Full"
    request["training_config"]["hyperparameters"]["learning_rate"] = 1e-3

    code, events = run(stack, request)

    assert code == 0 and events[-1].type is EventType.COMPLETED
    stack.storage.download_dir(events[-1].payload.artifacts.adapter_path, tmp_path / "full")
    trained = load_file(tmp_path / "full" / "model.safetensors")
    base = load_file(tiny_gemma3 / "model.safetensors")
    changed = [name for name in base if not trained[name].float().allclose(base[name], atol=1e-3)]
    assert len(changed) > len(base) // 2
    assert (tmp_path / "full" / "tokenizer.model").is_file()


def test_qlora_completes_and_publishes_to_the_hub(stack: TrainerStack, tiny_gemma3: Path) -> None:
    request = small_request(stack, tiny_gemma3)
    request["training_config"]["method"] = "QLoRA"
    request["training_config"]["export_config"] = {
        "format": "merged",
        "destination": "hfhub",
        "hf_repo_id": "someone/tiny-colours",
    }
    request["hf_token"] = "hf-token-for-the-hub-test"
    hub = RecordingHubUploader()

    code, events = run(stack, request, hub_uploader=hub)

    assert code == 0
    texts = [e.payload.text for e in events if e.type is EventType.MESSAGE]
    assert any(text.startswith("QLoRA: the base model loaded in 4-bit") for text in texts), texts
    completed = events[-1]
    assert isinstance(completed, CompletedEvent)
    assert completed.payload.artifacts.hub_url == "https://huggingface.co/someone/tiny-colours"
    assert completed.payload.artifacts.merged_path  # the 16-bit merge, never into 4-bit weights
    (call,) = hub.calls
    assert (
        call["repo_id"] == "someone/tiny-colours" and call["token"] == "hf-token-for-the-hub-test"
    )
    assert {"model.safetensors", "tokenizer.model", "config.json"} <= set(call["files"])


def test_packing_on_gemma2_with_evaluation(stack: TrainerStack, tiny_gemma2: Path) -> None:
    request = small_request(stack, tiny_gemma2, packing=True, batch_size=2)
    request["training_config"]["eval_config"] = {"eval_strategy": "steps", "eval_steps": 2}

    code, events = run(stack, request)

    assert code == 0 and events[-1].type is EventType.COMPLETED
    evaluations = [e for e in events if e.type is EventType.EVALUATION]
    assert [e.payload.metrics.step for e in evaluations] == [2, 4]
    assert events[-1].payload.metrics.accuracy is not None
