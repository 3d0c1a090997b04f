"""What a recipe is given and what it gives back: the types every trainer shares.

A leaf module: the registry (`trainer.recipes`) sits above the trainers (sft, preference,
grpo), and they all import these from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.batching import BatchingPlan
from trainer.data import DatasetSplits
from trainer.distributed import SINGLE, Ranks
from trainer.hardware import Hardware
from tuning.jobs import Metrics
from tuning.spec import TrainingConfig


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
    note: Callable[[str], None] = lambda text: None  # an info message event for the job
    ranks: Ranks = SINGLE  # the training processes (one per GPU) this one is among
    continue_from: Path | None = None  # the earlier job's adapter or weights (from_job)

    @property
    def trainer_callbacks(self) -> list[Any]:
        """The callbacks the library trainer is given: the job's, shared by every rank."""
        from trainer.consensus import job_callbacks

        return job_callbacks(self.callbacks, self.ranks)

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
