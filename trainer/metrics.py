"""Evaluation metrics, defined once: token-weighted loss, perplexity, token accuracy.

The seed computed perplexity as 2**loss and compared logits with unshifted
labels. Here every figure is over the target tokens of the whole eval set:
position t predicts token t+1, and positions whose label is -100 (prompt,
padding, packed-sequence boundaries) are left out. The counts are summed batch
by batch, so no full-vocabulary logits are ever kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tuning.jobs import Metrics

# exp() of anything above this overflows a float: report no perplexity rather than inf.
_MAX_LOG_PERPLEXITY = 700.0


def perplexity(loss: float | None) -> float | None:
    """exp(mean negative log-likelihood per token)."""
    if loss is None or not math.isfinite(loss) or loss > _MAX_LOG_PERPLEXITY:
        return None
    return math.exp(loss)


@dataclass
class TokenCounts:
    """Running sums over the eval set's target tokens."""

    tokens: int = 0
    correct: int = 0
    negative_log_likelihood: float = 0.0

    def add(self, *, tokens: int, correct: int, negative_log_likelihood: float) -> None:
        self.tokens += tokens
        self.correct += correct
        self.negative_log_likelihood += negative_log_likelihood

    @property
    def loss(self) -> float | None:
        return self.negative_log_likelihood / self.tokens if self.tokens else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.tokens if self.tokens else None


def evaluation_metrics(
    trainer_metrics: dict[str, float],
    *,
    step: int,
    with_accuracy: bool = True,
    prefix: str = "eval",
    language_model: bool = True,
) -> Metrics:
    """The job's Metrics from what the Trainer reported for one evaluation.

    `language_model` is False where eval_loss is not a per-token NLL (DPO, ORPO, GRPO losses):
    then exp(loss) is no perplexity, and the token accuracy TRL reports is left out too.
    """
    loss = trainer_metrics.get(f"{prefix}_loss")
    accuracy = (
        trainer_metrics.get(f"{prefix}_token_accuracy")
        if with_accuracy and language_model
        else None
    )
    return Metrics(
        eval_loss=loss,
        perplexity=perplexity(loss) if language_model else None,
        accuracy=accuracy,
        eval_runtime=trainer_metrics.get(f"{prefix}_runtime"),
        step=step,
    )


# Method metrics ------------------------------------------------------------------------------
# What DPO, ORPO and GRPO log beside the loss, reported as extra Metrics fields. A key ending in
# "/" stands for every logged key below it (GRPO logs one reward mean per reward function).

PREFERENCE_KEYS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)
ORPO_KEYS = (*PREFERENCE_KEYS, "log_odds_ratio", "log_odds_chosen", "nll_loss")
GRPO_KEYS = (
    "reward",
    "reward_std",
    "rewards/",
    "frac_reward_zero_std",
    "kl",
    "completions/mean_length",
    "completions/clipped_ratio",
)


@dataclass(frozen=True)
class MetricsPlan:
    """How to read one trainer type's logs into the job's Metrics."""

    language_model: bool = True  # eval_loss is a per-token NLL: perplexity and accuracy apply
    method_keys: tuple[str, ...] = ()  # TRL log keys reported as method metrics


SFT_METRICS = MetricsPlan()
DPO_METRICS = MetricsPlan(language_model=False, method_keys=PREFERENCE_KEYS)
ORPO_METRICS = MetricsPlan(language_model=False, method_keys=ORPO_KEYS)
GRPO_METRICS = MetricsPlan(language_model=False, method_keys=GRPO_KEYS)


def metric_name(key: str) -> str:
    """A TRL log key as a Metrics field name: `rewards/margins` -> `rewards_margins`."""
    return key.replace("/", "_")


def method_metrics(
    logs: dict[str, Any], keys: tuple[str, ...], *, prefix: str = ""
) -> dict[str, float]:
    """The method metrics in one log dict; `prefix` is "eval_" for evaluation logs."""
    found = {}
    for logged, value in logs.items():
        if not logged.startswith(prefix) or not _is_number(value):
            continue
        key = logged[len(prefix) :]
        if any(
            key == wanted or (wanted.endswith("/") and key.startswith(wanted)) for wanted in keys
        ):
            found[metric_name(logged)] = float(value)
    return found


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def final_metrics(
    history: list[dict[str, Any]],
    *,
    step: int,
    training_loss: float | None,
    train_runtime: float | None,
    plan: MetricsPlan,
    with_accuracy: bool = True,
) -> Metrics:
    """The job's final Metrics: the last evaluation, training totals and the method metrics."""
    evaluations = [entry for entry in history if "eval_loss" in entry]
    base = (
        evaluation_metrics(
            evaluations[-1],
            step=evaluations[-1].get("step", step),
            with_accuracy=with_accuracy,
            language_model=plan.language_model,
        )
        if evaluations
        else Metrics(step=step)
    )
    extras: dict[str, float] = {}
    if plan.method_keys:
        training = [entry for entry in history if "loss" in entry]
        if training:
            extras |= method_metrics(training[-1], plan.method_keys)
        if evaluations:
            extras |= method_metrics(evaluations[-1], plan.method_keys, prefix="eval_")
    # TRL's `num_tokens` counts the non-padding tokens this process trained on.
    tokens = next((e["num_tokens"] for e in reversed(history) if "num_tokens" in e), None)
    return Metrics(
        **{
            **base.model_dump(exclude_none=True),
            **extras,
            "train_loss": training_loss,
            "train_runtime": train_runtime,
            "tokens_per_second": tokens / train_runtime if tokens and train_runtime else None,
            "step": step,
        }
    )
