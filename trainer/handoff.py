"""A job longer than one task: checkpoint on a clock, stop before the task deadline, and
hand the job to a new execution.

Cloud Run gives a GPU task at most an hour (12 in preview) and may stop it for maintenance
("Tasks that use GPUs are not live migrated ... A task configured with a multi-hour timeout
should be expected to be interrupted at least once",
https://cloud.google.com/run/docs/configuring/task-timeout). So training:

- checkpoints at least every `TRAINER_CHECKPOINT_INTERVAL_SECONDS` of wall clock, so an
  interruption loses at most that much work;
- stops when the time left before the task deadline (`TRAINER_TASK_TIMEOUT_SECONDS`, told
  by the launcher, counted from the trainer's start) falls below what the last checkpoint
  and its upload need, checkpoints, and raises `Handoff` (reason `deadline`);
- on SIGTERM (a stop: maintenance or a cancel; SIGKILL follows 10 s later,
  https://cloud.google.com/run/docs/container-contract#lifecycle) checkpoints when the
  measured checkpoint time fits in that grace, else stops at once, and raises `Handoff`
  (reason `interrupted`) so that the job goes on from its latest complete checkpoint.

- when its owner pauses the job (`POST /jobs/{id}/pause` marks the record, which the trainer
  reads every `TRAINER_JOB_CHECK_SECONDS`: `PauseRequest`), checkpoints and raises `Handoff`
  (reason `paused`): the job then waits, paused, for its owner to resume it.

The trainer then publishes a `handoff` event and exits 0: the execution succeeded, Cloud
Run's retries stay for failures, and dispatch continues the job in a new execution. An
attempt that made no progress since it resumed does not hand off (that would loop); it
fails like any attempt and is retried by Cloud Run. Outside the training loop (download,
export) a SIGTERM raises `Interrupted` where the trainer is, as the default handler would.

The decisions after each step are `trainer.callbacks.HandoffCallback`'s (that module needs
transformers; this one must not, since the entry point imports it).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tuning.jobs import AttemptEnding

logger = logging.getLogger(__name__)


class Handoff(Exception):  # noqa: N818 - not an error: how an attempt ends on purpose
    """Training stopped on purpose; the job continues from its latest checkpoint."""

    def __init__(self, reason: AttemptEnding, *, step: int, checkpointed: bool) -> None:
        super().__init__(f"{reason.value} at step {step}")
        self.reason = reason
        self.step = step
        self.checkpointed = checkpointed  # this attempt saved at `step` just before


class Interrupted(Exception):  # noqa: N818 - a signal, raised where the trainer was
    """SIGTERM arrived outside the training loop."""


@dataclass
class TaskClock:
    """The task attempt's deadline, from the timeout the launcher told the trainer."""

    timeout_seconds: float | None
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started = self.started or self.clock()

    def remaining(self) -> float | None:
        if self.timeout_seconds is None:
            return None
        return self.timeout_seconds - (self.clock() - self.started)


class PauseRequest:
    """The job's owner asked to pause it: seen by the job watch, acted on after the step."""

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        if not self.requested:
            logger.info("the job's owner asked to pause it: checkpointing to stop")
        self.requested = True


class StopSignal:
    """SIGTERM as a request to stop: noted while training, raised anywhere else."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.requested_at: float | None = None
        self.training = False

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignal]:
        """Handle SIGTERM in this process meanwhile (only the main thread may set handlers)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGTERM, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.requested_at is None:
            self.requested_at = self.clock()
        logger.warning("SIGTERM received %s", "while training" if self.training else "")
        if not self.training:
            raise Interrupted("SIGTERM: the task is being stopped")
