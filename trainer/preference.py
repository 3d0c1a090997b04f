"""Preference tuning: DPO (TRL's DPOTrainer) and ORPO (TRL's ORPOTrainer, in trl.experimental).

Both read `prompt`/`chosen`/`rejected` rows (strings or messages), with the job's `beta`,
`max_seq_length` (TRL's `max_length`: prompt plus answer) and `max_prompt_length`. TRL 1.x
dropped `max_prompt_length`, so the trainers here cut each tokenized prompt to it, keeping its
end (the question nearest the answer) and its BOS token, before `max_length` cuts the answer.
With LoRA the reference model of DPO is the base model (the adapter switched off); with Full it
is a second copy. Reward metrics (rewards/chosen, rejected, margins, accuracies; for ORPO also
the log-odds ratio and the NLL of the chosen answers) are reported as metrics events.
"""

from __future__ import annotations

import copy
import sys
import warnings
from typing import Any

from trainer.metrics import DPO_METRICS, ORPO_METRICS
from trainer.run import TrainingOutcome, TrainingRun
from trainer.training import (
    checkpointing_wanted,
    common_arguments,
    tokenizing_arguments,
    train_and_measure,
    truncate_prompt,
)


def dpo_config(run: TrainingRun, *, gradient_checkpointing: bool) -> Any:
    from trl import DPOConfig

    hp = run.config.resolved_hyperparameters
    return DPOConfig(
        **common_arguments(run, gradient_checkpointing=gradient_checkpointing),
        **tokenizing_arguments(run),
        beta=hp.beta,
        max_length=hp.max_seq_length,
        truncation_mode="keep_start",
    )


def train_dpo(run: TrainingRun) -> TrainingOutcome:
    return train_and_measure(dpo_trainer(run), run, DPO_METRICS)


def dpo_trainer(run: TrainingRun) -> Any:
    """TRL's DPOTrainer for the job, its model prepared (adapter or full)."""
    from datasets import Dataset
    from trl import DPOTrainer

    from trainer.modeling import prepare_model
    from trainer.sampling import SeededSampling

    max_prompt_length = run.config.hyperparameters.max_prompt_length
    bos_token_id = run.tokenizer.bos_token_id

    class PromptLimitedDPOTrainer(SeededSampling, DPOTrainer):
        """DPOTrainer whose tokenized prompts are cut to max_prompt_length, with batches
        seeded per epoch (a resumed attempt sees the uninterrupted run's)."""

        def _prepare_dataset(
            self, dataset: Any, processing_class: Any, args: Any, name: str
        ) -> Any:
            # Without max_length here TRL keeps rows whose prompt alone fills it: they fit once cut.
            uncut = copy.copy(args)
            uncut.max_length = None
            dataset = super()._prepare_dataset(dataset, processing_class, uncut, name)
            return dataset.map(
                lambda row: {
                    "prompt_ids": truncate_prompt(
                        row["prompt_ids"], max_prompt_length, bos_token_id
                    )
                }
            )

    model, peft_config = prepare_model(run)
    return PromptLimitedDPOTrainer(
        model=model,
        args=dpo_config(run, gradient_checkpointing=checkpointing_wanted(run, model)),
        train_dataset=Dataset.from_list(run.splits.train),
        eval_dataset=_eval_dataset(run),
        processing_class=run.tokenizer,
        peft_config=peft_config,
        callbacks=run.trainer_callbacks,
    )


def orpo_config(run: TrainingRun, *, gradient_checkpointing: bool) -> Any:
    with warnings.catch_warnings():  # "trl.experimental APIs may change": the pin guards that
        warnings.simplefilter("ignore")
        from trl.experimental.orpo import ORPOConfig

    hp = run.config.resolved_hyperparameters
    return ORPOConfig(
        **common_arguments(run, gradient_checkpointing=gradient_checkpointing),
        **tokenizing_arguments(run),
        beta=hp.beta,
        max_length=hp.max_seq_length,
        remove_unused_columns=False,  # ORPO's collator reads its own tokenized columns
    )


def train_orpo(run: TrainingRun) -> TrainingOutcome:
    return train_and_measure(orpo_trainer(run), run, ORPO_METRICS)


def orpo_trainer(run: TrainingRun) -> Any:
    """TRL's ORPOTrainer for the job, its model prepared (adapter or full)."""
    from datasets import Dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trl.experimental.orpo import ORPOTrainer

    from trainer.modeling import prepare_model
    from trainer.sampling import SeededSampling

    max_prompt_length = run.config.hyperparameters.max_prompt_length
    bos_token_id = run.tokenizer.bos_token_id

    class PromptLimitedORPOTrainer(SeededSampling, ORPOTrainer):
        """ORPOTrainer whose tokenized prompts are cut to max_prompt_length before answers,
        with batches seeded per epoch (a resumed attempt sees the uninterrupted run's)."""

        def tokenize_row(self, feature: Any, model: Any = None) -> dict[str, Any]:
            limit, self.max_length = self.max_length, sys.maxsize
            try:
                row = super().tokenize_row(feature, model)
            finally:
                self.max_length = limit
            return fit_orpo_row(
                row,
                max_prompt_length=max_prompt_length,
                max_length=limit,
                bos_token_id=bos_token_id,
            )

    model, peft_config = prepare_model(run)
    return PromptLimitedORPOTrainer(
        model=model,
        args=orpo_config(run, gradient_checkpointing=checkpointing_wanted(run, model)),
        train_dataset=Dataset.from_list(run.splits.train),
        eval_dataset=_eval_dataset(run),
        processing_class=run.tokenizer,
        peft_config=peft_config,
        callbacks=run.trainer_callbacks,
    )


def fit_orpo_row(
    row: dict[str, Any], *, max_prompt_length: int, max_length: int, bos_token_id: int | None
) -> dict[str, Any]:
    """Cut an ORPO-tokenized row: each prompt to max_prompt_length, then answers to max_length.

    ORPO's `{chosen,rejected}_{input_ids,attention_mask,labels}` hold prompt plus answer, the
    prompt's labels being -100; `prompt_{input_ids,attention_mask}` hold the prompt alone.
    """
    fitted = dict(row)
    prompt = truncate_prompt(list(row["prompt_input_ids"]), max_prompt_length, bos_token_id)
    fitted["prompt_input_ids"] = prompt
    fitted["prompt_attention_mask"] = [1] * len(prompt)
    for answer in ("chosen", "rejected"):
        ids, labels = list(row[f"{answer}_input_ids"]), list(row[f"{answer}_labels"])
        prompt_length = next((i for i, label in enumerate(labels) if label != -100), len(labels))
        kept_prompt = truncate_prompt(ids[:prompt_length], max_prompt_length, bos_token_id)
        kept_answer = ids[prompt_length:][: max(0, max_length - len(kept_prompt))]
        fitted[f"{answer}_input_ids"] = kept_prompt + kept_answer
        fitted[f"{answer}_attention_mask"] = [1] * (len(kept_prompt) + len(kept_answer))
        fitted[f"{answer}_labels"] = [-100] * len(kept_prompt) + kept_answer
    return fitted


def _eval_dataset(run: TrainingRun) -> Any:
    from datasets import Dataset

    return Dataset.from_list(run.splits.eval) if run.evaluate and run.splits.eval else None
