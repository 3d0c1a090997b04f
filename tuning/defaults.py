"""Hyperparameter defaults per trainer type and method, with the recipes they come from.

A field the request leaves out (or sets to null) takes the value below for the job's
`trainer_type` and method family (LoRA and QLoRA train an adapter; Full trains every
weight); `tuning.spec.resolve_hyperparameters` applies them, for the API and the trainer
alike. The figures follow TRL 1.16's own config defaults and the Gemma 3 recipes of
Unsloth and Axolotl:

- TRL: SFTConfig lr 2e-5; DPOConfig, ORPOConfig and GRPOConfig lr 1e-6; beta 0.1 for DPO
  and ORPO, 0.0 for GRPO, where 0.0 builds no reference model at all
  (https://huggingface.co/docs/trl/sft_trainer, /dpo_trainer, /orpo_trainer, /grpo_trainer;
  the config sources of the pinned TRL say the same). These are full fine-tuning rates:
  LoRA's best rate is about 10x full fine-tuning's
  (https://huggingface.co/docs/trl/lora_without_regret).
- Unsloth, Gemma 3 (4B) SFT with LoRA: lr 2e-4, linear schedule
  (https://github.com/unslothai/notebooks/blob/main/nb/Gemma3_(4B).ipynb); Gemma 3 (1B)
  GRPO with LoRA: lr 5e-6, cosine, warmup ratio 0.1, weight decay 0.1, one epoch
  (https://github.com/unslothai/notebooks/blob/main/nb/Gemma3_(1B)-GRPO.ipynb); DPO with
  LoRA: lr 5e-6, beta 0.1, linear, warmup ratio 0.1, weight decay 0, 3 epochs
  (https://unsloth.ai/docs/get-started/reinforcement-learning-rl-guide/preference-dpo-orpo-and-kto).
- Axolotl, Gemma 3 1B: QLoRA lr 2e-4 and full fine-tuning lr 5e-5, both with warmup ratio
  0.1 and weight decay 0 (https://github.com/axolotl-ai-cloud/axolotl/blob/main/examples/
  gemma3/gemma-3-1b-qlora.yml and gemma-3-1b-fft-dft.yml).

Fields not listed here (batch size, LoRA rank, sequence lengths...) have one default for
every type: the recipes agree with the seed service's values, or the field has one use.

The table is keyed by the plain values of `TrainerType` and `Method`, so that `tuning.spec`
can build its field descriptions from it without an import circle.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tuning.spec import TrainingConfig, TrainRequest

MethodFamily = Literal["adapter", "full"]

# What every trainer type uses of the defaulted fields, in the order the table shows them.
DEFAULTED_FIELDS = (
    "learning_rate",
    "epochs",
    "lr_scheduler_type",
    "warmup_ratio",
    "weight_decay",
    "beta",
)
FIELDS_USED = {
    "sft": DEFAULTED_FIELDS[:-1],  # SFT has no preference strength or KL term
    "dpo": DEFAULTED_FIELDS,
    "orpo": DEFAULTED_FIELDS,
    "grpo": DEFAULTED_FIELDS,
}

# (trainer_type, method family) -> field -> default. Why each figure, briefly:
# - the learning rates: LoRA per the Unsloth/Axolotl Gemma 3 recipes; Full per TRL's
#   defaults (SFT 2e-5 rather than Axolotl's 5e-5: the 10x LoRA-to-full ratio of 2e-4);
# - warmup 10% everywhere (Axolotl's Gemma 3 recipes, Unsloth's DPO and GRPO);
# - GRPO: cosine, weight decay 0.1 and one epoch (Unsloth's Gemma 3 GRPO; each step
#   generates num_generations completions per prompt, so an epoch costs far more than SFT's);
#   beta 0.0 (TRL): no reference forward per step and, with Full, no second model copy;
# - beta for SFT is never read; it keeps the seed's 0.1 so a resolved SFT job reads as before.
DEFAULTS: dict[tuple[str, MethodFamily], dict[str, Any]] = {
    ("sft", "adapter"): {
        "learning_rate": 2e-4,
        "epochs": 3,
        "lr_scheduler_type": "linear",
        "warmup_ratio": 0.1,
        "weight_decay": 0.0,
        "beta": 0.1,
    },
    ("sft", "full"): {
        "learning_rate": 2e-5,
        "epochs": 3,
        "lr_scheduler_type": "linear",
        "warmup_ratio": 0.1,
        "weight_decay": 0.0,
        "beta": 0.1,
    },
    ("dpo", "adapter"): {
        "learning_rate": 5e-6,
        "epochs": 3,
        "lr_scheduler_type": "linear",
        "warmup_ratio": 0.1,
        "weight_decay": 0.0,
        "beta": 0.1,
    },
    ("dpo", "full"): {
        "learning_rate": 1e-6,
        "epochs": 3,
        "lr_scheduler_type": "linear",
        "warmup_ratio": 0.1,
        "weight_decay": 0.0,
        "beta": 0.1,
    },
    ("orpo", "adapter"): {
        "learning_rate": 5e-6,
        "epochs": 3,
        "lr_scheduler_type": "linear",
        "warmup_ratio": 0.1,
        "weight_decay": 0.0,
        "beta": 0.1,
    },
    ("orpo", "full"): {
        "learning_rate": 1e-6,
        "epochs": 3,
        "lr_scheduler_type": "linear",
        "warmup_ratio": 0.1,
        "weight_decay": 0.0,
        "beta": 0.1,
    },
    ("grpo", "adapter"): {
        "learning_rate": 5e-6,
        "epochs": 1,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.1,
        "weight_decay": 0.1,
        "beta": 0.0,
    },
    ("grpo", "full"): {
        "learning_rate": 1e-6,
        "epochs": 1,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.1,
        "weight_decay": 0.1,
        "beta": 0.0,
    },
}

TRAINER_TYPES = ("sft", "dpo", "orpo", "grpo")
FAMILY_LABELS: dict[MethodFamily, str] = {"adapter": "LoRA / QLoRA", "full": "Full"}


def method_family(method: str) -> MethodFamily:
    """`full` for the `Full` method, `adapter` for LoRA and QLoRA."""
    return "full" if method == "Full" else "adapter"


def default_for(field: str, trainer_type: str, method: str) -> Any:
    """The default of one field for a trainer type and method (their plain values)."""
    return DEFAULTS[(trainer_type, method_family(method))][field]


def defaults_table(field: str) -> str:
    """A Markdown table of one field's defaults: a row per trainer type, a column per family."""
    families: tuple[MethodFamily, ...] = ("adapter", "full")
    header = "| trainer_type | " + " | ".join(FAMILY_LABELS[f] for f in families) + " |"
    rows = [header, "|---|" + "---|" * len(families)]
    for trainer_type in TRAINER_TYPES:
        if field not in FIELDS_USED[trainer_type]:
            cells = ["not used"] * len(families)
        else:
            cells = [_cell(DEFAULTS[(trainer_type, family)][field]) for family in families]
        rows.append(f"| {trainer_type} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _cell(value: Any) -> str:
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def describe_hyperparameters(config: TrainingConfig) -> str:
    """What the job trains with, each defaulted field marked given or default (an event text)."""
    given, used = config.hyperparameters, config.resolved_hyperparameters
    parts = []
    for name in FIELDS_USED[config.trainer_type.value]:
        value = getattr(used, name)
        shown = value.value if isinstance(value, Enum) else f"{value:g}"
        origin = "given" if getattr(given, name) is not None else "default"
        parts.append(f"{name} {shown} ({origin})")
    return (
        f"hyperparameters for {config.trainer_type.value} with {config.method.value}: "
        + ", ".join(parts)
    )


def tracked_training_config(request: TrainRequest) -> dict[str, Any]:
    """The redacted training config with the hyperparameters the job trains with, for W&B."""
    data: dict[str, Any] = request.redacted()["training_config"]
    data["hyperparameters"] = request.training_config.resolved_hyperparameters.model_dump(
        mode="json"
    )
    return data
