"""The trainer registry: one recipe per trainer type (and modality) this build can run.

A recipe says how its rows look, how they are read into the job's metrics, and how it trains.
The pipeline is the same for all of them: a new trainer type adds an entry here (with its row
normalizer and its train function) and nothing else changes. The trainers import their
shared types from `trainer.run`, below this registry, never from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trainer.errors import UnsupportedError
from trainer.metrics import (
    DPO_METRICS,
    GRPO_METRICS,
    ORPO_METRICS,
    SFT_METRICS,
    MetricsPlan,
)
from trainer.run import TrainingOutcome, TrainingRun
from tuning.dataset.rows import RowNormalizer
from tuning.dataset.rules import ROW_RULES, row_rules
from tuning.spec import Modality, TrainerType, TrainingConfig


@dataclass(frozen=True)
class Recipe:
    trainer_type: TrainerType
    train: Callable[[TrainingRun], TrainingOutcome]
    metrics: MetricsPlan = SFT_METRICS

    def row_normalizer(self, config: TrainingConfig) -> RowNormalizer:
        """The job's row rules (tuning.dataset.rules, shared with the CLI and dispatch)."""
        return row_rules(config.trainer_type, config.modality, config.reward_config)


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


_TRAIN = {
    TrainerType.SFT: (_train_sft, SFT_METRICS),
    TrainerType.DPO: (_train_dpo, DPO_METRICS),
    TrainerType.ORPO: (_train_orpo, ORPO_METRICS),
    TrainerType.GRPO: (_train_grpo, GRPO_METRICS),
}
# Every pair with row rules is a pair the trainer runs.
RECIPES: dict[tuple[TrainerType, Modality], Recipe] = {
    (kind, modality): Recipe(kind, *_TRAIN[kind]) for kind, modality in ROW_RULES
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
