"""The trainer registry: one recipe per trainer type (and modality) this build can run.

A recipe says how its rows look, how they are read into the job's metrics, and how it trains.
The pipeline is the same for all of them: a new trainer type adds an entry here (with its row
normalizer and its train function) and nothing else changes. The trainers import their
shared types from `trainer.run`, below this registry, never from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trainer.data import RowNormalizer, normalize_sft_row
from trainer.errors import UnsupportedError
from trainer.formats import normalize_preference_row, normalize_vision_row, prompt_row_normalizer
from trainer.metrics import (
    DPO_METRICS,
    GRPO_METRICS,
    ORPO_METRICS,
    SFT_METRICS,
    MetricsPlan,
)
from trainer.run import TrainingOutcome, TrainingRun
from tuning.spec import Modality, TrainerType, TrainingConfig


@dataclass(frozen=True)
class Recipe:
    trainer_type: TrainerType
    normalize_row: RowNormalizer  # the row rules that need no job settings (also for the CLI)
    train: Callable[[TrainingRun], TrainingOutcome]
    metrics: MetricsPlan = SFT_METRICS
    # Row rules that depend on the job's config (GRPO: the rewards' reference column).
    configure_rows: Callable[[TrainingConfig], RowNormalizer] | None = None

    def row_normalizer(self, config: TrainingConfig) -> RowNormalizer:
        return self.configure_rows(config) if self.configure_rows else self.normalize_row


def _train_sft(run: TrainingRun) -> TrainingOutcome:
    from trainer.sft import train_sft

    return train_sft(run)


def _train_dpo(run: TrainingRun) -> TrainingOutcome:
    from trainer.preference import train_dpo

    return train_dpo(run)


def _train_orpo(run: TrainingRun) -> TrainingOutcome:
    from trainer.preference import train_orpo

    return train_orpo(run)


def _train_grpo(run: TrainingRun) -> TrainingOutcome:
    from trainer.grpo import train_grpo

    return train_grpo(run)


def _grpo_rows(config: TrainingConfig) -> RowNormalizer:
    return prompt_row_normalizer(config.reward_config)


RECIPES: dict[tuple[TrainerType, Modality], Recipe] = {
    (TrainerType.SFT, Modality.TEXT): Recipe(TrainerType.SFT, normalize_sft_row, _train_sft),
    (TrainerType.SFT, Modality.VISION): Recipe(TrainerType.SFT, normalize_vision_row, _train_sft),
    (TrainerType.DPO, Modality.TEXT): Recipe(
        TrainerType.DPO, normalize_preference_row, _train_dpo, DPO_METRICS
    ),
    (TrainerType.ORPO, Modality.TEXT): Recipe(
        TrainerType.ORPO, normalize_preference_row, _train_orpo, ORPO_METRICS
    ),
    (TrainerType.GRPO, Modality.TEXT): Recipe(
        TrainerType.GRPO,
        prompt_row_normalizer(None),
        _train_grpo,
        GRPO_METRICS,
        configure_rows=_grpo_rows,
    ),
}


def recipe_for(config: TrainingConfig) -> Recipe:
    """The recipe for the job, or UnsupportedError naming what this build can run."""
    recipe = RECIPES.get((config.trainer_type, config.modality))
    if recipe is None:
        supported = ", ".join(f"{t.value}/{m.value}" for t, m in RECIPES)
        raise UnsupportedError(
            f"trainer_type '{config.trainer_type.value}' with modality '{config.modality.value}' "
            f"is not supported by this trainer build yet (supported: {supported})"
        )
    return recipe


def evaluation_enabled(config: TrainingConfig) -> bool:
    """Evaluation is on when the job configures it with a strategy other than 'no'."""
    eval_config = config.eval_config
    return eval_config is not None and eval_config.eval_strategy.value != "no"
