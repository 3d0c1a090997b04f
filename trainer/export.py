"""Export: the adapter (or full weights), a 16-bit merged model, and the Hub.

The merge never touches 4-bit weights: the trained model is freed, the base is
reloaded in 16 bits and the saved adapter is merged into it, one code path for
LoRA and QLoRA. Every uploaded directory has complete tokenizer files and a
generation config that stops at <end_of_turn>. Each upload first checks the job
is still wanted, so a cancelled or deleted job gets no files.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from trainer.errors import UnsupportedError, UserError
from trainer.hardware import Hardware
from trainer.tokenizer_files import complete_tokenizer_files, stop_on_end_of_turn
from tuning.errors import TransientError
from tuning.gcp.storage import GcsStore
from tuning.jobs import Artifacts
from tuning.layout import StorageLayout
from tuning.spec import Destination, ExportConfig, ExportFormat, Method

logger = logging.getLogger(__name__)
HUB_URL = "https://huggingface.co/"


class HubUploader(Protocol):
    """Publishes a local model directory to a Hugging Face repository; returns its URL."""

    def upload(self, folder: Path, *, repo_id: str, token: str, commit_message: str) -> str: ...


class HuggingFaceHubUploader:
    """The real uploader: a private repo (created when missing), then one commit of the folder."""

    def __init__(self, api_factory: Callable[..., Any] | None = None) -> None:
        self.api_factory = api_factory

    def upload(self, folder: Path, *, repo_id: str, token: str, commit_message: str) -> str:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError

        api = (self.api_factory or HfApi)(token=token)
        try:
            api.create_repo(repo_id=repo_id, repo_type="model", private=True, exist_ok=True)
            api.upload_folder(
                folder_path=str(folder),
                repo_id=repo_id,
                repo_type="model",
                commit_message=commit_message,
            )
        except HfHubHTTPError as error:
            status = getattr(getattr(error, "response", None), "status_code", None)
            if status in (401, 403):
                raise UserError(
                    f"the hf_token may not write to {repo_id} (HTTP {status})"
                ) from None
            raise TransientError(f"uploading to {repo_id} failed (HTTP {status})") from error
        except OSError as error:  # connection failures
            raise TransientError(f"the Hub is unreachable for {repo_id}") from error
        return f"{HUB_URL}{repo_id}"


@dataclass
class ExportJob:
    job_id: str
    export_config: ExportConfig
    method: Method
    base_model_dir: Path
    work_dir: Path
    hardware: Hardware
    attention: str
    hf_token: str | None


def export_model(
    job: ExportJob,
    *,
    trainer: Any,
    tokenizer: Any,
    storage: GcsStore,
    layout: StorageLayout,
    ensure_job_active: Callable[[], None],
    hub: HubUploader | None,
) -> Artifacts:
    """Save, merge and upload what the job asked for; returns where it went."""
    adapter_dir = job.work_dir / "adapter"
    _save_trained(trainer, tokenizer, adapter_dir, method=job.method)
    complete_tokenizer_files(adapter_dir, source=job.base_model_dir, tokenizer=tokenizer)
    stop_on_end_of_turn(adapter_dir, tokenizer)
    _release(trainer)

    ensure_job_active()
    artifacts: dict[str, Any] = {"adapter_path": layout.adapter_prefix(job.job_id)}
    storage.upload_dir(adapter_dir, artifacts["adapter_path"])
    publishable = adapter_dir
    if job.export_config.format is ExportFormat.MERGED:
        merged_dir = job.work_dir / "merged"
        merge_adapter(job, adapter_dir, merged_dir, tokenizer)
        ensure_job_active()
        artifacts["merged_path"] = layout.merged_prefix(job.job_id)
        storage.upload_dir(merged_dir, artifacts["merged_path"])
        publishable = merged_dir
    if job.export_config.destination is Destination.HFHUB:
        if hub is None or not job.hf_token or not job.export_config.hf_repo_id:
            raise UserError("destination 'hfhub' needs hf_repo_id and an hf_token")
        ensure_job_active()
        artifacts["hub_url"] = hub.upload(
            publishable,
            repo_id=job.export_config.hf_repo_id,
            token=job.hf_token,
            commit_message=f"Fine-tuned by job {job.job_id}",
        )
    return Artifacts(**artifacts)


def check_export_supported(export_config: ExportConfig) -> None:
    """Refuse before any GPU time what this build cannot export, instead of skipping it."""
    if export_config.include_gguf:
        raise UnsupportedError("GGUF export is not supported by this trainer build yet")


def _save_trained(trainer: Any, tokenizer: Any, directory: Path, *, method: Method) -> None:
    """The adapter for LoRA/QLoRA; for Full the whole model, in 16 bits like the merged export."""
    if method is Method.FULL:
        import torch

        model = trainer.model
        if model.dtype == torch.float32:
            model.to(torch.bfloat16)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    else:
        trainer.save_model(str(directory))  # adapter weights, adapter config, tokenizer
        # Pickled TrainingArguments: of no use to whoever loads the model, and unsafe to unpickle.
        (directory / "training_args.bin").unlink(missing_ok=True)


def _release(trainer: Any) -> None:
    """Free the training model before the merge loads another copy of the base."""
    import torch

    trainer.model = None
    trainer.model_wrapped = None
    trainer.optimizer = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def merge_adapter(job: ExportJob, adapter_dir: Path, merged_dir: Path, tokenizer: Any) -> None:
    """Reload the base in 16 bits, merge the adapter into it and save the result."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if (job.hardware.bf16 or not job.hardware.cuda) else torch.float16
    base = AutoModelForCausalLM.from_pretrained(
        job.base_model_dir,
        dtype=dtype,
        attn_implementation=job.attention,
        device_map={"": 0} if job.hardware.cuda else None,
    )
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    complete_tokenizer_files(merged_dir, source=job.base_model_dir, tokenizer=tokenizer)
    stop_on_end_of_turn(merged_dir, tokenizer)
    del merged, base
    gc.collect()
