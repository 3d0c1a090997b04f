"""The base model: fetched from a gs:// snapshot or the Hub, its tokenizer, loaded to train."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from trainer.errors import ModelNotFoundError, UserError
from trainer.hardware import Hardware, compute_dtype_name
from tuning.errors import NotFoundError, TransientError
from tuning.gcp.storage import GcsStore
from tuning.spec import Hyperparameters, Method

logger = logging.getLogger(__name__)

# What a Hub snapshot needs for training and export; skips the original/ and gguf copies some
# repositories carry, which would double the download.
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "*.txt"]
GEMMA3_TYPES = {"gemma3", "gemma3_text"}


def fetch_base_model(
    base_model_id: str, *, storage: GcsStore, directory: Path, token: str | None
) -> Path:
    """A local directory holding the model's config, weights and tokenizer files."""
    if base_model_id.startswith("gs://"):
        # A missing prefix is reported below, like a prefix without a model in it.
        with contextlib.suppress(NotFoundError):
            storage.download_dir(base_model_id, directory)
    else:
        _download_from_hub(base_model_id, directory, token)
    if not (directory / "config.json").is_file():
        raise ModelNotFoundError(f"base model {base_model_id} not found (no config.json there)")
    return directory


def _download_from_hub(repo_id: str, directory: Path, token: str | None) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        snapshot_download(repo_id, local_dir=directory, token=token, allow_patterns=HUB_PATTERNS)
    except GatedRepoError:
        raise UserError(
            f"base model {repo_id} is gated: accept its licence on the Hub with the account "
            "whose hf_token the job uses"
        ) from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"base model {repo_id} not found on the Hub (or the hf_token cannot see it)"
        ) from None
    except LocalEntryNotFoundError as error:
        raise TransientError(f"the Hub is unreachable for {repo_id}") from error
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403):
            raise UserError(f"the hf_token was refused for {repo_id} (HTTP {status})") from None
        raise TransientError(f"downloading {repo_id} failed (HTTP {status})") from error


def model_type(model_dir: Path) -> str:
    config = json.loads((model_dir / "config.json").read_text())
    return str(config.get("model_type", ""))


def load_tokenizer(model_dir: Path) -> Any:
    """The model's tokenizer, with the Gemma chat template when the checkpoint has none."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import gemma3_chat_template, gemma_chat_template

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not tokenizer.chat_template:
        # Pretrained (non -it) checkpoints ship no template; train with the one the -it models use.
        family = model_type(model_dir)
        tokenizer.chat_template = (
            gemma3_chat_template if family in GEMMA3_TYPES else gemma_chat_template
        )
        logger.info("the base model has no chat template; using the Gemma one for %s", family)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_config(model_dir: Path) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir)


def load_model(
    model_dir: Path,
    *,
    method: Method,
    hardware: Hardware,
    attention: str,
    dtype_name: str | None = None,
) -> Any:
    """The base model on the accelerator, 4-bit nf4 with double quantization for QLoRA."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = getattr(torch, dtype_name or compute_dtype_name(hardware))
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attention}
    if hardware.cuda:
        kwargs["device_map"] = {"": 0}
    if method is Method.QLORA:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    model.config.use_cache = False  # training; also keeps packed sequences isolated
    return model


def lora_config(hyperparameters: Hyperparameters) -> Any:
    """LoRA on every linear layer but the LM head, with the job's rank, alpha and dropout."""
    from peft import LoraConfig

    return LoraConfig(
        r=hyperparameters.lora_rank,
        lora_alpha=hyperparameters.lora_alpha,
        lora_dropout=hyperparameters.lora_dropout,
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )


def parameter_count(model: Any) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
