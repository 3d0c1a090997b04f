"""Evaluation metrics math, hardware and batching decisions of the trainer (pure)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from trainer.batching import plan_batching
from trainer.errors import UnsupportedError
from trainer.hardware import (
    EAGER,
    FLASH_ATTENTION,
    SDPA,
    Hardware,
    choose_attention,
    compute_dtype_name,
    wants_gradient_checkpointing,
)
from trainer.metrics import (
    DPO_METRICS,
    GRPO_METRICS,
    SFT_METRICS,
    TokenCounts,
    evaluation_metrics,
    final_metrics,
    method_metrics,
    perplexity,
)
from trainer.recipes import recipe_for
from tuning.dataset.rules import evaluation_enabled
from tuning.spec import TrainingConfig

CPU = Hardware(cuda=False, bf16=False, flash_attention=False)
L4 = Hardware(cuda=True, bf16=True, flash_attention=True, name="NVIDIA L4")
GEMMA2 = SimpleNamespace(attn_logit_softcapping=50.0)
GEMMA3 = SimpleNamespace(attn_logit_softcapping=None)


def test_perplexity_is_exp_of_the_loss() -> None:
    assert perplexity(0.0) == 1.0
    assert perplexity(2.5) == math.exp(2.5)
    assert perplexity(None) is None
    assert perplexity(float("nan")) is None
    assert perplexity(1000.0) is None  # would overflow


def test_token_counts_weigh_every_token_equally() -> None:
    counts = TokenCounts()
    counts.add(tokens=1, correct=1, negative_log_likelihood=0.5)  # a short batch
    counts.add(tokens=3, correct=0, negative_log_likelihood=4.5)

    assert counts.accuracy == 0.25  # not the mean of the batch ratios (0.5)
    assert counts.loss == 5.0 / 4
    assert TokenCounts().accuracy is None and TokenCounts().loss is None


def test_evaluation_metrics_use_the_seed_names() -> None:
    metrics = evaluation_metrics(
        {"eval_loss": 1.0, "eval_token_accuracy": 0.75, "eval_runtime": 2.0}, step=8
    )

    assert (metrics.eval_loss, metrics.accuracy, metrics.eval_runtime, metrics.step) == (
        1.0,
        0.75,
        2.0,
        8,
    )
    assert metrics.perplexity == math.e
    assert evaluation_metrics({"eval_loss": 1.0}, step=1, with_accuracy=False).accuracy is None


@pytest.mark.parametrize(
    ("config", "use_fa2", "hardware", "expected"),
    [
        (GEMMA3, False, CPU, SDPA),
        (GEMMA3, True, CPU, SDPA),  # no GPU, no FlashAttention
        (GEMMA3, True, L4, FLASH_ATTENTION),
        (GEMMA3, False, L4, FLASH_ATTENTION),  # chosen whenever present: a preference
        (GEMMA2, False, L4, FLASH_ATTENTION),
        (
            GEMMA2,
            False,
            Hardware(cuda=True, bf16=True, flash_attention=False),
            EAGER,
        ),  # SDPA cannot softcap
        (GEMMA2, True, L4, FLASH_ATTENTION),  # FA2 softcaps
        (GEMMA2, True, Hardware(cuda=True, bf16=True, flash_attention=False), EAGER),
    ],
)
def test_attention_by_model_and_hardware(
    config: object, use_fa2: bool, hardware: Hardware, expected: str
) -> None:
    assert choose_attention(config, use_fa2=use_fa2, hardware=hardware) == expected


def test_dtype_and_gradient_checkpointing_by_hardware() -> None:
    assert compute_dtype_name(CPU) == "float32"
    assert compute_dtype_name(L4) == "bfloat16"
    assert compute_dtype_name(Hardware(cuda=True, bf16=False, flash_attention=False)) == "float32"
    assert not wants_gradient_checkpointing(CPU, 10**10)
    assert not wants_gradient_checkpointing(L4, 300_000_000)
    assert wants_gradient_checkpointing(L4, 4_000_000_000)


def test_batching_follows_the_available_attention_kernel() -> None:
    unpacked = plan_batching(
        packing=False, batch_size=8, gradient_accumulation_steps=2, attention=SDPA
    )
    varlen = plan_batching(
        packing=True, batch_size=8, gradient_accumulation_steps=2, attention=FLASH_ATTENTION
    )
    padded = plan_batching(
        packing=True, batch_size=8, gradient_accumulation_steps=2, attention=SDPA
    )

    assert (unpacked.packing, unpacked.group_by_length, unpacked.per_device_batch_size) == (
        False,
        True,
        8,
    )
    assert (varlen.packing, varlen.per_device_batch_size, varlen.gradient_accumulation_steps) == (
        True,
        8,
        2,
    )
    # Without a varlen kernel: the same padding-free batches, SDPA run one document at a time.
    assert (padded.packing, padded.per_device_batch_size, padded.gradient_accumulation_steps) == (
        True,
        8,
        2,
    )
    assert (padded.training_attention, padded.eval_packing) == ("document_sdpa", True)
    assert varlen.training_attention is None


def config(**changes: object) -> TrainingConfig:
    return TrainingConfig.model_validate({"base_model_id": "google/gemma-3-1b-it", **changes})


def test_registry_runs_every_trainer_type_and_names_what_it_cannot() -> None:
    vision = {"base_model_id": "google/gemma-3-4b-it", "modality": "vision"}
    grpo = {"trainer_type": "grpo", "reward_config": {"functions": ["format"]}}

    assert recipe_for(config()).trainer_type.value == "sft"
    assert recipe_for(config(**vision)).trainer_type.value == "sft"
    for trainer_type in ("dpo", "orpo"):
        assert recipe_for(config(trainer_type=trainer_type)).trainer_type.value == trainer_type
    assert recipe_for(config(**grpo)).trainer_type.value == "grpo"
    with pytest.raises(UnsupportedError, match=r"'dpo' with modality 'vision'.*sft/vision"):
        recipe_for(config(trainer_type="dpo", **vision))


def test_evaluation_is_on_only_with_a_strategy() -> None:
    assert not evaluation_enabled(config())
    assert not evaluation_enabled(config(eval_config={"eval_strategy": "no"}))
    assert evaluation_enabled(config(eval_config={"eval_strategy": "epoch"}))


def test_method_metrics_are_read_by_key_or_prefix_and_renamed() -> None:
    logs = {
        "loss": 0.5,
        "rewards/margins": 0.25,
        "rewards/format/mean": 1.0,
        "eval_rewards/margins": 0.5,
        "reward": 2.0,
        "kl": float("nan"),
        "learning_rate": 1e-4,
    }

    assert method_metrics(logs, DPO_METRICS.method_keys) == {"rewards_margins": 0.25}
    assert method_metrics(logs, GRPO_METRICS.method_keys) == {
        "rewards_margins": 0.25,
        "rewards_format_mean": 1.0,
        "reward": 2.0,  # kl is NaN: left out rather than reported as a number
    }
    assert method_metrics(logs, DPO_METRICS.method_keys, prefix="eval_") == {
        "eval_rewards_margins": 0.5
    }


def test_a_preference_loss_gets_no_perplexity_or_token_accuracy() -> None:
    logged = {"eval_loss": 0.3, "eval_token_accuracy": 0.9, "eval_runtime": 1.0}

    sft = evaluation_metrics(logged, step=2)
    dpo = evaluation_metrics(logged, step=2, language_model=False)

    assert sft.perplexity == pytest.approx(math.exp(0.3)) and sft.accuracy == 0.9
    assert (dpo.eval_loss, dpo.perplexity, dpo.accuracy) == (0.3, None, None)


def test_final_metrics_join_evaluation_training_totals_and_method_metrics() -> None:
    history = [
        {"loss": 0.7, "rewards/margins": 0.1, "num_tokens": 100, "step": 1},
        {"eval_loss": 0.6, "eval_rewards/margins": 0.2, "eval_runtime": 0.5, "step": 1},
        {"loss": 0.5, "rewards/margins": 0.3, "num_tokens": 300, "step": 2},
        {"train_runtime": 3.0, "train_loss": 0.6, "step": 2},
    ]

    final = final_metrics(
        history, step=2, training_loss=0.6, train_runtime=3.0, plan=DPO_METRICS
    ).model_dump()
    sft = final_metrics(history, step=2, training_loss=0.6, train_runtime=3.0, plan=SFT_METRICS)

    assert final["step"] == 2 and final["eval_loss"] == 0.6 and final["perplexity"] is None
    assert (final["rewards_margins"], final["eval_rewards_margins"]) == (0.3, 0.2)
    assert final["tokens_per_second"] == 100.0 and final["train_loss"] == 0.6
    assert sft.perplexity == pytest.approx(math.exp(0.6))
    assert "rewards_margins" not in sft.model_dump()
