"""Training samplers whose order is a pure function of the job's seed and the epoch.

transformers builds its `RandomSampler` and `LengthGroupedSampler` without a generator, so
an epoch's order comes from the global torch RNG at the moment the epoch starts. A resumed
attempt (a Cloud Run retry, or a new execution after a handoff) restarts mid-epoch in a
fresh process: its global RNG is not where the uninterrupted run's was, the batches it
skips to are not the ones that run would have drawn, and some rows are seen twice in the
epoch and others never. Here each epoch draws from its own generator seeded with
(seed, epoch), and the Trainer tells the sampler the epoch (`set_epoch`, which it calls
before every epoch, the resumed one included), so an attempt resumed at step N trains on
exactly the batches the uninterrupted run trained on after step N.

Imported lazily (it needs torch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    generator = torch.Generator()
    # One stream per (seed, epoch); the multiplier keeps seed s epoch e+1 from being seed s+1.
    generator.manual_seed(seed * 1_000_003 + epoch)
    return generator


class SeededRandomSampler(Sampler[int]):
    """A permutation of the dataset per epoch."""

    def __init__(self, size: int, *, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.size, generator=epoch_generator(self.seed, self.epoch))
        return iter(order.tolist())


class SeededLengthGroupedSampler(Sampler[int]):
    """transformers' length grouping (mega-batches of similar lengths, longest first), with
    its random part drawn from the epoch's generator."""

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = epoch_generator(self.seed, self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def seeded_train_sampler(trainer: Any, dataset: Any) -> Sampler[int] | None:
    """The seeded counterpart of what `Trainer._get_train_sampler` would build, or None
    to keep the Trainer's own (a strategy with no random part, or a dataset without length)."""
    args = trainer.args
    if dataset is None or not hasattr(dataset, "__len__"):
        return None
    strategy = args.train_sampling_strategy
    if strategy == "random":
        return SeededRandomSampler(len(dataset), seed=args.data_seed or args.seed)
    if strategy == "group_by_length":
        lengths = _lengths(dataset, args.length_column_name, trainer.processing_class)
        # The rows of one optimizer step over all processes, so that the groups (and the
        # order) are those of one process training the same batch alone.
        batch = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        return SeededLengthGroupedSampler(lengths, batch, seed=args.data_seed or args.seed)
    return None


def _lengths(dataset: Any, column: str, processing_class: Any) -> list[int]:
    names = getattr(dataset, "column_names", None) or []
    if column in names:
        return [int(length) for length in dataset[column]]
    key = "input_ids"
    if processing_class is not None and getattr(processing_class, "model_input_names", None):
        key = processing_class.model_input_names[0]
    if key in names:
        return [len(ids) for ids in dataset[key]]
    return [len(row[key]) for row in dataset]


class SeededSampling:
    """Mixin for a TRL trainer whose train sampler is transformers' default (DPO, ORPO):
    the seeded, epoch-aware counterpart replaces it."""

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        trainer: Any = self
        dataset = train_dataset if train_dataset is not None else trainer.train_dataset
        return seeded_train_sampler(trainer, dataset) or super()._get_train_sampler(  # type: ignore[misc]
            train_dataset
        )


def seeded_repeat_sampler(trainer: Any, dataset: Any) -> Sampler[int]:
    """GRPO's `RepeatSampler` (each prompt repeated for its group of completions), with its
    permutation drawn from the epoch's generator. TRL's seeds one generator when it is built
    and draws every epoch from it in turn, so a process resumed in epoch 2 would replay
    epoch 1's order."""
    from trl.trainer.utils import RepeatSampler

    class EpochSeededRepeatSampler(RepeatSampler):
        epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = int(epoch)

        def __iter__(self) -> Iterator[int]:
            if self.shuffle:
                self.generator = epoch_generator(self.seed or 0, self.epoch)
            return super().__iter__()

    args = trainer.args
    return EpochSeededRepeatSampler(
        data_source=dataset,
        mini_repeat_count=trainer.num_generations,
        batch_size=args.generation_batch_size // trainer.num_generations,
        repeat_count=trainer.num_iterations * args.steps_per_generation,
        shuffle=trainer.shuffle_dataset,
        seed=args.data_seed or args.seed,
    )
