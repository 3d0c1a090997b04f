"""GPU-only paths: bf16 and FlashAttention-2 on CUDA, and provider `unsloth`.

Opt-in (`gpu` marker; `make test` deselects it) and skipped, with the reason shown, where no
CUDA GPU is present. On a GPU machine with the trainer's requirements (and `unsloth` for the
last test):

    HF_HUB_OFFLINE=1 python -m pytest -m gpu tests/trainer/test_gpu.py -rs
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.harness import (
    TrainerStack,
    base_request,
    colour_rows,
    png,
    to_jsonl,
    to_parquet,
    vision_row,
)
from trainer.main import main
from tuning.events import CompletedEvent, EventType, MessageEvent


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")]


def gpu_request(stack: TrainerStack, model: Path, **config: Any) -> dict[str, Any]:
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl(colour_rows(32, seed=5))})
    request = base_request()
    request["processed_dataset_id"] = "colours"
    request["training_config"].update(base_model_id=stack.upload_model(model, "tiny"), **config)
    request["training_config"]["hyperparameters"].update({"max_steps": 4, "save_strategy": "no"})
    request["training_config"]["eval_config"] = None
    return request


def run(stack: TrainerStack, request: dict[str, Any]) -> list[Any]:
    job_id = stack.submit(request)
    assert main(settings=stack.settings(job_id), services=stack.services(job_id)) == 0
    return stack.pull_events(job_id)


def test_the_gpu_is_detected_with_bf16() -> None:
    from trainer.hardware import compute_dtype_name, detect

    hardware = detect()

    assert hardware.cuda and hardware.name != "cpu"
    assert compute_dtype_name(hardware) == ("bfloat16" if hardware.bf16 else "float32")


def test_lora_with_flash_attention_and_packing_on_cuda(
    stack: TrainerStack, tiny_gemma3: Path
) -> None:
    if importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn is not installed")
    request = gpu_request(stack, tiny_gemma3)
    request["training_config"]["hyperparameters"].update(use_fa2=True, packing=True)

    events = run(stack, request)

    assert isinstance(events[-1], CompletedEvent)
    warnings = [e.payload.text for e in events if isinstance(e, MessageEvent)]
    assert not any("FlashAttention-2 is not available" in text for text in warnings)


def test_qlora_vision_on_cuda(stack: TrainerStack, tiny_gemma3_vision: Path) -> None:
    stack.upload_dataset(
        "pictures",
        {"train.parquet": to_parquet([vision_row("red", png("red", seed=i)) for i in range(8)])},
    )
    request = gpu_request(stack, tiny_gemma3_vision, modality="vision", method="QLoRA")
    request["processed_dataset_id"] = "pictures"

    events = run(stack, request)

    assert events[-1].type is EventType.COMPLETED


def test_unsloth_provider_trains_a_lora_job(stack: TrainerStack, tiny_gemma3: Path) -> None:
    pytest.importorskip("unsloth")

    events = run(stack, gpu_request(stack, tiny_gemma3, provider="unsloth"))

    assert isinstance(events[-1], CompletedEvent)
    assert events[-1].payload.artifacts.adapter_path
