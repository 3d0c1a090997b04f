"""GRPO with TRL's GRPOTrainer and the built-in rewards of `tuning.rewards`, without vLLM.

Each prompt gets `num_generations` completions of at most `max_completion_length` tokens,
sampled by the policy itself (transformers' generate on the training GPU: no vLLM server or
colocated engine, which a one-GPU Cloud Run task cannot spare memory for). The rewards are
weighted by `reward_config.weights` and summed; `beta` is the KL coefficient against the base
model (the adapter switched off under LoRA). Prompts longer than `max_prompt_length` tokens
keep their end. A generation batch is batch_size x gradient_accumulation_steps completions,
which the config rules make a multiple of num_generations.
"""

from __future__ import annotations

from typing import Any

from trainer.metrics import GRPO_METRICS
from trainer.run import TrainingOutcome, TrainingRun
from trainer.training import (
    checkpointing_wanted,
    common_arguments,
    train_and_measure,
    truncate_prompt,
)
from tuning.rewards import reward_functions


def grpo_config(run: TrainingRun, *, gradient_checkpointing: bool) -> Any:
    from trl import GRPOConfig

    hp = run.config.resolved_hyperparameters  # beta 0.0 unless given: TRL builds no ref model
    rewards = run.config.reward_config
    arguments = common_arguments(run, gradient_checkpointing=gradient_checkpointing)
    # Evaluation generates whole groups too: one group per eval batch.
    arguments["per_device_eval_batch_size"] = hp.num_generations
    return GRPOConfig(
        **arguments,
        num_generations=hp.num_generations,
        max_completion_length=hp.max_completion_length,
        beta=hp.beta,
        reward_weights=list(rewards.weights) if rewards and rewards.weights else None,
        use_vllm=False,
        remove_unused_columns=False,  # the rewards read the `reference` column
        log_completions=False,
    )


def train_grpo(run: TrainingRun) -> TrainingOutcome:
    return train_and_measure(grpo_trainer(run), run, GRPO_METRICS)


def grpo_trainer(run: TrainingRun) -> Any:
    """TRL's GRPOTrainer for the job, with its rewards and its model prepared."""
    from datasets import Dataset
    from trl import GRPOTrainer

    from trainer.modeling import prepare_model

    rewards = run.config.reward_config
    if rewards is None:  # the config contract requires it; this keeps the types honest
        raise ValueError("grpo needs reward_config")
    max_prompt_length = run.config.hyperparameters.max_prompt_length
    bos_token_id = run.tokenizer.bos_token_id

    class PromptLimitedGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose tokenized prompts are cut to max_prompt_length, with prompts
        drawn in an order seeded per epoch (a resumed attempt sees the uninterrupted run's)."""

        def _get_train_sampler(self, dataset: Any = None) -> Any:
            from trainer.sampling import seeded_repeat_sampler

            return seeded_repeat_sampler(
                self, dataset if dataset is not None else self.train_dataset
            )

        def _tokenize_prompts(self, prompts: list[Any]) -> Any:
            prompt_ids, images, multimodal = super()._tokenize_prompts(prompts)
            cut = [
                truncate_prompt(list(ids), max_prompt_length, bos_token_id) for ids in prompt_ids
            ]
            return cut, images, multimodal

    model, peft_config = prepare_model(run)
    rewarding: list[Any] = reward_functions(rewards.functions)
    return PromptLimitedGRPOTrainer(
        model=model,
        reward_funcs=rewarding,
        args=grpo_config(run, gradient_checkpointing=checkpointing_wanted(run, model)),
        train_dataset=Dataset.from_list(run.splits.train),
        eval_dataset=Dataset.from_list(run.splits.eval)
        if run.evaluate and run.splits.eval
        else None,
        processing_class=run.tokenizer,
        peft_config=peft_config,
        callbacks=run.trainer_callbacks,
    )
