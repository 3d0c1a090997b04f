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
from trainer.metrics import TokenCounts, evaluation_metrics, perplexity
from trainer.recipes import evaluation_enabled, recipe_for
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
        (GEMMA3, False, L4, SDPA),
        (GEMMA2, False, L4, EAGER),  # SDPA cannot softcap
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
    # Without a varlen kernel: one packed row per micro-batch, as many rows per optimizer step.
    assert (padded.packing, padded.per_device_batch_size, padded.gradient_accumulation_steps) == (
        True,
        1,
        16,
    )
    assert not padded.eval_packing


def config(**changes: object) -> TrainingConfig:
    return TrainingConfig.model_validate({"base_model_id": "google/gemma-3-1b-it", **changes})


def test_registry_runs_text_sft_and_names_what_it_cannot() -> None:
    assert recipe_for(config()).trainer_type.value == "sft"
    with pytest.raises(UnsupportedError, match=r"'grpo'.*supported: sft/text"):
        recipe_for(config(trainer_type="grpo", reward_config={"functions": ["format"]}))
    with pytest.raises(UnsupportedError, match="vision"):
        recipe_for(config(base_model_id="google/gemma-3-4b-it", modality="vision"))


def test_evaluation_is_on_only_with_a_strategy() -> None:
    assert not evaluation_enabled(config())
    assert not evaluation_enabled(config(eval_config={"eval_strategy": "no"}))
    assert evaluation_enabled(config(eval_config={"eval_strategy": "epoch"}))
