"""The trainer registry: one recipe per trainer type (and modality) this build can run.

A recipe says how its rows look and how it trains. SFT on text is the only
one so far; DPO, ORPO, GRPO and vision add an entry here (with their own row
normalizer) and nothing else in the pipeline changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.batching import BatchingPlan
from trainer.data import DatasetSplits, RowNormalizer, normalize_sft_row
from trainer.errors import UnsupportedError
from trainer.hardware import Hardware
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
    callbacks: list[Any] = field(default_factory=list)
    resume_from: Path | None = None
    report_to: list[str] = field(default_factory=list)
    run_name: str | None = None
    warn: Callable[[str], None] = lambda text: None


@dataclass
class TrainingOutcome:
    trainer: Any  # the library trainer, for saving the model
    model: Any
    global_step: int
    metrics: Metrics


@dataclass(frozen=True)
class Recipe:
    trainer_type: TrainerType
    normalize_row: RowNormalizer
    train: Callable[[TrainingRun], TrainingOutcome]


def _train_sft(run: TrainingRun) -> TrainingOutcome:
    from trainer.sft import train_sft

    return train_sft(run)


RECIPES: dict[tuple[TrainerType, Modality], Recipe] = {
    (TrainerType.SFT, Modality.TEXT): Recipe(TrainerType.SFT, normalize_sft_row, _train_sft),
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
