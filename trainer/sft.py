"""Supervised fine-tuning with TRL's SFTTrainer: LoRA, QLoRA or full, on text or image rows.

Loss is on assistant turns (conversations) or completions (prompt/completion
rows), so the model learns to answer and to end its turn, not to echo prompts.
Plain-string prompt/completion rows go through the model's chat template as a user
turn and an assistant turn when the tokenizer has one, so the model learns the format
it is prompted with at inference (`<start_of_turn>` ... `<end_of_turn>`); without a
template (a base model) prompt and completion are joined as they are, ending with EOS.
Vision rows go through the model's processor (images to pixel values, each
image placeholder expanded to the image's soft tokens) batch by batch.
"""

from __future__ import annotations

import logging
from typing import Any

from trainer.metrics import SFT_METRICS
from trainer.run import TrainingOutcome, TrainingRun
from trainer.training import (
    checkpointing_wanted,
    common_arguments,
    tokenizing_arguments,
    train_and_measure,
)
from tuning.dataset.rows import RowFormat

logger = logging.getLogger(__name__)


def sft_config(run: TrainingRun, *, assistant_only_loss: bool, gradient_checkpointing: bool) -> Any:
    """SFTConfig from the job's hyperparameters, the batching plan and the hardware."""
    from trl import SFTConfig

    plan = run.batching
    vision = run.processor is not None
    return SFTConfig(
        **common_arguments(run, gradient_checkpointing=gradient_checkpointing),
        **tokenizing_arguments(run),
        max_length=run.config.hyperparameters.max_seq_length,
        packing=plan.packing,  # never for image rows (the pipeline plans them unpacked)
        packing_strategy="bfd",
        eval_packing=plan.eval_packing,
        # Image rows are tokenized batch by batch, so there are no lengths to group by.
        train_sampling_strategy="group_by_length"
        if plan.group_by_length and not vision
        else "random",
        assistant_only_loss=assistant_only_loss,
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
    trainer = sft_trainer(run)
    logger.info("batching: %s", run.batching.reason)
    return train_and_measure(trainer, run, SFT_METRICS)


def sft_trainer(run: TrainingRun) -> Any:
    """TRL's SFTTrainer for the job, its model prepared and its rows tokenized."""
    from trainer.evaluation import TokenMetricsSFTTrainer
    from trainer.modeling import prepare_model

    model, peft_config = prepare_model(run)
    if run.batching.training_attention is not None:
        use_attention(model, run.batching.training_attention)
    assistant_only = run.splits.row_format in (RowFormat.MESSAGES, RowFormat.VISION_MESSAGES)
    if assistant_only and not assistant_masks_supported(run.tokenizer):
        assistant_only = False
        run.warn(
            "the model's chat template is not one TRL recognises, so it cannot mark the "
            "assistant's turns: the loss covers whole conversations (user turns and template "
            "markup too) instead of assistant turns only, so the model also learns to write "
            "the prompts and train/eval loss are not comparable with assistant-only runs; "
            "use the model's published template (chat_template.jinja) to train on answers only"
        )
    args = sft_config(
        run,
        assistant_only_loss=assistant_only,
        gradient_checkpointing=checkpointing_wanted(run, model),
    )
    trainer = TokenMetricsSFTTrainer(
        model=model,
        args=args,
        train_dataset=_dataset(run.splits.train, run),
        eval_dataset=_dataset(run.splits.eval, run) if run.evaluate and run.splits.eval else None,
        processing_class=run.processing_class,
        peft_config=peft_config,
        callbacks=run.trainer_callbacks,
    )
    return trainer


def use_attention(model: Any, implementation: str) -> None:
    """Train with `implementation` (a document-wise kernel for packed rows: trainer/batching.py)."""
    from trainer.document_attention import register

    register()
    model.set_attn_implementation(implementation)


def _dataset(rows: list[dict[str, Any]], run: TrainingRun) -> Any:
    from datasets import Dataset

    if run.splits.row_format is RowFormat.PROMPT_COMPLETION and has_chat_template(run.tokenizer):
        return Dataset.from_list([as_turns(row) for row in rows])
    if run.splits.row_format is not RowFormat.VISION_MESSAGES:
        return Dataset.from_list(rows)
    from trainer.images import image_dataset

    return image_dataset(rows)


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def as_turns(row: dict[str, Any]) -> dict[str, Any]:
    """A plain-string prompt/completion row as TRL's conversational prompt/completion."""
    return {
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "completion": [{"role": "assistant", "content": row["completion"]}],
    }
