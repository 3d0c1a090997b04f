"""A run killed after a mid-epoch checkpoint and resumed ends with the uninterrupted run's
weights: the resumed attempt trains on the same batches, in the same order (issue 15.1)."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.harness import COLOURS, WORDS, TrainerStack, base_request, to_jsonl
from tests.trainer.test_failures import run_trainer_process
from trainer.checkpoints import CheckpointStore
from trainer.main import main
from tuning.events import CompletedEvent, JobEvent, RestartedEvent

EPOCHS = 3


def varied_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """Chat rows of 1 to 6 sentences, so that length grouping and packing have work to do."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        picks = [rng.randrange(len(WORDS)) for _ in range(rng.randint(1, 6))]
        question = " and ".join(WORDS[i] for i in picks)
        answer = " ".join(f"{WORDS[i]} is {COLOURS[i]}." for i in picks)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"What colours are {question}?"},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return rows


def request_for(stack: TrainerStack, tiny_gemma3: Path, **hyperparameters: Any) -> dict[str, Any]:
    stack.upload_dataset("varied", {"train.jsonl": to_jsonl(varied_rows(24, seed=11))})
    request = base_request()
    request["processed_dataset_id"] = "varied"
    request["training_config"]["base_model_id"] = stack.upload_model(tiny_gemma3, "tiny-gemma3")
    request["training_config"]["eval_config"] = None
    request["training_config"]["export_config"] = {"format": "adapter"}
    request["training_config"]["hyperparameters"].update(
        {
            "max_steps": -1,
            "epochs": EPOCHS,
            "save_strategy": "steps",
            "save_steps": 1000,
            "logging_steps": 1,
            "batch_size": 2,
            "gradient_accumulation_steps": 1,
        }
        | hyperparameters
    )
    return request


def completed_of(events: list[JobEvent]) -> CompletedEvent:
    (completed,) = [event for event in events if isinstance(event, CompletedEvent)]
    return completed


def adapter_weights(stack: TrainerStack, completed: CompletedEvent, into: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    assert completed.payload.artifacts.adapter_path is not None
    stack.storage.download_dir(completed.payload.artifacts.adapter_path, into)
    (weights,) = into.rglob("adapter_model.safetensors")
    return load_file(str(weights))


def assert_resumed_run_matches_uninterrupted(
    stack: TrainerStack, tiny_gemma3: Path, tmp_path: Path, **hyperparameters: Any
) -> None:
    request = request_for(stack, tiny_gemma3, **hyperparameters)
    whole = stack.submit(request)
    assert main(settings=stack.settings(whole), services=stack.services(whole)) == 0
    whole_completed = completed_of(stack.pull_events(whole))
    total_steps = whole_completed.payload.metrics.step
    steps_per_epoch = total_steps // EPOCHS
    assert steps_per_epoch * EPOCHS == total_steps and steps_per_epoch >= 3

    # Checkpoints one step into the second epoch (and the third): whichever is the latest when
    # the kill lands, the resume restarts mid-epoch, past an epoch boundary.
    request["training_config"]["hyperparameters"]["save_steps"] = steps_per_epoch + 1
    split = stack.submit(request)
    checkpoints = CheckpointStore(
        stack.storage, stack.settings(split).layout, split, ensure_job_active=lambda: None
    )
    process = run_trainer_process(stack, split, attempt=0)
    deadline = time.monotonic() + 120
    while not checkpoints.complete_steps():
        assert process.poll() is None, process.communicate()[0].decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    latest = checkpoints.latest()
    assert latest is not None and latest.step < total_steps, "killed too late to test a resume"
    assert latest.step % steps_per_epoch != 0 and latest.step > steps_per_epoch

    code = main(settings=stack.settings(split, attempt=1), services=stack.services(split))

    assert code == 0
    events = stack.pull_events(split)
    assert [e.payload.resumed_from_step for e in events if isinstance(e, RestartedEvent)] == [
        latest.step
    ]
    split_completed = completed_of(events)
    assert split_completed.payload.metrics.step == total_steps
    expected = adapter_weights(stack, whole_completed, tmp_path / "whole")
    resumed = adapter_weights(stack, split_completed, tmp_path / "split")
    assert expected.keys() == resumed.keys() and expected
    trained = max(float(tensor.abs().max()) for tensor in expected.values())
    assert trained > 1e-3  # the adapter did train, so a different data order would show
    worst = max(float((expected[name] - resumed[name]).abs().max()) for name in expected)
    assert worst < 1e-5, f"resumed weights differ by {worst:.2e} (weights up to {trained:.3f})"
    assert split_completed.payload.metrics.train_loss == pytest.approx(
        whole_completed.payload.metrics.train_loss, abs=1e-5
    )


def test_a_length_grouped_run_killed_mid_epoch_resumes_to_the_same_weights(
    stack: TrainerStack, tiny_gemma3: Path, tmp_path: Path
) -> None:
    assert_resumed_run_matches_uninterrupted(stack, tiny_gemma3, tmp_path, packing=False)


def test_a_packed_run_killed_mid_epoch_resumes_to_the_same_weights(
    stack: TrainerStack, tiny_gemma3: Path, tmp_path: Path
) -> None:
    assert_resumed_run_matches_uninterrupted(
        stack, tiny_gemma3, tmp_path, packing=True, max_seq_length=64
    )
