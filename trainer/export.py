"""Export: the adapter (or full weights), a 16-bit merged model, GGUF files, and the Hub.

The merge never touches 4-bit weights: the trained model is freed, the base is
reloaded in 16 bits and the saved adapter is merged into it, one code path for
LoRA and QLoRA. Every uploaded directory has complete tokenizer files (and a
vision model's processor files) and a generation config that stops at
<end_of_turn>. The adapter's config names the base model as the request did (its Hub
id or gs:// URI), not the trainer's scratch copy, so `PeftModel.from_pretrained` loads a
downloaded adapter as it is. The merge is bfloat16 (float32 on a GPU without it), never
float16, in which Gemma overflows. A text job on a multimodal model exports the multimodal
model: its architecture, its untouched image path and its processor files.
GGUF files are converted from the 16-bit merge (made locally when
only the adapter is uploaded), each checked by `trainer.gguf`, and land in
`gguf_models/{job_id}/model-{quant}.gguf` (and in the Hub repository, beside the
weights, when that is the destination). Each upload first checks the job is
still wanted, so a cancelled or deleted job gets no files.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from trainer.errors import UnsupportedError, UserError
from trainer.files import link_or_copy
from trainer.gguf import QUANTIZER_TYPES, export_gguf
from trainer.hardware import Hardware, merge_dtype_name
from trainer.llama_cpp import LlamaCppTools
from trainer.tokenizer_files import complete_tokenizer_files, stop_on_end_of_turn
from tuning.errors import TransientError
from tuning.gcp.storage import GcsStore
from tuning.jobs import Artifacts
from tuning.layout import StorageLayout
from tuning.spec import Destination, ExportConfig, ExportFormat, Method, Modality, TrainingConfig

logger = logging.getLogger(__name__)
HUB_URL = "https://huggingface.co/"
ADAPTER_CONFIG = "adapter_config.json"
MODEL_CARD = "README.md"
# What AutoProcessor reads beside the tokenizer files; a text job on a multimodal model saves
# only its tokenizer, so these come from the base snapshot.
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


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
    base_model_id: str  # as the request named it: a Hub id or a gs:// URI
    export_config: ExportConfig
    method: Method
    base_model_dir: Path
    work_dir: Path
    hardware: Hardware
    attention: str
    hf_token: str | None
    gguf_tools: LlamaCppTools | None = None  # located before training when GGUF is wanted
    warn: Callable[[str], None] = logger.warning  # tells the job (a `message` event)


def export_model(
    job: ExportJob,
    *,
    trainer: Any,
    tokenizer: Any,
    storage: GcsStore,
    layout: StorageLayout,
    ensure_job_active: Callable[[], None],
    hub: HubUploader | None,
    processor: Any = None,
    state_dict: dict[str, Any] | None = None,
) -> Artifacts:
    """Save, merge and upload what the job asked for; returns where it went.

    `processor` is a vision model's processor: saved beside the weights in place of the
    tokenizer alone, so that the exported model loads with AutoProcessor. `state_dict`: the
    trained weights gathered whole from the processes FSDP sharded them over (trainer.model
    holds only this process's shard then).
    """
    saved = processor if processor is not None else tokenizer
    adapter_dir = job.work_dir / "adapter"
    _save_trained(trainer, saved, adapter_dir, method=job.method, state_dict=state_dict)
    if job.method.uses_adapter:
        name_base_model(adapter_dir, job.base_model_id, scratch=job.base_model_dir)
    if processor is None:
        copy_processor_files(adapter_dir, source=job.base_model_dir)
    complete_tokenizer_files(adapter_dir, source=job.base_model_dir, tokenizer=tokenizer)
    stop_on_end_of_turn(adapter_dir, tokenizer)
    _release(trainer)

    ensure_job_active()
    artifacts: dict[str, Any] = {"adapter_path": layout.adapter_prefix(job.job_id)}
    storage.upload_dir(adapter_dir, artifacts["adapter_path"])
    publishable = adapter_dir
    merged = job.export_config.format is ExportFormat.MERGED
    quantizations = job.export_config.quantizations
    sixteen_bit_dir = adapter_dir  # Full training saved all weights in 16 bits already
    if job.method.uses_adapter and (merged or quantizations):
        sixteen_bit_dir = job.work_dir / "merged"
        merge_adapter(job, adapter_dir, sixteen_bit_dir, tokenizer, processor=processor)
    if merged:
        ensure_job_active()
        artifacts["merged_path"] = layout.merged_prefix(job.job_id)
        storage.upload_dir(sixteen_bit_dir, artifacts["merged_path"])
        publishable = sixteen_bit_dir
    if quantizations:
        artifacts |= _export_gguf_files(
            job,
            sixteen_bit_dir,
            storage=storage,
            layout=layout,
            ensure_job_active=ensure_job_active,
        )
    if job.export_config.destination is Destination.HFHUB:
        if hub is None or not job.hf_token or not job.export_config.hf_repo_id:
            raise UserError("destination 'hfhub' needs hf_repo_id and an hf_token")
        if quantizations:
            # The repository carries the GGUF files beside the weights, as Hub users expect.
            for gguf in sorted(_gguf_dir(job).glob("model-*.gguf")):
                link_or_copy(gguf, publishable / gguf.name)
        ensure_job_active()
        artifacts["hub_url"] = hub.upload(
            publishable,
            repo_id=job.export_config.hf_repo_id,
            token=job.hf_token,
            commit_message=f"Fine-tuned by job {job.job_id}",
        )
    return Artifacts(**artifacts)


def prepare_gguf_export(config: TrainingConfig) -> LlamaCppTools | None:
    """Refuse before any GPU time a GGUF export this build cannot make; find llama.cpp.

    Missing llama.cpp tools are the image's fault (a system error), never fetched at run time.
    """
    quantizations = config.export_config.quantizations
    if not quantizations:
        return None
    if config.modality is Modality.VISION:
        raise UnsupportedError(
            "export_config.include_gguf: GGUF export of vision models is not supported by this "
            "trainer build; export the merged model instead"
        )
    tools = LlamaCppTools.locate()
    if any(quantization in QUANTIZER_TYPES for quantization in quantizations):
        tools.require_quantizer()
    return tools


def _gguf_dir(job: ExportJob) -> Path:
    return job.work_dir / "gguf"


def _export_gguf_files(
    job: ExportJob,
    sixteen_bit_dir: Path,
    *,
    storage: GcsStore,
    layout: StorageLayout,
    ensure_job_active: Callable[[], None],
) -> dict[str, Any]:
    """Convert, verify and upload each requested quantization; the Artifacts fields for them."""
    quantizations = job.export_config.quantizations
    tools = job.gguf_tools or LlamaCppTools.locate()
    out_dir = _gguf_dir(job)
    written = export_gguf(
        sixteen_bit_dir, out_dir, quantizations, tools=tools, model_name=job.job_id, warn=job.warn
    )
    ensure_job_active()
    # export_gguf leaves exactly the verified model-{quant}.gguf files in out_dir.
    storage.upload_dir(out_dir, layout.gguf_prefix(job.job_id))
    files = {quant.value: layout.gguf_uri(job.job_id, quant) for quant in quantizations}
    for quant, path in written.items():
        logger.info("GGUF %s: %s (%d bytes)", quant.value, files[quant.value], path.stat().st_size)
    return {"gguf_files": files, "gguf_path": files[quantizations[0].value]}


def _save_trained(
    trainer: Any,
    saved: Any,
    directory: Path,
    *,
    method: Method,
    state_dict: dict[str, Any] | None = None,
) -> None:
    """The adapter for LoRA/QLoRA; for Full the whole model, in 16 bits like the merged export.

    `saved` is the tokenizer, or a vision model's processor (which writes the tokenizer too).
    """
    if state_dict is not None:
        _save_gathered(trainer, saved, directory, method=method, state_dict=state_dict)
    elif method is Method.FULL:
        import torch

        model = trainer.model
        if model.dtype == torch.float32:
            model.to(torch.bfloat16)
        model.save_pretrained(directory)
        saved.save_pretrained(directory)
    else:
        trainer.save_model(str(directory))  # adapter weights, adapter config, tokenizer
        # Pickled TrainingArguments: of no use to whoever loads the model, and unsafe to unpickle.
        (directory / "training_args.bin").unlink(missing_ok=True)


def _save_gathered(
    trainer: Any, saved: Any, directory: Path, *, method: Method, state_dict: dict[str, Any]
) -> None:
    """What `_save_trained` saves, from weights gathered off FSDP's shards: the same files
    (PEFT keeps the adapter's weights of the full state dict), Full in 16 bits."""
    import torch

    model = trainer.accelerator.unwrap_model(trainer.model)
    if method is Method.FULL:
        state_dict = {
            name: tensor.to(torch.bfloat16) if tensor.dtype == torch.float32 else tensor
            for name, tensor in state_dict.items()
        }
    model.save_pretrained(directory, state_dict=state_dict)
    saved.save_pretrained(directory)
    if method is Method.FULL:
        # save_pretrained records the dtype of the (sharded, float32) parameters it holds,
        # not of the weights it was given to write.
        config_path = directory / "config.json"
        config = json.loads(config_path.read_text())
        config["dtype"] = "bfloat16"
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def name_base_model(adapter_dir: Path, base_model_id: str, *, scratch: Path) -> None:
    """Point the saved adapter's config (and PEFT's model card) at the model the user named.

    PEFT records the path the base was loaded from, which is the trainer's scratch folder.
    """
    config_path = adapter_dir / ADAPTER_CONFIG
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_model_id
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    card = adapter_dir / MODEL_CARD
    if card.is_file():
        card.write_text(card.read_text().replace(str(scratch), base_model_id))


def copy_processor_files(target: Path, *, source: Path) -> None:
    """The base's processor files, where a text job on a multimodal model saved none."""
    for name in PROCESSOR_FILES:
        if (source / name).is_file() and not (target / name).exists():
            shutil.copyfile(source / name, target / name)


def _release(trainer: Any) -> None:
    """Free the training model before the merge loads another copy of the base."""
    import torch

    trainer.model = None
    trainer.model_wrapped = None
    trainer.optimizer = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def merge_adapter(
    job: ExportJob, adapter_dir: Path, merged_dir: Path, tokenizer: Any, *, processor: Any = None
) -> None:
    """Reload the base (bfloat16, or float32), merge the adapter into it and save the result.

    AutoModelForCausalLM loads a multimodal Gemma 3 as Gemma3ForConditionalGeneration, so a
    text job's merge keeps the checkpoint's architecture and its image path as they were.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    dtype = getattr(torch, merge_dtype_name(job.hardware))
    model_class = AutoModelForImageTextToText if processor is not None else AutoModelForCausalLM
    base = model_class.from_pretrained(
        job.base_model_dir,
        dtype=dtype,
        attn_implementation=job.attention,
        device_map={"": 0} if job.hardware.cuda else None,
    )
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(merged_dir)
    (processor if processor is not None else tokenizer).save_pretrained(merged_dir)
    if processor is None:
        copy_processor_files(merged_dir, source=job.base_model_dir)
    complete_tokenizer_files(merged_dir, source=job.base_model_dir, tokenizer=tokenizer)
    stop_on_end_of_turn(merged_dir, tokenizer)
    del merged, base
    gc.collect()
