"""A text job on a multimodal Gemma 3 (4B and up are Gemma3ForConditionalGeneration).

The language model trains; the SigLIP tower and projector get no adapters and are never
quantized; the export is the same multimodal model, its image path untouched, and its adapter
config names the base model the request named. The LoRA job runs once (module fixture).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.harness import TrainerStack, base_request, colour_rows, to_jsonl
from trainer.hardware import Hardware
from trainer.main import main
from tuning.events import CompletedEvent
from tuning.spec import Method

CPU = Hardware(cuda=False, bf16=False, flash_attention=False)
IMAGE_PATH = ("vision_tower", "multi_modal_projector")


@dataclass
class FinishedJob:
    exit_code: int
    events: list[Any]
    base_model_id: str
    adapter_dir: Path
    merged_dir: Path


@pytest.fixture(scope="module")
def job(
    emulators: dict[str, str], tiny_gemma3_vision: Path, tmp_path_factory: pytest.TempPathFactory
) -> FinishedJob:
    root = tmp_path_factory.mktemp("multimodal-text-job")
    stack = TrainerStack(
        project=emulators["GOOGLE_CLOUD_PROJECT"],
        unique=uuid.uuid4().hex[:10],
        work_dir=root / "work",
        secrets_file=root / "secrets.json",
    )
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl(colour_rows(16, seed=5))})
    request = base_request()
    request["processed_dataset_id"] = "colours"
    config = request["training_config"]
    config["base_model_id"] = stack.upload_model(tiny_gemma3_vision, "tiny-vision")
    config["eval_config"] = None
    config["hyperparameters"].update({"max_steps": 3, "save_strategy": "no", "logging_steps": 1})
    job_id = stack.submit(request)

    exit_code = main(settings=stack.settings(job_id), services=stack.services(job_id))

    events = stack.pull_events(job_id)
    adapter_dir, merged_dir = root / "adapter", root / "merged"
    completed = [event for event in events if isinstance(event, CompletedEvent)]
    if completed:
        artifacts = completed[0].payload.artifacts
        stack.storage.download_dir(artifacts.adapter_path, adapter_dir)
        stack.storage.download_dir(artifacts.merged_path, merged_dir)
    return FinishedJob(exit_code, events, config["base_model_id"], adapter_dir, merged_dir)


def test_text_job_puts_adapters_on_the_language_model_only(job: FinishedJob) -> None:
    from safetensors.torch import load_file

    adapter = load_file(job.adapter_dir / "adapter_model.safetensors")
    wrapped = {name.split(".lora_")[0] for name in adapter}

    assert job.exit_code == 0, job.events[-1]
    # 2 layers x 7 projections of the language model; none of the tower's 6 linear layers.
    assert len(wrapped) == 14
    assert all(".language_model." in name for name in wrapped)
    assert not any(part in name for name in wrapped for part in IMAGE_PATH)


def test_adapter_config_names_the_requested_base_model(job: FinishedJob) -> None:
    from peft import PeftConfig

    config = json.loads((job.adapter_dir / "adapter_config.json").read_text())

    assert config["base_model_name_or_path"] == job.base_model_id
    assert PeftConfig.from_pretrained(job.adapter_dir).base_model_name_or_path == (
        job.base_model_id
    )
    assert "/tmp" not in (job.adapter_dir / "README.md").read_text()


def test_merged_model_is_the_multimodal_model_with_its_image_path_untouched(
    job: FinishedJob, tiny_gemma3_vision: Path
) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    merged_config = json.loads((job.merged_dir / "config.json").read_text())
    merged = AutoModelForImageTextToText.from_pretrained(job.merged_dir).state_dict()
    base = AutoModelForImageTextToText.from_pretrained(tiny_gemma3_vision).state_dict()
    dtype = getattr(torch, merged_config["dtype"])
    image_path = [name for name in base if any(part in name for part in IMAGE_PATH)]
    language = [name for name in base if ".language_model.layers." in name and "proj" in name]

    assert merged_config["architectures"] == ["Gemma3ForConditionalGeneration"]
    assert dtype in (torch.bfloat16, torch.float32)  # never float16: Gemma overflows in it
    assert AutoProcessor.from_pretrained(job.merged_dir).image_processor is not None
    assert len(image_path) > 10 and len(language) == 14
    for name in image_path:  # the base in the merge's dtype, nothing more
        assert torch.equal(merged[name], base[name].to(dtype).float()), name
    changed = [
        name for name in language if not torch.equal(merged[name], base[name].to(dtype).float())
    ]
    assert len(changed) == len(language)  # every adapted projection was merged


def test_qlora_leaves_the_image_path_unquantized(tiny_gemma3_vision: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from trainer.modeling import load_model, parameter_count

    model = load_model(tiny_gemma3_vision, method=Method.QLORA, hardware=CPU, attention="sdpa")
    kinds = {
        name: type(module).__name__
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    unquantized = AutoModelForCausalLM.from_pretrained(tiny_gemma3_vision)

    tower = {name: kind for name, kind in kinds.items() if "vision_tower" in name}
    language = {name: kind for name, kind in kinds.items() if ".language_model." in name}
    assert len(tower) == 6 and set(tower.values()) == {"Linear"}
    assert len(language) == 14 and set(language.values()) == {"Linear4bit"}
    # The packed 4-bit storage holds fewer elements than the model has parameters; the
    # gradient-checkpointing threshold counts the parameters.
    stored = sum(parameter.numel() for parameter in model.parameters())
    expected = sum(parameter.numel() for parameter in unquantized.parameters())
    assert stored < expected
    assert parameter_count(model) == expected
