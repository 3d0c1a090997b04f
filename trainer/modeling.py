"""The base model: fetched from a gs:// snapshot or the Hub, its tokenizer, loaded to train.

Its config.json is fetched first and checked (`check_config`), so that a model that cannot run
the job (a text-only model for a vision job) fails before the weights are downloaded.

Gemma 3 from 4B up is multimodal: `AutoModelForCausalLM` loads it as
Gemma3ForConditionalGeneration, SigLIP tower and projector included. A text job trains the
language model only: no adapters on the image path, and QLoRA leaves it unquantized, so that the
export is the same multimodal model with its image path as the checkpoint had it. Full
fine-tuning loads float32 master weights (bf16 autocast computes on the GPU).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import InsufficientSpaceError, ModelNotFoundError, UserError
from trainer.hardware import Hardware, compute_dtype_name
from tuning.errors import InvalidRequestError, NotFoundError
from tuning.gcp.storage import GcsStore
from tuning.spec import Hyperparameters, Method, Provider
from tuning.tenancy import BaseModelLocations

if TYPE_CHECKING:
    from trainer.run import TrainingRun

logger = logging.getLogger(__name__)

# What a Hub snapshot needs for training and export; skips the original/ and gguf copies some
# repositories carry, which would double the download.
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "*.txt"]
GEMMA3_TYPES = {"gemma3", "gemma3_text"}
MODEL_CONFIG = "config.json"
# Gemma 3's image path: model.vision_tower.* and model.multi_modal_projector.* in transformers 5
# (without the "model." prefix in 4.x), beside model.language_model.*.
IMAGE_PATH_MODULES = ("vision_tower", "multi_modal_projector")
# QLoRA quantizes the language model only; the image path and the (tied) LM head stay in 16
# bits. transformers matches each pattern from the start of a module's full name up to a dot
# (or as a suffix of it), so a bare "vision_tower" misses model.vision_tower.encoder.*: see
# should_convert_module in
# https://github.com/huggingface/transformers/blob/main/src/transformers/quantizers/quantizers_utils.py
# Given a list, transformers adds none of its default skips, hence lm_head here.
NOT_QUANTIZED = [rf"(?:.*\.)?{name}" for name in IMAGE_PATH_MODULES] + ["lm_head"]
# PEFT full-matches a string exclude_modules against each module's full name
# (https://huggingface.co/docs/peft/package_reference/lora, LoraConfig.exclude_modules).
IMAGE_PATH_PATTERN = rf"(?:.*\.)?(?:{'|'.join(IMAGE_PATH_MODULES)})(?:\..*)?"


def fetch_base_model(
    base_model_id: str,
    *,
    storage: GcsStore,
    directory: Path,
    token: str | None,
    locations: BaseModelLocations,
    check_config: Callable[[dict[str, Any]], None] | None = None,
    free_bytes: Callable[[Path], int] = lambda path: shutil.disk_usage(path).free,
) -> Path:
    """A local directory holding the model's config, weights and tokenizer files.

    A gs:// model outside `locations` (another job's outputs, say: its record may have been
    written by anything that can write the jobs collection) fails as a user error before
    anything of it is read. `check_config` sees config.json before anything else is
    downloaded, and may raise.
    Then the download's size is checked against the room left in `directory`: on Cloud
    Run that is the task's memory, and a model that cannot fit fails now, clearly, rather
    than by an out-of-memory kill (retried) halfway through the download.
    """
    try:
        locations.check(base_model_id)
    except InvalidRequestError as error:
        raise UserError(error.message) from None
    from_gcs = base_model_id.startswith("gs://")
    if from_gcs and not base_model_id.endswith("/"):
        base_model_id += "/"  # a folder: gs://b/m must not read gs://b/mconfig.json or gs://b/m2/
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / MODEL_CONFIG
    if from_gcs:
        # A missing object is reported below, like a prefix without a model in it.
        with contextlib.suppress(NotFoundError):
            config_path.write_bytes(storage.download_bytes(f"{base_model_id}{MODEL_CONFIG}"))
    else:
        _download_from_hub(base_model_id, directory, token, [MODEL_CONFIG])
    if not config_path.is_file():
        raise ModelNotFoundError(f"base model {base_model_id} not found (no config.json there)")
    model_config = _read_config(config_path, base_model_id)  # a broken one fails here, once
    if check_config is not None:
        check_config(model_config)
    needed = (
        storage.total_size(base_model_id)
        if from_gcs
        else _hub_download_size(base_model_id, token, HUB_PATTERNS)
    )
    if needed is not None:
        ensure_room(needed, directory, f"base model {base_model_id}", free_bytes(directory))
    if from_gcs:
        storage.download_dir(base_model_id, directory)
    else:
        _download_from_hub(base_model_id, directory, token, HUB_PATTERNS)
    return directory


def ensure_room(needed: int, directory: Path, what: str, free: int) -> None:
    """Raise InsufficientSpaceError when `needed` bytes do not fit in the `free` ones."""
    if needed <= free:
        return
    gib = 2**30
    raise InsufficientSpaceError(
        f"{what} needs {needed / gib:.1f} GiB in {directory}, where {free / gib:.1f} GiB is "
        "free; on Cloud Run this space is the trainer's memory: give the trainer more "
        "(Terraform trainer_gpu.memory) or choose a smaller model"
    )


def _hub_download_size(repo_id: str, token: str | None, patterns: list[str]) -> int | None:
    """What the snapshot download will fetch, from the Hub's file list; None if unknown."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    try:
        info = HfApi(token=token).model_info(repo_id, files_metadata=True)
    except Exception as error:  # the download that follows reports what is wrong, precisely
        logger.info("size of %s unknown (%s); downloading without a space check", repo_id, error)
        return None
    files = {sibling.rfilename: sibling.size for sibling in info.siblings or []}
    wanted = filter_repo_objects(files, allow_patterns=patterns)
    return sum(files[name] or 0 for name in wanted)


def _read_config(path: Path, base_model_id: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_bytes())
        parsed = True
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        parsed = False
    if not parsed:
        # The same file fails every attempt: the model's owner must fix it, no retry helps.
        raise UserError(f"base model {base_model_id}: config.json is not valid JSON")
    if not isinstance(config, dict):
        raise UserError(f"base model {base_model_id}: config.json is not a JSON object")
    return config


def _download_from_hub(
    repo_id: str, directory: Path, token: str | None, patterns: list[str]
) -> None:
    from huggingface_hub import snapshot_download

    from trainer.hub import hub_errors

    with hub_errors(repo_id, "main"):
        snapshot_download(repo_id, local_dir=directory, token=token, allow_patterns=patterns)


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


def load_processor(model_dir: Path) -> Any:
    """A vision model's processor (image processor and tokenizer), with a chat template."""
    from transformers import AutoProcessor
    from trl.chat_template_utils import gemma3_chat_template

    try:
        processor = AutoProcessor.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise UserError(f"the base model's processor cannot be loaded: {error}") from None
    if getattr(processor, "image_processor", None) is None:
        raise UserError(
            "the base model has no image processor (processor_config.json or "
            "preprocessor_config.json): modality 'vision' needs one"
        )
    tokenizer = processor.tokenizer
    template = processor.chat_template or tokenizer.chat_template or gemma3_chat_template
    processor.chat_template = tokenizer.chat_template = template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return processor


def load_model_config(model_dir: Path) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir)


def has_image_path(model_dir: Path) -> bool:
    """Whether the checkpoint is multimodal (a vision tower beside the language model)."""
    config = json.loads((model_dir / MODEL_CONFIG).read_text())
    return bool(config.get("vision_config"))


def weights_dtype_name(method: Method, hardware: Hardware) -> str:
    """The dtype the weights are loaded in: float32 master weights for Full, else compute's.

    Full fine-tuning updates every weight: in bfloat16 (8 bits of mantissa) an update smaller
    than 1/256 of its weight rounds away, so small learning rates stop training. Kept in float32,
    the Trainer's bf16 autocast still computes in bfloat16 on the GPU. Adapters train their own
    float32 weights (PEFT upcasts them), so LoRA and QLoRA keep the frozen base in 16 bits.
    """
    return "float32" if method is Method.FULL else compute_dtype_name(hardware)


def quantization_config(dtype: Any, *, image_path: bool) -> Any:
    """QLoRA's 4-bit nf4 with double quantization; a multimodal model's image path kept as is."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        llm_int8_skip_modules=list(NOT_QUANTIZED) if image_path else None,
    )


def load_model(
    model_dir: Path,
    *,
    method: Method,
    hardware: Hardware,
    attention: str,
    dtype_name: str | None = None,
    vision: bool = False,
    sharded: bool = False,
) -> Any:
    """The base model on the accelerator, 4-bit nf4 with double quantization for QLoRA.

    `sharded`: FSDP will shard it over the job's processes. It loads into CPU memory then,
    and each process's shard moves to its own GPU as FSDP wraps the model: a whole copy on
    every GPU first would need the memory that sharding is there to save.

    A multimodal checkpoint loads as its own class (Gemma3ForConditionalGeneration) for text
    jobs too, so the export keeps the architecture the checkpoint has.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    dtype = getattr(torch, dtype_name or weights_dtype_name(method, hardware))
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attention}
    if hardware.cuda and not sharded:
        kwargs["device_map"] = {"": 0}
    if method is Method.QLORA:
        compute_dtype = getattr(torch, compute_dtype_name(hardware))
        kwargs["quantization_config"] = quantization_config(
            compute_dtype, image_path=has_image_path(model_dir)
        )
    model_class = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    model = model_class.from_pretrained(model_dir, **kwargs)
    model.config.use_cache = False  # training; also keeps packed sequences isolated
    return model


def prepare_model(run: TrainingRun) -> tuple[Any, Any]:
    """The model to train, and the LoRA config TRL should apply (None: Full, or applied already)."""
    config = run.config
    if config.provider is Provider.UNSLOTH:
        from trainer.unsloth import load_unsloth_model

        return load_unsloth_model(run), None
    vision = run.processor is not None
    full_continuation = run.continue_from is not None and not config.method.uses_adapter
    model = load_model(
        run.continue_from if full_continuation and run.continue_from else run.model_dir,
        method=config.method,
        hardware=run.hardware,
        attention=run.attention,
        vision=vision,
        sharded=run.ranks.distributed,
    )
    if config.method is Method.QLORA:
        loaded, message = four_bit_report(model)
        (run.note if loaded else run.warn)(message)
    if not config.method.uses_adapter:
        return model, None
    if run.continue_from is not None:
        from trainer.continuation import continue_adapter

        quantized = config.method is Method.QLORA
        return continue_adapter(model, run.continue_from, quantized=quantized), None
    text_on_multimodal = not vision and has_image_path(run.model_dir)
    return model, lora_config(config.hyperparameters, exclude_image_path=text_on_multimodal)


def four_bit_report(model: Any) -> tuple[bool, str]:
    """Whether a QLoRA model's weights really are 4-bit (bitsandbytes layers), and saying so."""
    layers = sum(type(module).__name__ == "Linear4bit" for module in model.modules())
    if layers and getattr(model, "is_loaded_in_4bit", True):
        return True, (
            f"QLoRA: the base model loaded in 4-bit (bitsandbytes nf4, double quantization): "
            f"{layers} linear layers quantized"
        )
    return False, (
        "QLoRA: the base model did not load in 4-bit (no bitsandbytes 4-bit layers): it trains "
        "as LoRA on 16-bit weights and needs LoRA's memory"
    )


def lora_config(hyperparameters: Hyperparameters, *, exclude_image_path: bool = False) -> Any:
    """LoRA on every linear layer but the LM head, with the job's rank, alpha and dropout.

    `exclude_image_path`: a text job on a multimodal model, whose vision tower and projector
    get no adapters (the text data never reaches them: adapters there would only be exported
    untrained, and would change nothing but the adapter's size).
    """
    from peft import LoraConfig

    return LoraConfig(
        r=hyperparameters.lora_rank,
        lora_alpha=hyperparameters.lora_alpha,
        lora_dropout=hyperparameters.lora_dropout,
        target_modules="all-linear",
        exclude_modules=IMAGE_PATH_PATTERN if exclude_image_path else None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def parameter_count(model: Any) -> int:
    """The parameters the model's config defines, however they are stored.

    QLoRA's 4-bit weights are packed two to a byte in uint8 tensors, so their `numel()` counts
    half of them (a quarter, packed in wider storage). A skeleton built from the config on the
    meta device has every weight at its logical shape, allocates nothing, and takes about 2 s
    for a 27B model.
    """
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)  # from_config may annotate the config it is given
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return sum(parameter.numel() for parameter in skeleton.parameters())
