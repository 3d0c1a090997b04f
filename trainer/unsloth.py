"""Provider `unsloth`: Unsloth's loaders and its patches of transformers and TRL, on CUDA only.

Written against unsloth 2026.10.9 (FastLanguageModel / FastVisionModel `from_pretrained` and
`get_peft_model`); it cannot run on this project's CPU machines, so tests/trainer/test_gpu.py
is where it is exercised.

Unsloth is optional (not in the image's pinned requirements) and needs a CUDA GPU. The job is
checked before anything is downloaded: anywhere Unsloth cannot run, provider `unsloth` is a
`user` error that says to use `huggingface`, never a crash mid-run. Where it can, `unsloth` is
imported before transformers and TRL (its patches apply to what is imported after it), the
model comes from FastLanguageModel (FastVisionModel for vision) with LoRA applied by Unsloth,
and the recipes train it with TRL's trainers as usual; the exported adapter is a plain PEFT one.

    # on a GPU machine with `pip install unsloth`:
    pytest -m gpu tests/trainer/test_gpu.py
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import TYPE_CHECKING, Any

from trainer.errors import UserError
from trainer.hardware import Hardware
from tuning.spec import Method, Modality

if TYPE_CHECKING:
    from trainer.run import TrainingRun

logger = logging.getLogger(__name__)

UNAVAILABLE = (
    "provider 'unsloth' needs a CUDA GPU with unsloth installed; use provider 'huggingface'"
)
# LoRA on the attention and MLP projections of every layer: Unsloth's fast paths patch these.
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def unsloth_installed() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def require_unsloth(hardware: Hardware) -> None:
    """Refuse provider 'unsloth' where it cannot run: no CUDA GPU, or no unsloth package."""
    if not hardware.cuda or not unsloth_installed():
        missing = "no CUDA GPU" if not hardware.cuda else "unsloth is not installed"
        raise UserError(f"{UNAVAILABLE} ({missing} here)")


def activate_unsloth() -> None:
    """Import unsloth before transformers, TRL and peft, so that its patches apply to them."""
    late = sorted(name for name in ("transformers", "trl", "peft") if name in sys.modules)
    if late:
        logger.warning("%s imported before unsloth: some of its speed-ups may not apply", late)
    import unsloth  # noqa: F401  (imported for its patches)


def load_unsloth_model(run: TrainingRun) -> Any:
    """The base model from Unsloth's loader, with Unsloth's LoRA (or all weights for Full)."""
    from unsloth import FastLanguageModel, FastVisionModel

    config = run.config
    hp = config.hyperparameters
    vision = config.modality is Modality.VISION
    loader = FastVisionModel if vision else FastLanguageModel
    model, _ = loader.from_pretrained(
        model_name=str(run.model_dir),
        max_seq_length=hp.max_seq_length,
        dtype=None,  # Unsloth picks bf16 where the GPU has it
        load_in_4bit=config.method is Method.QLORA,
        full_finetuning=config.method is Method.FULL,
        use_exact_model_name=True,  # the local snapshot, never one of Unsloth's Hub variants
        local_files_only=True,
    )
    if config.method is Method.FULL:
        return model
    lora = {
        "r": hp.lora_rank,
        "lora_alpha": hp.lora_alpha,
        "lora_dropout": hp.lora_dropout,
        "bias": "none",
        "use_gradient_checkpointing": "unsloth",
        "random_state": hp.seed,
    }
    if vision:
        return FastVisionModel.get_peft_model(
            model,
            finetune_vision_layers=True,
            finetune_language_layers=True,
            finetune_attention_modules=True,
            finetune_mlp_modules=True,
            **lora,
        )
    return FastLanguageModel.get_peft_model(model, target_modules=TARGET_MODULES, **lora)
