"""DPO, ORPO and GRPO draw each epoch's order from a generator seeded with (seed, epoch), as
SFT does: a process resumed in a later epoch (a retry, or the next execution after a handoff)
gets the order the uninterrupted run had there, whatever the global RNG says (issue 15.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.trainer.test_grpo import sum_rows
from tests.trainer.test_preference import preference_rows
from trainer.batching import plan_batching
from trainer.data import DatasetSplits
from trainer.grpo import grpo_trainer
from trainer.hardware import Hardware
from trainer.preference import dpo_trainer, orpo_trainer
from trainer.run import TrainingRun
from tuning.dataset.rows import RowFormat
from tuning.spec import parse_train_request

ROWS = 12


def run_for(trainer_type: str, model_dir: Path, tmp_path: Path) -> TrainingRun:
    from transformers import AutoTokenizer

    hyperparameters = {"batch_size": 2, "gradient_accumulation_steps": 2, "epochs": 3}
    config: dict[str, Any] = {
        "base_model_id": "google/gemma-3-1b-it",
        "trainer_type": trainer_type,
        "method": "LoRA",
        "hyperparameters": hyperparameters | {"num_generations": 2, "max_prompt_length": 64},
    }
    if trainer_type == "grpo":
        config["reward_config"] = {"functions": ["format"]}
        rows = [
            {"prompt": row["prompt"], "reference": str(row["answer"])} for row in sum_rows(ROWS)
        ]
        row_format = RowFormat.PROMPT_ONLY
    else:
        rows = preference_rows(ROWS, conversational=False)
        row_format = RowFormat.PREFERENCE
    request = parse_train_request({"processed_dataset_id": "ds", "training_config": config})
    return TrainingRun(
        config=request.training_config,
        splits=DatasetSplits(
            train=rows, eval=None, row_format=row_format, train_source="t", eval_source=None
        ),
        model_dir=model_dir,
        output_dir=tmp_path / "output",
        tokenizer=AutoTokenizer.from_pretrained(model_dir),
        hardware=Hardware(cuda=False, bf16=False, flash_attention=False),
        attention="sdpa",
        batching=plan_batching(
            packing=False, batch_size=2, gradient_accumulation_steps=2, attention="sdpa"
        ),
        evaluate=False,
    )


BUILDERS = {"dpo": dpo_trainer, "orpo": orpo_trainer, "grpo": grpo_trainer}


def epoch_order(trainer: Any, epoch: int) -> list[int]:
    sampler = trainer._get_train_sampler()
    sampler.set_epoch(epoch)  # what the Trainer does before every epoch, the resumed one too
    return list(sampler)


@pytest.mark.parametrize("trainer_type", sorted(BUILDERS))
def test_an_epoch_s_order_depends_on_seed_and_epoch_only(
    trainer_type: str, tiny_gemma3: Path, tmp_path: Path
) -> None:
    import torch

    trainer = BUILDERS[trainer_type](run_for(trainer_type, tiny_gemma3, tmp_path))
    # The uninterrupted run: one sampler, epochs in turn.
    sampler = trainer._get_train_sampler()
    uninterrupted = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        uninterrupted.append(list(sampler))

    # A resumed process: a fresh sampler, straight into epoch 2, its global RNG elsewhere.
    torch.manual_seed(12345)
    resumed = epoch_order(trainer, 2)

    assert resumed == uninterrupted[2]
    assert uninterrupted[0] != uninterrupted[1] != uninterrupted[2]  # still shuffled per epoch
    assert sorted(set(uninterrupted[1])) == list(range(ROWS))  # every row, every epoch
