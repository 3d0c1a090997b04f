"""The trainer registry: one recipe per trainer type (and modality) this build can run.

A recipe says how its rows look, how they are read into the job's metrics, and how it trains.
The pipeline is the same for all of them: a new trainer type adds an entry here (with its row
normalizer and its train function) and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.batching import BatchingPlan
from trainer.data import DatasetSplits, RowNormalizer, normalize_sft_row
from trainer.errors import UnsupportedError
from trainer.formats import normalize_preference_row, normalize_vision_row, prompt_row_normalizer
from trainer.hardware import Hardware
from trainer.metrics import (
    DPO_METRICS,
    GRPO_METRICS,
    ORPO_METRICS,
    SFT_METRICS,
    MetricsPlan,
)
from tuning.jobs import Metrics
from tuning.spec import Modality, TrainerType, TrainingConfig


@dataclass
class TrainingRun:
    """Everything a recipe needs; the pipeline builds it after validation and downloads."""

    config: TrainingConfig
    splits: DatasetSplits
    model_dir: Path
    output_dir: Path
    tokenizer: Any
    hardware: Hardware
    attention: str
    batching: BatchingPlan
    evaluate: bool
    processor: Any = None  # a vision model's processor (its tokenizer is `tokenizer`)
    callbacks: list[Any] = field(default_factory=list)
    resume_from: Path | None = None
    report_to: list[str] = field(default_factory=list)
    run_name: str | None = None
    warn: Callable[[str], None] = lambda text: None

    @property
    def processing_class(self) -> Any:
        """What TRL tokenizes with: the processor of a vision model, else the tokenizer."""
        return self.processor if self.processor is not None else self.tokenizer


@dataclass
class TrainingOutcome:
    trainer: Any  # the library trainer, for saving the model
    model: Any
    global_step: int
    metrics: Metrics


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
