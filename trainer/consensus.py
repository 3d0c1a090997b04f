"""Rank 0's training callbacks, their decisions taken by every rank at the same step.

With FSDP every rank must save a checkpoint together (each writes its shard), stop at the
same step, and leave the loop when rank 0's job ends (a handoff, the job cancelled, an
upload that failed): a rank that went on alone would wait forever in the next collective
call. The job's callbacks (events, checkpoint uploads, the job watch, the handoff clock) run
on rank 0 only; after each of their events rank 0 sends every rank the Trainer's control
flags and whether it raised, and every rank acts on that. One small broadcast per step and
per log, next to FSDP's gathers of the whole model every step.

Imported lazily (it needs transformers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback

from trainer.distributed import Ranks, barrier, broadcast

# The TrainerControl flags a callback may set (transformers.trainer_callback.TrainerControl).
FLAGS = (
    "should_training_stop",
    "should_epoch_stop",
    "should_save",
    "should_evaluate",
    "should_log",
)


class MainRankStopped(Exception):  # noqa: N818 - how a follower learns that the job ended
    """Rank 0 ended training (its callbacks raised); a follower stops with it."""


class SharedDecisions(TrainerCallback):
    """The job's callbacks on rank 0, and what they decided on every rank.

    On rank 0 `callbacks` are the job's callbacks, called in order as the Trainer would call
    them; on the followers it is empty. Put it where the job's callbacks would go.
    """

    def __init__(self, callbacks: Sequence[Any], ranks: Ranks) -> None:
        self.callbacks = list(callbacks) if ranks.is_main else []
        self.ranks = ranks

    def _decide(self, event: str, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if event == "on_save" and self.ranks.distributed:
            barrier()  # every rank's shard is on the disk before rank 0 uploads the folder
        error: BaseException | None = None
        if self.ranks.is_main:
            try:
                for callback in self.callbacks:
                    result = getattr(callback, event)(args, state, control, **kwargs)
                    control = result if result is not None else control
            except BaseException as raised:  # shared first, then raised here too
                error = raised
        if self.ranks.distributed:
            decision = None
            if self.ranks.is_main:
                stopped = f"{type(error).__name__}: {error}" if error is not None else None
                decision = ({flag: getattr(control, flag) for flag in FLAGS}, stopped)
            flags, stopped = broadcast(decision)
            if not self.ranks.is_main:
                for flag, value in flags.items():
                    setattr(control, flag, value)
                if stopped is not None:
                    raise MainRankStopped(stopped)
        if error is not None:
            raise error
        return control

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        return self._decide("on_train_begin", args, state, control, **kwargs)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        return self._decide("on_step_end", args, state, control, **kwargs)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        return self._decide("on_save", args, state, control, **kwargs)

    def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        return self._decide("on_log", args, state, control, **kwargs)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        return self._decide("on_evaluate", args, state, control, **kwargs)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        return self._decide("on_train_end", args, state, control, **kwargs)


def job_callbacks(callbacks: Sequence[Any], ranks: Ranks) -> list[Any]:
    """What the Trainer is given: the job's callbacks as they are on one process, else
    wrapped so that every rank shares rank 0's decisions."""
    if not ranks.distributed:
        return list(callbacks)
    return [SharedDecisions(callbacks, ranks)]


def find_callback(trainer: Any, kind: type) -> Any:
    """The Trainer's callback of type `kind`, also inside SharedDecisions (None: none)."""
    for callback in trainer.callback_handler.callbacks:
        inner = callback.callbacks if isinstance(callback, SharedDecisions) else [callback]
        for candidate in inner:
            if isinstance(candidate, kind):
                return candidate
    return None
