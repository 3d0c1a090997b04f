"""What every recipe shares: its TRL config's common arguments, the run itself, the outcome.

TRL's configs default to gradient checkpointing and bf16 on; here both follow the hardware,
so every recipe builds its config from `common_arguments` and adds its own fields.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from trainer.distributed import fsdp_arguments
from trainer.errors import OutOfMemoryError
from trainer.hardware import wants_gradient_checkpointing
from trainer.metrics import MetricsPlan, final_metrics
from trainer.run import TrainingOutcome, TrainingRun

logger = logging.getLogger(__name__)


def common_arguments(run: TrainingRun, *, gradient_checkpointing: bool) -> dict[str, Any]:
    """TrainingArguments fields from the job's hyperparameters, batching plan and hardware."""
    hp = run.config.resolved_hyperparameters  # omitted fields take their per-type defaults
    eval_config = run.config.eval_config if run.evaluate else None
    plan = run.batching
    arguments = {
        "output_dir": str(run.output_dir),
        "per_device_train_batch_size": plan.per_device_batch_size,
        "per_device_eval_batch_size": hp.eval_batch_size,
        "gradient_accumulation_steps": plan.gradient_accumulation_steps,
        "num_train_epochs": hp.epochs,
        "max_steps": hp.max_steps,
        "learning_rate": hp.learning_rate,
        "lr_scheduler_type": hp.lr_scheduler_type.value,
        "warmup_steps": hp.warmup_ratio,  # a float below 1 is a ratio of the total steps
        "weight_decay": hp.weight_decay,
        "seed": hp.seed,
        "data_seed": hp.seed,
        "logging_strategy": "steps",
        "logging_steps": hp.logging_steps,
        "save_strategy": hp.save_strategy.value,
        "save_steps": hp.save_steps,
        # Every checkpoint is in GCS; the local disk is memory on Cloud Run.
        "save_total_limit": 1,
        # The Trainer keeps the best checkpoint beside the latest, and loads it at the end.
        **(BEST_BY_EVAL_LOSS if hp.load_best_model_at_end else {}),
        "eval_strategy": eval_config.eval_strategy.value if eval_config else "no",
        "eval_steps": eval_config.eval_steps if eval_config else None,
        "bf16": run.hardware.cuda and run.hardware.bf16,
        "fp16": False,
        "gradient_checkpointing": gradient_checkpointing,
        "report_to": run.report_to or "none",
        "run_name": run.run_name,
        "disable_tqdm": True,
        "use_cpu": not run.hardware.cuda,
    }
    return arguments | fsdp_arguments(run.ranks, gradient_checkpointing=gradient_checkpointing)


BEST_BY_EVAL_LOSS = {
    "load_best_model_at_end": True,
    "metric_for_best_model": "eval_loss",
    "greater_is_better": False,
}

# Below this many rows per process, starting a worker (a fork that pickles the tokenizer) costs
# more than the rows it tokenizes.
ROWS_PER_TOKENIZING_PROCESS = 5_000


def tokenizing_processes(rows: int, cpus: int | None = None) -> int | None:
    """How many processes TRL tokenizes a dataset with (`dataset_num_proc`; None: this one).

    Tokenizing is CPU-bound Python; a GPU task has several cores idle while it runs, and a
    large dataset would otherwise keep the GPU waiting for one of them.
    """
    available = cpus if cpus is not None else len(os.sched_getaffinity(0))
    processes = min(available, rows // ROWS_PER_TOKENIZING_PROCESS)
    return processes if processes > 1 else None


def tokenizing_arguments(run: TrainingRun) -> dict[str, Any]:
    """The config fields of trainers that tokenize their datasets up front (SFT, DPO, ORPO)."""
    return {"dataset_num_proc": tokenizing_processes(len(run.splits.train))}


def checkpointing_wanted(run: TrainingRun, model: Any) -> bool:
    from trainer.modeling import parameter_count

    return wants_gradient_checkpointing(run.hardware, parameter_count(model))


def train_and_measure(
    trainer: Any, run: TrainingRun, plan: MetricsPlan, *, final_evaluation: bool = True
) -> TrainingOutcome:
    """Train (resuming when a checkpoint was fetched), evaluate the final weights, report."""
    import torch
    from transformers import PrinterCallback

    # With tqdm off the Trainer prints every log dict to stdout; progress goes out as events.
    trainer.remove_callback(PrinterCallback)
    ledger = _loss_ledger(trainer)
    if ledger is not None:
        ledger.attach(trainer)
    try:
        result = trainer.train(
            resume_from_checkpoint=str(run.resume_from) if run.resume_from else None
        )
        last_evaluated = _last_evaluated_step(trainer)
        if final_evaluation and run.evaluate and last_evaluated != trainer.state.global_step:
            trainer.evaluate()  # the job's final metrics describe the final weights
    except torch.OutOfMemoryError:
        raise OutOfMemoryError(
            "the accelerator ran out of memory: lower batch_size or max_seq_length, or use QLoRA"
        ) from None
    eval_config = run.config.eval_config
    training_loss = result.training_loss
    if ledger is not None:
        training_loss = ledger.whole_run_loss(
            training_loss,
            steps_this_run=trainer.state.global_step - getattr(trainer, "_initial_global_step", 0),
            global_step=trainer.state.global_step,
        )
    return TrainingOutcome(
        trainer=trainer,
        model=trainer.model,
        global_step=trainer.state.global_step,
        metrics=final_metrics(
            trainer.state.log_history,
            step=trainer.state.global_step,
            training_loss=training_loss,
            train_runtime=result.metrics.get("train_runtime"),
            plan=plan,
            with_accuracy=eval_config is None or eval_config.compute_eval_metrics,
        ),
    )


def _loss_ledger(trainer: Any) -> Any:
    from trainer.callbacks import LossLedgerCallback
    from trainer.consensus import find_callback

    return find_callback(trainer, LossLedgerCallback)


def _last_evaluated_step(trainer: Any) -> int | None:
    steps = [entry["step"] for entry in trainer.state.log_history if "eval_loss" in entry]
    return steps[-1] if steps else None


def truncate_prompt(ids: list[int], max_length: int, bos_token_id: int | None) -> list[int]:
    """The last `max_length` tokens of a prompt (its question), keeping a leading BOS token."""
    if len(ids) <= max_length:
        return list(ids)
    if bos_token_id is not None and ids and ids[0] == bos_token_id and max_length > 1:
        return [ids[0], *ids[len(ids) - max_length + 1 :]]
    return list(ids[len(ids) - max_length :])
