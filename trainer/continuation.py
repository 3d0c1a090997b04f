"""A job that continues an earlier one (`training_config.from_job`): the weights it starts from.

Submit checked the parent (tuning/lineage.py) and recorded which folder to start from: the
parent's exported adapter or Full weights, or one of its checkpoints. The trainer fetches the
model's files of that folder only (not a checkpoint's optimizer, scheduler or RNG state: the
continued job is a new run, with its own optimizer and schedule), and the model is built
from them: a LoRA or QLoRA adapter is loaded trainable onto the base model and trained on
(its own rank, alpha and target modules), Full weights are loaded in place of the base
model's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trainer.errors import UserError
from tuning.checkpoints import is_training_state
from tuning.gcp.storage import GcsStore, local_target
from tuning.jobs import Lineage

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


def fetch_parent_weights(storage: GcsStore, lineage: Lineage, directory: Path) -> Path:
    """Download the model files of the folder `lineage` names into `directory`."""
    prefix = lineage.weights
    names = [uri[len(prefix) :] for uri in storage.list(prefix)]
    names = [name for name in names if name and not name.endswith("/")]
    wanted = [name for name in names if not is_training_state(name)]
    if not wanted:
        raise UserError(
            f"training_config.from_job: the weights of job {lineage.parent_job_id} "
            f"({prefix}) are gone: its checkpoint was replaced or the job was deleted"
        )
    directory.mkdir(parents=True, exist_ok=True)
    for name in wanted:
        target = local_target(directory, name)
        if target is None:  # a name that would land outside the folder: never ours
            logger.warning("skipping %s%s: not a safe file name", prefix, name)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(storage.download_bytes(f"{prefix}{name}"))
    logger.info("continuing from %s (%d files)", prefix, len(wanted))
    return directory


def continue_adapter(model: Any, directory: Path, *, quantized: bool) -> Any:
    """The base model with the parent's adapter on it, trainable."""
    from peft import PeftModel, prepare_model_for_kbit_training

    if not (directory / ADAPTER_CONFIG).is_file():
        raise UserError(
            f"training_config.from_job: {directory.name} holds no LoRA adapter "
            f"({ADAPTER_CONFIG} missing)"
        )
    if quantized:
        # What TRL does before it applies a new adapter to 4-bit weights.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model.enable_input_require_grads()  # gradient checkpointing through a frozen base
    return PeftModel.from_pretrained(model, str(directory), is_trainable=True)
