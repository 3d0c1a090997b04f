"""Checkpoints in GCS: upload after each save, find and fetch the latest on a retried attempt.

A checkpoint counts only once its marker object exists, and the marker is
written after every other file, so a task killed mid-upload leaves a
checkpoint that the next attempt ignores (tuning/checkpoints.py). Once a newer
one is complete, older ones are deleted except those the job keeps
(`Retention`: the newest `save_total_limit`, and the best by eval loss on
request); resuming needs only the latest.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuning.checkpoints import MARKER, CheckpointMarker, complete_steps, read_marker
from tuning.errors import NotFoundError
from tuning.gcp.storage import GcsStore
from tuning.jobs import utcnow
from tuning.layout import StorageLayout

logger = logging.getLogger(__name__)

# What the Trainer logs with an evaluation that is about the run, not the model.
_EVAL_TIMINGS = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


@dataclass(frozen=True)
class Retention:
    """Which complete checkpoints stay once a newer one is complete."""

    keep_last: int = 1  # the newest this many (the latest is always among them)
    keep_best: bool = False  # also the one with the lowest eval_loss


@dataclass(frozen=True)
class CheckpointSummary:
    """What the checkpoints API shows of a checkpoint, from the Trainer's state at the save."""

    step: int
    epoch: float | None = None
    train_loss: float | None = None
    eval_step: int | None = None
    eval_metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_state(cls, state: Any) -> CheckpointSummary:
        """From a TrainerState: the last training loss logged and the latest evaluation, at
        or before the checkpoint's step."""
        step = int(state.global_step)
        history = [entry for entry in state.log_history if entry.get("step", 0) <= step]
        losses = [entry["loss"] for entry in history if _finite(entry.get("loss"))]
        evaluations = [entry for entry in history if _finite(entry.get("eval_loss"))]
        latest = evaluations[-1] if evaluations else None
        return cls(
            step=step,
            epoch=float(state.epoch) if state.epoch is not None else None,
            train_loss=float(losses[-1]) if losses else None,
            eval_step=int(latest["step"]) if latest else None,
            eval_metrics={
                key: float(value)
                for key, value in (latest or {}).items()
                if key.startswith("eval_") and key not in _EVAL_TIMINGS and _finite(value)
            },
        )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class RemoteCheckpoint:
    step: int
    prefix: str


class CheckpointStore:
    """One job's checkpoints under `checkpoints/{job_id}/`."""

    def __init__(
        self,
        storage: GcsStore,
        layout: StorageLayout,
        job_id: str,
        *,
        ensure_job_active: Callable[[], None],
        retention: Retention | None = None,
    ) -> None:
        self.storage = storage
        self.layout = layout
        self.job_id = job_id
        self.ensure_job_active = ensure_job_active
        self.retention = retention or Retention()

    def complete_steps(self) -> list[int]:
        root = self.layout.checkpoints_prefix(self.job_id)
        return complete_steps(self.storage.list(root), root)

    def latest(self) -> RemoteCheckpoint | None:
        steps = self.complete_steps()
        if not steps:
            return None
        return RemoteCheckpoint(steps[-1], self.layout.checkpoint_prefix(self.job_id, steps[-1]))

    def download(self, checkpoint: RemoteCheckpoint, output_dir: Path) -> Path:
        """Fetch into `output_dir/checkpoint-{step}`, where the Trainer looks for it."""
        target = output_dir / f"checkpoint-{checkpoint.step}"
        self.storage.download_dir(checkpoint.prefix, target)
        (target / MARKER).unlink(missing_ok=True)
        return target

    def download_best(self, resumed: Path, output_dir: Path) -> Path | None:
        """With load_best_model_at_end, the best checkpoint the resumed one's Trainer state
        names (`best_model_checkpoint`), fetched beside it where the Trainer will look for
        it at the end (None: the resumed one is the best, or none is named or kept)."""
        state_file = resumed / "trainer_state.json"
        if not state_file.is_file():
            return None
        best = json.loads(state_file.read_text()).get("best_model_checkpoint")
        match = re.fullmatch(r"checkpoint-(\d+)", Path(best).name) if best else None
        if match is None or Path(best).name == resumed.name:
            return None
        step = int(match[1])
        if step not in self.complete_steps():
            logger.warning("the best checkpoint, step %d, is not kept: the last is exported", step)
            return None
        prefix = self.layout.checkpoint_prefix(self.job_id, step)
        return self.download(RemoteCheckpoint(step, prefix), output_dir)

    def upload(self, local_dir: Path, step: int, summary: CheckpointSummary | None = None) -> str:
        """Upload a saved checkpoint, then its marker, then drop the older ones not kept."""
        self.ensure_job_active()
        summary = summary or CheckpointSummary(step=step)
        prefix = self.layout.checkpoint_prefix(self.job_id, step)
        size = sum(path.stat().st_size for path in local_dir.rglob("*") if path.is_file())
        files = self.storage.upload_dir(local_dir, prefix)
        marker = CheckpointMarker(
            step=step,
            files=len(files),
            epoch=summary.epoch,
            created_at=utcnow(),
            train_loss=summary.train_loss,
            eval_step=summary.eval_step,
            eval_metrics=summary.eval_metrics,
            size_bytes=size,
        )
        self.storage.upload_json(f"{prefix}{MARKER}", marker.model_dump(mode="json"))
        for older in self.unkept(step):
            self.storage.delete_prefix(self.layout.checkpoint_prefix(self.job_id, older))
        logger.info("checkpoint at step %d uploaded to %s", step, prefix)
        return prefix

    def unkept(self, newest: int) -> list[int]:
        """The complete checkpoints older than `newest` that the retention drops."""
        steps = [step for step in self.complete_steps() if step <= newest]
        kept = set(steps[-self.retention.keep_last :])
        if self.retention.keep_best and (best := self.best_step(steps)) is not None:
            kept.add(best)
        return [step for step in steps if step not in kept and step < newest]

    def best_step(self, steps: list[int]) -> int | None:
        """The step with the lowest eval loss among `steps` evaluated at their own step (a
        later checkpoint only repeats an earlier evaluation); the later on a tie."""
        scored = []
        for step in steps:
            try:
                marker = read_marker(self.storage, self.layout, self.job_id, step)
            except NotFoundError:  # deleted meanwhile
                continue
            if marker.eval_loss is not None and marker.eval_step == step:
                scored.append((marker.eval_loss, -step))
        return -min(scored)[1] if scored else None
