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
) -> Metrics:
    """The job's Metrics from what the Trainer reported for one evaluation."""
    loss = trainer_metrics.get(f"{prefix}_loss")
    accuracy = trainer_metrics.get(f"{prefix}_token_accuracy") if with_accuracy else None
    return Metrics(
        eval_loss=loss,
        perplexity=perplexity(loss),
        accuracy=accuracy,
        eval_runtime=trainer_metrics.get(f"{prefix}_runtime"),
        step=step,
    )
