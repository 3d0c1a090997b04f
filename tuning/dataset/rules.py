"""Which row rules a job's rows must follow: one normalizer per (trainer type, modality).

The trainer's recipes (trainer/recipes.py), the CLI and the validation before any GPU all ask
here, so a pair the trainer runs is a pair whose rows can be checked without it.
"""

from __future__ import annotations

from tuning.dataset.formats import (
    normalize_preference_row,
    normalize_vision_row,
    prompt_row_normalizer,
)
from tuning.dataset.rows import RowNormalizer, normalize_sft_row
from tuning.spec import Modality, RewardConfig, TrainerType, TrainingConfig

# The row rules that need no job settings; GRPO's depend on its rewards (reference column).
ROW_RULES: dict[tuple[TrainerType, Modality], RowNormalizer] = {
    (TrainerType.SFT, Modality.TEXT): normalize_sft_row,
    (TrainerType.SFT, Modality.VISION): normalize_vision_row,
    (TrainerType.DPO, Modality.TEXT): normalize_preference_row,
    (TrainerType.ORPO, Modality.TEXT): normalize_preference_row,
    (TrainerType.GRPO, Modality.TEXT): prompt_row_normalizer(None),
}


class UnsupportedPairError(ValueError):
    """No trainer runs this trainer type with this modality."""


def supported_pairs() -> str:
    return ", ".join(f"{kind.value}/{modality.value}" for kind, modality in ROW_RULES)


def row_rules(
    trainer_type: TrainerType, modality: Modality, reward_config: RewardConfig | None = None
) -> RowNormalizer:
    """The normalizer a job's rows go through; `UnsupportedPairError` names the pairs that exist."""
    if (trainer_type, modality) not in ROW_RULES:
        raise UnsupportedPairError(
            f"trainer_type '{trainer_type.value}' with modality '{modality.value}' is not a job "
            f"the trainer runs (supported: {supported_pairs()})"
        )
    if trainer_type is TrainerType.GRPO:
        return prompt_row_normalizer(reward_config)
    return ROW_RULES[(trainer_type, modality)]


def evaluation_enabled(config: TrainingConfig) -> bool:
    """Evaluation is on when the job configures it with a strategy other than 'no' (then the
    eval split is read and checked, or rows are held out of the train split)."""
    eval_config = config.eval_config
    return eval_config is not None and eval_config.eval_strategy.value != "no"
