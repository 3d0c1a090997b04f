"""Supervised fine-tuning with TRL's SFTTrainer: LoRA, QLoRA or full, on text rows.

Loss is on assistant turns (conversations) or completions (prompt/completion
rows), so the model learns to answer and to end its turn, not to echo prompts.
"""

from __future__ import annotations

import logging
from typing import Any

from trainer.data import RowFormat
from trainer.errors import OutOfMemoryError
from trainer.hardware import wants_gradient_checkpointing
from trainer.metrics import evaluation_metrics
from trainer.recipes import TrainingOutcome, TrainingRun
from tuning.jobs import Metrics

logger = logging.getLogger(__name__)


def sft_config(run: TrainingRun, *, assistant_only_loss: bool, gradient_checkpointing: bool) -> Any:
    """SFTConfig from the job's hyperparameters, the batching plan and the hardware."""
    from trl import SFTConfig

    hp = run.config.hyperparameters
    eval_config = run.config.eval_config if run.evaluate else None
    plan = run.batching
    return SFTConfig(
        output_dir=str(run.output_dir),
        per_device_train_batch_size=plan.per_device_batch_size,
        per_device_eval_batch_size=hp.batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        num_train_epochs=hp.epochs,
        max_steps=hp.max_steps,
        learning_rate=hp.learning_rate,
        lr_scheduler_type=hp.lr_scheduler_type.value,
        warmup_steps=hp.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=hp.weight_decay,
        seed=hp.seed,
        data_seed=hp.seed,
        logging_strategy="steps",
        logging_steps=hp.logging_steps,
        save_strategy=hp.save_strategy.value,
        save_steps=hp.save_steps,
        save_total_limit=1,  # every checkpoint is in GCS; the local disk is memory on Cloud Run
        eval_strategy=eval_config.eval_strategy.value if eval_config else "no",
        eval_steps=eval_config.eval_steps if eval_config else None,
        bf16=run.hardware.cuda and run.hardware.bf16,
        fp16=False,
        gradient_checkpointing=gradient_checkpointing,
        max_length=hp.max_seq_length,
        packing=plan.packing,
        packing_strategy="bfd",
        eval_packing=plan.eval_packing,
        train_sampling_strategy="group_by_length" if plan.group_by_length else "random",
        assistant_only_loss=assistant_only_loss,
        report_to=run.report_to or "none",
        run_name=run.run_name,
        disable_tqdm=True,
        use_cpu=not run.hardware.cuda,
    )


def assistant_masks_supported(tokenizer: Any) -> bool:
    """Whether TRL has (or can derive) a template that marks the assistant's tokens."""
    from trl.chat_template_utils import get_training_chat_template

    try:
        get_training_chat_template(tokenizer)
    except ValueError:
        return False
    return True


def train_sft(run: TrainingRun) -> TrainingOutcome:
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback

    from trainer.evaluation import TokenMetricsSFTTrainer
    from trainer.modeling import load_model, lora_config, parameter_count

    config = run.config
    model = load_model(
        run.model_dir, method=config.method, hardware=run.hardware, attention=run.attention
    )
    assistant_only = run.splits.row_format is RowFormat.MESSAGES
    if assistant_only and not assistant_masks_supported(run.tokenizer):
        assistant_only = False
        run.warn(
            "the model's chat template cannot mark assistant turns; training on whole "
            "conversations instead of assistant turns only"
        )
    args = sft_config(
        run,
        assistant_only_loss=assistant_only,
        gradient_checkpointing=wants_gradient_checkpointing(run.hardware, parameter_count(model)),
    )
    trainer = TokenMetricsSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(run.splits.train),
        eval_dataset=Dataset.from_list(run.splits.eval)
        if run.evaluate and run.splits.eval
        else None,
        processing_class=run.tokenizer,
        peft_config=lora_config(config.hyperparameters) if config.method.uses_adapter else None,
        callbacks=run.callbacks,
    )
    # With tqdm off the Trainer prints every log dict to stdout; progress goes out as events.
    trainer.remove_callback(PrinterCallback)
    logger.info("batching: %s", run.batching.reason)
    try:
        result = trainer.train(
            resume_from_checkpoint=str(run.resume_from) if run.resume_from else None
        )
        if run.evaluate and _last_evaluated_step(trainer) != trainer.state.global_step:
            trainer.evaluate()  # the job's final metrics describe the final weights
    except torch.OutOfMemoryError:
        raise OutOfMemoryError(
            "the accelerator ran out of memory: lower batch_size or max_seq_length, or use QLoRA"
        ) from None
    return TrainingOutcome(
        trainer=trainer,
        model=trainer.model,
        global_step=trainer.state.global_step,
        metrics=_final_metrics(trainer, result, with_accuracy=_accuracy_wanted(run)),
    )


def _accuracy_wanted(run: TrainingRun) -> bool:
    return run.config.eval_config is None or run.config.eval_config.compute_eval_metrics


def _last_evaluated_step(trainer: Any) -> int | None:
    steps = [entry["step"] for entry in trainer.state.log_history if "eval_loss" in entry]
    return steps[-1] if steps else None


def _final_metrics(trainer: Any, result: Any, *, with_accuracy: bool) -> Metrics:
    history = trainer.state.log_history
    evaluations = [entry for entry in history if "eval_loss" in entry]
    base = (
        evaluation_metrics(
            evaluations[-1], step=evaluations[-1]["step"], with_accuracy=with_accuracy
        )
        if evaluations
        else Metrics(step=trainer.state.global_step)
    )
    runtime = result.metrics.get("train_runtime")
    # TRL's `num_tokens` counts the non-padding tokens this process trained on.
    tokens = next((e["num_tokens"] for e in reversed(history) if "num_tokens" in e), None)
    return base.model_copy(
        update={
            "train_loss": result.training_loss,
            "train_runtime": runtime,
            "tokens_per_second": tokens / runtime if tokens and runtime else None,
            "step": trainer.state.global_step,
        }
    )
