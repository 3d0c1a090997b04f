"""Vision SFT on a tiny Gemma 3 with a SigLIP tower, end to end, and its dataset checks.

The train split is parquet with the images as bytes; the eval split is JSONL whose images are
gs:// references into the data bucket. The job runs once (module fixture).
"""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.harness import (
    IMAGE_COLOURS,
    TrainerStack,
    base_request,
    png,
    to_jsonl,
    to_parquet,
    vision_row,
)
from trainer.main import main
from tuning.events import CompletedEvent, EvaluationEvent, EventType, JobEvent
from tuning.jobs import ErrorType


def vision_request(stack: TrainerStack, model_uri: str) -> dict[str, Any]:
    request = base_request()
    request["processed_dataset_id"] = "pictures"
    config = request["training_config"]
    config.update(base_model_id=model_uri, modality="vision")
    config["hyperparameters"].update(
        {"max_steps": 4, "batch_size": 4, "save_strategy": "no", "logging_steps": 1}
    )
    config["eval_config"] = {"eval_strategy": "steps", "eval_steps": 2}
    return request


@dataclass
class FinishedJob:
    stack: TrainerStack
    exit_code: int
    events: list[JobEvent]
    merged_dir: Path
    adapter_dir: Path


@pytest.fixture(scope="module")
def job(
    emulators: dict[str, str], tiny_gemma3_vision: Path, tmp_path_factory: pytest.TempPathFactory
) -> FinishedJob:
    root = tmp_path_factory.mktemp("vision-job")
    stack = TrainerStack(
        project=emulators["GOOGLE_CLOUD_PROJECT"],
        unique=uuid.uuid4().hex[:10],
        work_dir=root / "work",
        secrets_file=root / "secrets.json",
    )
    names = list(IMAGE_COLOURS)
    train = [vision_row(names[i % 3], png(names[i % 3], seed=i)) for i in range(16)]
    references = {}
    for name in names:
        references[name] = f"gs://{stack.data_bucket}/images/{name}.png"
        stack.storage.upload_bytes(references[name], png(name, seed=99))
    evaluation = [vision_row(name, references[name]) for name in names]
    stack.upload_dataset(
        "pictures", {"train.parquet": to_parquet(train), "eval.jsonl": to_jsonl(evaluation)}
    )
    job_id = stack.submit(
        vision_request(stack, stack.upload_model(tiny_gemma3_vision, "tiny-vision"))
    )

    exit_code = main(settings=stack.settings(job_id), services=stack.services(job_id))

    events = stack.pull_events(job_id)
    merged_dir, adapter_dir = root / "merged", root / "adapter"
    completed = [event for event in events if isinstance(event, CompletedEvent)]
    if completed:
        artifacts = completed[0].payload.artifacts
        stack.storage.download_dir(artifacts.merged_path, merged_dir)
        stack.storage.download_dir(artifacts.adapter_path, adapter_dir)
    return FinishedJob(stack, exit_code, events, merged_dir, adapter_dir)


def test_vision_job_trains_evaluates_and_completes(job: FinishedJob) -> None:
    types = [event.type for event in job.events]
    evaluations = [e.payload.metrics for e in job.events if isinstance(e, EvaluationEvent)]
    (training,) = [e for e in job.events if e.type is EventType.TRAINING]
    metrics = job.events[-1].payload.metrics

    assert job.exit_code == 0, job.events[-1]
    assert types[-1] is EventType.COMPLETED
    assert training.payload.dataset_stats.train_rows == 16
    assert training.payload.dataset_stats.eval_rows == 3  # the gs:// images were fetched
    assert [m.step for m in evaluations] == [2, 4]
    assert metrics.eval_loss is not None and metrics.perplexity is not None
    assert metrics.accuracy is not None  # token accuracy on the assistant turns
    assert metrics.train_loss is not None


def test_merged_export_has_the_processor_and_runs_on_an_image(
    job: FinishedJob, tiny_gemma3_vision: Path
) -> None:
    import torch
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    files = {path.name for path in job.merged_dir.iterdir()}
    processor = AutoProcessor.from_pretrained(job.merged_dir)
    model = AutoModelForImageTextToText.from_pretrained(job.merged_dir, dtype=torch.float32)
    conversation = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": Image.open(io.BytesIO(png("red")))},
                {"type": "text", "text": "What colour is this?"},
            ],
        }
    ]
    inputs = processor.apply_chat_template(
        conversation,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    lora_b = [
        t
        for n, t in load_file(job.adapter_dir / "adapter_model.safetensors").items()
        if "lora_B" in n
    ]

    assert {"processor_config.json", "tokenizer.model", "model.safetensors"} <= files
    assert {"processor_config.json", "adapter_model.safetensors"} <= {
        p.name for p in job.adapter_dir.iterdir()
    }
    assert json.loads((job.merged_dir / "config.json").read_text())["vision_config"]
    assert inputs["pixel_values"].shape[-2:] == (32, 32)
    assert model(**inputs).logits.shape[0] == 1
    assert lora_b and all(tensor.abs().max() > 0 for tensor in lora_b)  # LoRA B starts at zero


def failed_error(stack: TrainerStack, request: dict[str, Any]) -> Any:
    request["training_config"]["eval_config"] = None  # one split: its problems are the error
    job_id = stack.submit(request)
    code = main(settings=stack.settings(job_id), services=stack.services(job_id))
    events = stack.pull_events(job_id)
    assert code == 0
    assert EventType.TRAINING not in [e.type for e in events]
    return events[-1].payload.error


def test_vision_rows_without_images_fail_before_the_model(stack: TrainerStack) -> None:
    row = vision_row("red", "unused")
    del row["images"]
    stack.upload_dataset("pictures", {"train.jsonl": to_jsonl([row])})
    missing_model = f"gs://{stack.models_bucket}/base_models/never-uploaded/"

    error = failed_error(stack, vision_request(stack, missing_model))

    assert (error.type, error.code) == (ErrorType.USER, "invalid_dataset")
    assert "row 0, field 'images': no images" in error.message


def test_a_missing_or_foreign_image_reference_names_the_row(stack: TrainerStack) -> None:
    missing = f"gs://{stack.data_bucket}/images/nowhere.png"
    foreign = f"gs://{stack.models_bucket}/trained_adapters/other-job/adapter_model.safetensors"
    rows = [vision_row("red", missing), vision_row("blue", foreign)]
    stack.upload_dataset("pictures", {"train.jsonl": to_jsonl(rows)})
    missing_model = f"gs://{stack.models_bucket}/base_models/never-uploaded/"

    error = failed_error(stack, vision_request(stack, missing_model))

    assert (error.type, error.code) == (ErrorType.USER, "invalid_dataset")
    assert f"row 0, field 'images[0]': {missing} does not exist" in error.message
    assert "row 1, field 'images[0]'" in error.message and "data bucket" in error.message


def test_an_image_name_with_dot_or_empty_segments_names_the_row_and_field(
    stack: TrainerStack,
) -> None:
    # fake-gcs-server would resolve these to images/red.png; GCS would look for the literal
    # names. Both refuse them, before any request.
    stack.storage.upload_bytes(f"gs://{stack.data_bucket}/images/red.png", png("red"))
    dotted = f"gs://{stack.data_bucket}/images/x/../red.png"
    doubled = f"gs://{stack.data_bucket}/images//red.png"
    good = f"gs://{stack.data_bucket}/images/red.png"
    rows = [vision_row("red", good), vision_row("red", dotted), vision_row("red", doubled)]
    stack.upload_dataset("pictures", {"train.jsonl": to_jsonl(rows)})
    missing_model = f"gs://{stack.models_bucket}/base_models/never-uploaded/"

    error = failed_error(stack, vision_request(stack, missing_model))

    assert (error.type, error.code) == (ErrorType.USER, "invalid_dataset")
    assert "row 0" not in error.message
    assert f"row 1, field 'images[0]': invalid object name in '{dotted}'" in error.message
    assert f"row 2, field 'images[0]': invalid object name in '{doubled}'" in error.message
    assert "segment is empty, '.' or '..'" in error.message


def test_text_only_model_with_modality_vision_is_a_user_error(
    stack: TrainerStack, tiny_gemma3: Path
) -> None:
    stack.upload_dataset("pictures", {"train.parquet": to_parquet([vision_row("red", png("red"))])})
    request = vision_request(stack, stack.upload_model(tiny_gemma3, "text-only"))

    error = failed_error(stack, request)

    assert error.type is ErrorType.USER
    assert error.message.startswith("base_model_id:") and "text-only" in error.message


def test_a_max_seq_length_that_would_cut_an_image_is_refused(
    stack: TrainerStack, tiny_gemma3_vision: Path
) -> None:
    rows = [vision_row("red", png("red", seed=i)) for i in range(2)]
    # Gemma 3 puts the system text at the start of the first user turn, before its image.
    system = {"role": "system", "content": [{"type": "text", "text": "Look closely. " * 8}]}
    for row in rows:
        row["messages"].insert(0, system)
    stack.upload_dataset("pictures", {"train.parquet": to_parquet(rows)})
    request = vision_request(stack, stack.upload_model(tiny_gemma3_vision, "tiny-vision"))
    request["training_config"]["hyperparameters"]["max_seq_length"] = 16

    error = failed_error(stack, request)

    assert (error.type, error.code) == (ErrorType.USER, "invalid_dataset")
    assert "row 0, field 'images': its images end at token" in error.message
    assert "beyond max_seq_length 16" in error.message
