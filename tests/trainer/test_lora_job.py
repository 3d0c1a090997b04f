"""A LoRA SFT job end to end: config in GCS -> events on Pub/Sub -> artifacts in GCS.

The job runs once (module fixture); each test checks one promise about it.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.harness import TrainerStack, base_request, colour_rows, to_jsonl
from tests.trainer.reference import load_causal_lm, load_with_adapter, reference_eval
from tuning.events import CompletedEvent, EvaluationEvent, EventType, JobEvent, ProgressEvent

# Not token-shaped on purpose: only registration (not pattern matching) can keep them out.
HF_TOKEN = "hf-secret-" + uuid.uuid4().hex
WANDB_KEY = "wandb-secret-" + uuid.uuid4().hex
SECRETS = (HF_TOKEN, WANDB_KEY)


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class FinishedJob:
    stack: TrainerStack
    job_id: str
    exit_code: int
    events: list[JobEvent]
    logs: list[str]
    base_dir: Path
    adapter_dir: Path
    merged_dir: Path
    eval_rows: list[dict[str, Any]]

    def of_type(self, kind: type) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    @property
    def completed(self) -> CompletedEvent:
        (event,) = self.of_type(CompletedEvent)
        return event


@pytest.fixture(scope="module")
def job(
    emulators: dict[str, str], tiny_gemma3: Path, tmp_path_factory: pytest.TempPathFactory
) -> FinishedJob:
    from trainer.main import main
    from tuning.logs import setup_logging

    root = tmp_path_factory.mktemp("lora-job")
    stack = TrainerStack(
        project=emulators["GOOGLE_CLOUD_PROJECT"],
        unique=uuid.uuid4().hex[:10],
        work_dir=root / "work",
        secrets_file=root / "secrets.json",
    )
    eval_rows = colour_rows(12, seed=2)
    stack.upload_dataset(
        "colours",
        {"train.jsonl": to_jsonl(colour_rows(48, seed=1)), "validation.jsonl": to_jsonl(eval_rows)},
    )
    request = base_request()
    request["processed_dataset_id"] = "colours"
    request["training_config"]["base_model_id"] = stack.upload_model(tiny_gemma3, "tiny-gemma3")
    request["hf_token"] = HF_TOKEN
    request["training_config"]["wandb_config"] = {"project": "tiny-colours", "api_key": WANDB_KEY}
    job_id = stack.submit(request)

    setup_logging("tests")
    capture = ListHandler()
    logging.getLogger().addHandler(capture)  # after the redacting handler, like any sink
    try:
        exit_code = main(settings=stack.settings(job_id), services=stack.services(job_id))
    finally:
        logging.getLogger().removeHandler(capture)
    events = stack.pull_events(job_id)
    completed = [e for e in events if isinstance(e, CompletedEvent)]
    artifacts = completed[0].payload.artifacts if completed else None
    adapter_dir, merged_dir = root / "adapter", root / "merged"
    if artifacts is not None:
        stack.storage.download_dir(artifacts.adapter_path, adapter_dir)
        stack.storage.download_dir(artifacts.merged_path, merged_dir)
    return FinishedJob(
        stack,
        job_id,
        exit_code,
        events,
        capture.lines,
        tiny_gemma3,
        adapter_dir,
        merged_dir,
        eval_rows,
    )


def test_exits_zero_after_the_full_event_sequence(job: FinishedJob) -> None:
    types = [event.type for event in job.events]

    assert job.exit_code == 0
    assert [event.seq for event in job.events] == list(range(len(job.events)))
    assert types[0] is EventType.PREPARING
    assert types.index(EventType.TRAINING) < types.index(EventType.PROGRESS)
    assert EventType.EVALUATION in types
    assert types[-2:] == [EventType.EXPORTING, EventType.COMPLETED]
    progress = job.of_type(ProgressEvent)
    assert [p.payload.step for p in progress] == sorted(p.payload.step for p in progress)
    last = progress[-1].payload
    assert (last.step, last.total_steps, last.eta_seconds) == (12, 12, 0.0)
    assert last.tokens_per_second and last.tokens_per_second > 0
    assert all(p.payload.loss is not None and p.payload.learning_rate for p in progress)


def test_training_event_carries_dataset_stats(job: FinishedJob) -> None:
    (training,) = [e for e in job.events if e.type is EventType.TRAINING]
    stats = training.payload.dataset_stats

    assert training.payload.total_steps == 12
    assert (stats.train_rows, stats.eval_rows, stats.truncated_rows) == (48, 12, 0)
    assert stats.train_tokens > 48 * 10


def test_artifacts_are_complete_models(job: FinishedJob) -> None:
    artifacts = job.completed.payload.artifacts
    adapter_files = {p.name for p in job.adapter_dir.iterdir()}
    merged_files = {p.name for p in job.merged_dir.iterdir()}
    tokenizer_config = json.loads((job.merged_dir / "tokenizer_config.json").read_text())
    generation = json.loads((job.merged_dir / "generation_config.json").read_text())
    end_of_turn = next(
        int(i)
        for i, t in tokenizer_config["added_tokens_decoder"].items()
        if t["content"] == "<end_of_turn>"
    )

    assert artifacts.adapter_path == job.stack.settings(job.job_id).layout.adapter_prefix(
        job.job_id
    )
    assert artifacts.merged_path == job.stack.settings(job.job_id).layout.merged_prefix(job.job_id)
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.model"} <= adapter_files
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
    } <= merged_files
    for directory in (job.adapter_dir, job.merged_dir):
        assert (directory / "tokenizer.model").read_bytes() == (
            job.base_dir / "tokenizer.model"
        ).read_bytes()
    assert tokenizer_config["added_tokens_decoder"][str(end_of_turn)]["special"] is True
    assert end_of_turn in generation["eos_token_id"]
    assert json.loads((job.merged_dir / "config.json").read_text())["dtype"] == "bfloat16"
    assert "training_args.bin" not in adapter_files


def test_trainable_weights_changed_and_eval_loss_fell(job: FinishedJob) -> None:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    adapter = load_file(job.adapter_dir / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    evaluations = [e.payload.metrics for e in job.of_type(EvaluationEvent)]
    tokenizer = AutoTokenizer.from_pretrained(job.base_dir)
    base_loss, _ = reference_eval(load_causal_lm(job.base_dir), tokenizer, job.eval_rows)

    assert lora_b and all(tensor.abs().max() > 0 for tensor in lora_b)  # LoRA B starts at zero
    assert job.completed.payload.metrics.eval_loss < base_loss
    assert evaluations[-1].eval_loss < evaluations[0].eval_loss


def test_perplexity_and_accuracy_match_an_independent_computation(job: FinishedJob) -> None:
    from transformers import AutoTokenizer

    metrics = job.completed.payload.metrics
    tokenizer = AutoTokenizer.from_pretrained(job.adapter_dir)
    loss, accuracy = reference_eval(
        load_with_adapter(job.base_dir, job.adapter_dir), tokenizer, job.eval_rows
    )

    for evaluation in [e.payload.metrics for e in job.of_type(EvaluationEvent)] + [metrics]:
        assert evaluation.perplexity == pytest.approx(math.exp(evaluation.eval_loss), rel=1e-12)
    assert metrics.step == 12
    assert metrics.eval_loss == pytest.approx(loss, rel=1e-5)
    assert metrics.accuracy == pytest.approx(accuracy, abs=1e-9)
    assert metrics.train_loss is not None and metrics.tokens_per_second > 0


def test_merged_model_logits_equal_base_plus_adapter(job: FinishedJob) -> None:
    import torch

    ids = torch.tensor([[2, 5, 300, 301, 302, 6, 10, 5, 400, 401]])
    # The merge ran on the 16-bit base, so the reference starts from the same rounded weights.
    expected = load_with_adapter(job.base_dir, job.adapter_dir, dtype="bfloat16")(
        input_ids=ids
    ).logits
    merged = load_causal_lm(job.merged_dir)(input_ids=ids).logits

    torch.testing.assert_close(merged, expected, atol=2e-2, rtol=2e-2)


def test_no_secret_in_logs_events_objects_or_wandb_files(job: FinishedJob) -> None:
    stack = job.stack
    objects = [
        stack.storage.download_bytes(uri)
        for bucket in (stack.config_bucket, stack.models_bucket, stack.data_bucket)
        for uri in stack.storage.list(f"gs://{bucket}/")
    ]
    wandb_dir = stack.work_dir / job.job_id / "wandb"
    wandb_files = [p.read_bytes() for p in wandb_dir.rglob("*") if p.is_file()]
    event_data = [event.model_dump_json().encode() for event in job.events]

    assert job.logs and objects and wandb_files  # there is something to search
    for secret in SECRETS:
        needle = secret.encode()
        assert not any(secret in line for line in job.logs)
        assert not any(needle in data for data in objects + wandb_files + event_data)
