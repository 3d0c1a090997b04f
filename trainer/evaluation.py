"""An SFTTrainer whose evaluation reports token-weighted loss and token accuracy.

TRL's fused LM head already scores only the target positions (shifted labels,
no full logits); its built-in `mean_token_accuracy` averages per-batch ratios,
and the Trainer's `eval_loss` averages per-batch means, so both drift with
batch composition. A forward hook sums the fused head's per-token outputs
instead, and the sums replace those figures. Imported lazily: it needs torch.
"""

from __future__ import annotations

from typing import Any

from trl import SFTTrainer

from trainer.metrics import TokenCounts
from trainer.sampling import SeededSampling


class TokenMetricsSFTTrainer(SeededSampling, SFTTrainer):
    """Seeded per epoch, so that a resumed attempt sees the same batches as the uninterrupted
    run (trainer/sampling.py)."""

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        counts = TokenCounts()
        model: Any = self.model
        handle = model.register_forward_hook(_count_into(counts))
        try:
            output = super().evaluation_loop(*args, **kwargs)
        finally:
            handle.remove()
        prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
        metrics = output.metrics
        loss, accuracy = counts.loss, counts.accuracy
        if metrics is not None and loss is not None and accuracy is not None:
            # Per target token over the whole eval set, so that perplexity = exp(eval_loss) is
            # the perplexity of the set and not of an average batch.
            metrics[f"{prefix}_loss"] = loss
            metrics[f"{prefix}_token_accuracy"] = accuracy
            metrics[f"{prefix}_target_tokens"] = counts.tokens
        return output


def _count_into(counts: TokenCounts) -> Any:
    def hook(module: Any, inputs: Any, outputs: Any) -> None:
        mask = getattr(outputs, "label_mask", None)
        if mask is None or getattr(outputs, "is_top1", None) is None:
            return  # not a fused-head forward (e.g. generation): nothing to count
        counts.add(
            tokens=int(mask.sum().item()),
            correct=int(outputs.is_top1.sum().item()),
            negative_log_likelihood=float(-outputs.log_probs.double().sum().item()),
        )

    return hook
