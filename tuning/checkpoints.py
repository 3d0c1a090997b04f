"""A job's checkpoints in Cloud Storage, as the trainer writes them and the API shows them.

Each checkpoint is a folder `checkpoints/<job_id>/checkpoint-<step>/` holding what the
Trainer saved (weights or adapter, optimizer and scheduler state, RNG states). It counts
only once its marker object exists; the trainer writes the marker after every other file,
so a task killed mid-upload leaves a folder that nothing lists or resumes. The marker says
what the checkpoints API shows: step, epoch, when, the training loss then, the nearest
evaluation at or before it, and the folder's size.

Torch-free: the status function reads markers, the trainer writes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from tuning.errors import NotFoundError
from tuning.layout import StorageLayout

if TYPE_CHECKING:
    from tuning.gcp.storage import GcsStore

MARKER = "checkpoint-complete.json"
_MARKER_PATH = re.compile(r"checkpoint-(\d+)/" + re.escape(MARKER))

# What a checkpoint holds only to resume training, not to use or continue the model: the
# optimizer and scheduler states (`optimizer_0/` for FSDP), the RNG states, the arguments.
TRAINING_STATE_PREFIXES = (
    "optimizer",
    "scheduler",
    "scaler",
    "rng_state",
    "training_args",
    "loss-ledger",
)


class CheckpointMarker(BaseModel):
    """The marker object's content (older markers have only step and files)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    step: int = Field(..., ge=0)
    files: int = Field(0, ge=0)
    epoch: float | None = None
    created_at: AwareDatetime | None = None
    train_loss: float | None = Field(None, description="The last logged training loss.")
    eval_step: int | None = Field(None, ge=0, description="The step of `eval_metrics`.")
    eval_metrics: dict[str, float] = Field(
        default_factory=dict,
        description="The latest evaluation at or before this step, as the trainer logged it.",
    )
    size_bytes: int | None = Field(None, ge=0)

    @property
    def eval_loss(self) -> float | None:
        return self.eval_metrics.get("eval_loss")


def complete_steps(listed: Iterable[str], checkpoints_prefix: str) -> list[int]:
    """The steps of the complete checkpoints among listed URIs under the job's prefix,
    ascending."""
    steps = []
    for uri in listed:
        if not uri.startswith(checkpoints_prefix):
            continue
        match = _MARKER_PATH.fullmatch(uri[len(checkpoints_prefix) :])
        if match:
            steps.append(int(match[1]))
    return sorted(steps)


def marker_uri(layout: StorageLayout, job_id: str, step: int) -> str:
    return f"{layout.checkpoint_prefix(job_id, step)}{MARKER}"


def is_training_state(relative_name: str) -> bool:
    """Whether a file of a checkpoint folder is there only to resume training."""
    first = relative_name.split("/", 1)[0]
    return relative_name == MARKER or first.startswith(TRAINING_STATE_PREFIXES)


def read_marker(
    storage: GcsStore, layout: StorageLayout, job_id: str, step: int
) -> CheckpointMarker:
    """The marker of one complete checkpoint; NotFoundError when it is not (or no longer)
    complete."""
    try:
        data = storage.download_json(marker_uri(layout, job_id, step))
    except NotFoundError:
        raise NotFoundError(
            f"the job has no checkpoint at step {step}", field="checkpoint"
        ) from None
    marker = CheckpointMarker.model_validate(data)
    if marker.step != step:  # a marker is only ever written into its own step's folder
        raise NotFoundError(f"the job has no checkpoint at step {step}", field="checkpoint")
    return marker
