"""Room on the task's own disk for what the job writes there, checked before training.

On Cloud Run a task's disk is its memory (the base model no longer is: it is read through
the models volume, trainer/base_model.py), and the trainer writes two things there before
they reach Cloud Storage: the latest checkpoint (kept until the next replaces it) and the
export (the adapter, or the merged 16-bit model, and the GGUF files converted from it). A
job whose export cannot fit would train for hours and then fail; it fails here instead, in
seconds, before any GPU time is spent.

The figures are upper bounds from the parameter count: 16-bit weights are 2 bytes per
parameter; a Full checkpoint holds float32 weights and AdamW's two float32 moments (12
bytes per parameter); the GGUF conversion writes a 16-bit file (2 bytes) and each
quantization at most 1 byte per parameter (q8_0). An adapter and its checkpoints are a
small share of the model and are not counted.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from trainer.modeling import ensure_room
from tuning.estimates import ModelShape
from tuning.spec import ExportFormat, SaveStrategy, TrainingConfig

logger = logging.getLogger(__name__)

SIXTEEN_BIT = 2
FULL_CHECKPOINT = 4 + 8  # float32 weights, AdamW's exp_avg and exp_avg_sq
QUANTIZED_AT_MOST = 1


def local_output_bytes(config: TrainingConfig, parameters: int) -> int:
    """What the job writes to its own disk at most at once: the last checkpoint beside the
    export."""
    export = config.export_config
    merged = not config.method.uses_adapter or export.format is ExportFormat.MERGED
    written = parameters * SIXTEEN_BIT if merged or export.include_gguf else 0
    if export.include_gguf:
        quantizations = export.gguf_quantization or []
        count = len(quantizations) if isinstance(quantizations, list) else 1
        written += parameters * (SIXTEEN_BIT + QUANTIZED_AT_MOST * max(count, 1))
    saves = config.hyperparameters.save_strategy is not SaveStrategy.NO
    if saves and not config.method.uses_adapter:
        written += parameters * FULL_CHECKPOINT
    return written


def ensure_room_for_outputs(
    config: TrainingConfig,
    model_dir: Path,
    work_dir: Path,
    *,
    free_bytes: Callable[[Path], int] = lambda path: shutil.disk_usage(path).free,
) -> None:
    """InsufficientSpaceError when the job's checkpoint and export cannot fit in work_dir."""
    try:
        shape = ModelShape.from_config(json.loads((model_dir / "config.json").read_text()))
    except (OSError, ValueError) as error:  # the model's own checks report a broken config
        logger.warning("no size check of the outputs: %s", error)
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    needed = local_output_bytes(config, shape.parameters)
    ensure_room(needed, work_dir, "the job's checkpoint and export", free_bytes(work_dir))
