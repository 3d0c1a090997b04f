"""The per-type defaults reach TRL: GRPO's beta 0.0 builds no reference model, and a job says
which values it trains with."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.harness import TrainerStack, to_jsonl
from tests.trainer.test_grpo import grpo_request, run, sum_rows
from trainer.batching import plan_batching
from trainer.data import DatasetSplits
from trainer.grpo import grpo_config
from trainer.hardware import Hardware
from trainer.preference import dpo_config, orpo_config
from trainer.run import TrainingRun
from tuning.dataset.rows import RowFormat
from tuning.events import CompletedEvent, MessageEvent
from tuning.rewards import reward_functions
from tuning.spec import EVAL_BATCH_CAP, RewardFunction, TrainingConfig, parse_train_request

SMALL = {
    "max_steps": 1,
    "batch_size": 2,
    "gradient_accumulation_steps": 2,
    "num_generations": 2,
    "max_completion_length": 4,
    "max_prompt_length": 24,
    "max_seq_length": 64,
    "save_strategy": "no",
}


def config_of(trainer_type: str, method: str, **values: Any) -> TrainingConfig:
    config: dict[str, Any] = {
        "base_model_id": "google/gemma-3-1b-it",
        "trainer_type": trainer_type,
        "method": method,
        "hyperparameters": {**SMALL, **values},
    }
    if trainer_type == "grpo":
        config["reward_config"] = {"functions": ["format"]}
    data = {"processed_dataset_id": "ds1", "training_config": config}
    return parse_train_request(data).training_config


def run_of(config: TrainingConfig, model_dir: Path, tmp_path: Path, tokenizer: Any = None) -> Any:
    return TrainingRun(
        config=config,
        splits=DatasetSplits(
            train=[],
            eval=None,
            row_format=RowFormat.PROMPT_ONLY,
            train_source="t",
            eval_source=None,
        ),
        model_dir=model_dir,
        output_dir=tmp_path / "output",
        tokenizer=tokenizer,
        hardware=Hardware(cuda=False, bf16=False, flash_attention=False),
        attention="sdpa",
        batching=plan_batching(
            packing=False, batch_size=2, gradient_accumulation_steps=2, attention="sdpa"
        ),
        evaluate=False,
    )


def with_rows(run: Any, rows: list[dict[str, Any]], row_format: RowFormat) -> Any:
    """`run` training on `rows` alone."""
    splits = DatasetSplits(
        train=rows, eval=None, row_format=row_format, train_source="t", eval_source=None
    )
    return dataclasses.replace(run, splits=splits)


def grpo_trainer(config: TrainingConfig, model_dir: Path, tmp_path: Path) -> Any:
    """TRL's GRPOTrainer as the recipe builds it for a Full job (no adapter)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    run = run_of(config, model_dir, tmp_path, tokenizer)
    rows = [{"prompt": row["prompt"]} for row in sum_rows(4)]
    return GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        reward_funcs=reward_functions([RewardFunction.FORMAT]),
        args=grpo_config(run, gradient_checkpointing=False),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def test_grpo_full_with_beta_omitted_builds_no_reference_model(
    tiny_gemma3: Path, tmp_path: Path
) -> None:
    trainer = grpo_trainer(config_of("grpo", "Full"), tiny_gemma3, tmp_path)

    assert trainer.beta == 0.0
    assert trainer.ref_model is None  # no second copy of the weights, no reference forward


def test_grpo_full_with_beta_given_keeps_its_reference_model(
    tiny_gemma3: Path, tmp_path: Path
) -> None:
    trainer = grpo_trainer(config_of("grpo", "Full", beta=0.1), tiny_gemma3, tmp_path)

    assert trainer.beta == 0.1
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model


def test_preference_configs_carry_the_defaults_of_type_and_method(tmp_path: Path) -> None:
    dpo = dpo_config(
        run_of(config_of("dpo", "LoRA"), tmp_path, tmp_path), gradient_checkpointing=False
    )
    orpo = orpo_config(
        run_of(config_of("orpo", "Full", beta=0.3), tmp_path, tmp_path),
        gradient_checkpointing=False,
    )

    assert (dpo.learning_rate, dpo.beta, dpo.lr_scheduler_type.value) == (5e-6, 0.1, "linear")
    assert dpo.warmup_steps == 0.1
    assert (orpo.learning_rate, orpo.beta) == (1e-6, 0.3)


@pytest.mark.parametrize("trainer_type", ["sft", "dpo", "orpo", "grpo"])
def test_full_fine_tuning_defaults_are_trl_s_own(trainer_type: str, tmp_path: Path) -> None:
    # The Full column cites TRL's config defaults: this fails when an upgrade of TRL moves them.
    from trl import DPOConfig, GRPOConfig, SFTConfig
    from trl.experimental.orpo import ORPOConfig

    library = {"sft": SFTConfig, "dpo": DPOConfig, "orpo": ORPOConfig, "grpo": GRPOConfig}
    trl_defaults = library[trainer_type](output_dir=str(tmp_path), use_cpu=True)

    ours = config_of(trainer_type, "Full").resolved_hyperparameters

    assert ours.learning_rate == trl_defaults.learning_rate
    assert trl_defaults.per_device_eval_batch_size == EVAL_BATCH_CAP  # the cap of ours
    if trainer_type != "sft":
        assert ours.beta == trl_defaults.beta


def test_a_job_says_which_hyperparameters_it_trains_with(
    stack: TrainerStack, tiny_gemma3: Path
) -> None:
    stack.upload_dataset("sums", {"train.jsonl": to_jsonl(sum_rows(4))})
    request = grpo_request(stack, stack.upload_model(tiny_gemma3, "tiny"))
    request["training_config"]["method"] = "Full"
    request["training_config"]["hyperparameters"].update(max_steps=1, learning_rate=3e-6)

    code, events = run(stack, request)

    assert code == 0 and isinstance(events[-1], CompletedEvent), events[-1]
    texts = [e.payload.text for e in events if isinstance(e, MessageEvent)]
    (used,) = [text for text in texts if text.startswith("hyperparameters for grpo with Full")]
    assert "learning_rate 3e-06 (given)" in used and "beta 0 (default)" in used
