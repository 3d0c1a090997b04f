"""Checkpoints in GCS: upload after each save, find and fetch the latest on a retried attempt.

A checkpoint counts only once its marker object exists, and the marker is
written after every other file, so a task killed mid-upload leaves a
checkpoint that the next attempt ignores. Older complete checkpoints are
deleted once a newer one is complete: resuming needs only the latest.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuning.gcp.storage import GcsStore
from tuning.layout import StorageLayout

logger = logging.getLogger(__name__)

MARKER = "checkpoint-complete.json"
_STEP = re.compile(r"checkpoint-(\d+)/" + re.escape(MARKER) + "$")


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
    ) -> None:
        self.storage = storage
        self.layout = layout
        self.job_id = job_id
        self.ensure_job_active = ensure_job_active

    def complete_steps(self) -> list[int]:
        root = self.layout.checkpoints_prefix(self.job_id)
        steps = []
        for uri in self.storage.list(root):
            match = _STEP.fullmatch(uri[len(root) :])
            if match:
                steps.append(int(match[1]))
        return sorted(steps)

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

    def upload(self, local_dir: Path, step: int) -> str:
        """Upload a saved checkpoint, then its marker, then drop older ones."""
        self.ensure_job_active()
        prefix = self.layout.checkpoint_prefix(self.job_id, step)
        files = self.storage.upload_dir(local_dir, prefix)
        self.storage.upload_json(f"{prefix}{MARKER}", {"step": step, "files": len(files)})
        for older in self.complete_steps():
            if older < step:
                self.storage.delete_prefix(self.layout.checkpoint_prefix(self.job_id, older))
        logger.info("checkpoint at step %d uploaded to %s", step, prefix)
        return prefix
