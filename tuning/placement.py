"""Where a job trains: its GPU tier, chosen at submit from the job's memory estimate.

The estimate (tuning/estimates.py) needs the base model's shape. A `gs://` model's
`config.json` is read from its folder (the location check of tuning/tenancy.py has already
passed); a Hub id of Google's Gemma checkpoints is looked up in the catalog of published
configs (tuning/model_catalog.py: the functions cannot reach the Hub for gated repos without
the caller's token, and should not spend a request on it). Any other model is placed on the
smallest tier without an estimate, and the trainer estimates from the config it downloads
before it loads any weights, failing fast when the tier cannot hold the job.

A refusal is the caller's to fix (InvalidRequestError on `training_config.compute.tier`,
422) and is decided before anything is written, so it leaves nothing behind.

Only the tiers open to the job's owner (`GpuTier.allowed_callers`) take part: `auto` picks
among them, a named tier outside them is refused exactly like a tier that does not exist,
and every message lists only them, so a caller learns nothing of the tiers kept from them.
Submit and dispatch (published requests, for their `owner`) both place through here.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from tuning.errors import InvalidRequestError, NotFoundError, TuningError
from tuning.estimates import MemoryEstimate, ModelShape, estimate_training_memory
from tuning.jobs import Placement
from tuning.model_catalog import catalog_config
from tuning.spec import Method, Provider, TrainerType, TrainingConfig
from tuning.tiers import GIB, GpuTier, TierChoiceError, choose_tier, tiers_open_to

logger = logging.getLogger(__name__)

TIER_FIELD = "training_config.compute.tier"


def model_config(base_model_id: str, storage: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The model's config.json and where it was read, or (None, None) when unknown here."""
    if base_model_id.startswith("gs://"):
        uri = base_model_id.rstrip("/") + "/config.json"
        try:
            config = storage.download_json(uri)
        except NotFoundError:
            return None, None  # the trainer reports a folder without a model
        except TuningError as error:  # an estimate is worth a read, not a failed submit
            logger.warning("could not read %s for the estimate: %s", uri, error)
            return None, None
        return (config, uri) if isinstance(config, dict) else (None, None)
    config = catalog_config(base_model_id)
    return (config, f"published config of {base_model_id}") if config else (None, None)


def estimate_for(shape: ModelShape, config: TrainingConfig, tier: GpuTier) -> MemoryEstimate:
    """What one GPU of `tier` needs for the job."""
    return _estimate(shape, config, gpu_count=tier.gpu_count)


def _estimate(shape: ModelShape, config: TrainingConfig, *, gpu_count: int) -> MemoryEstimate:
    hp = config.resolved_hyperparameters
    grpo = config.trainer_type is TrainerType.GRPO
    return estimate_training_memory(
        shape,
        method=config.method.value,
        trainer_type=config.trainer_type.value,
        # GRPO's sequences are a prompt plus a generated completion: the estimate adds
        # max_completion_length to the length it is given.
        max_seq_length=hp.max_prompt_length if grpo else hp.max_seq_length,
        micro_batch=hp.batch_size,
        lora_rank=hp.lora_rank,
        # The trainer checkpoints activations whenever the model is large for its GPU
        # (trainer/hardware.py); the estimate assumes it does, as it will where it matters.
        gradient_checkpointing=True,
        gpu_count=gpu_count,
        packing=hp.packing,
        num_generations=hp.num_generations,
        max_completion_length=hp.max_completion_length,
        beta=hp.beta,  # GRPO Full with beta above 0 holds a reference copy
    )


def overflow_of_unestimated_job(
    config: TrainingConfig, model_config: dict[str, Any], placement: Placement | None
) -> str | None:
    """The trainer's half of the estimate: for a job submit placed without one (it could not
    read the base model's shape), why one GPU of its tier cannot hold it, from the
    config.json the trainer fetched before any weights; None when it fits, when submit
    estimated already, or when the shape is still unknown (the GPU then decides)."""
    if placement is None or placement.estimate_bytes is not None:
        return None
    try:
        shape = ModelShape.from_config(model_config)
    except ValueError as error:
        logger.warning("no estimate for %s: %s", config.base_model_id, error)
        return None
    estimate = _estimate(shape, config, gpu_count=placement.gpu_count)
    if estimate.total <= placement.gpu_memory_bytes:
        return None
    return (
        f"the job needs about {estimate.total / GIB:.1f} GiB per GPU (estimated from "
        f"{config.base_model_id}'s config.json) and tier {placement.tier} "
        f"({placement.gpu_count} x {placement.gpu_type}) holds "
        f"{placement.gpu_memory_bytes / GIB:.1f} GiB: name a larger tier in "
        f"{TIER_FIELD}, or use method QLoRA or LoRA, a shorter max_seq_length or a smaller "
        "batch_size"
    )


def single_gpu_only(config: TrainingConfig) -> list[str]:
    """What in the job keeps it on one GPU (empty: it can be sharded over several).

    QLoRA's 4-bit weights (bitsandbytes) shard under FSDP only with a matching storage
    dtype, GRPO generates completions inside the training step, and Unsloth runs on one GPU:
    the trainer (trainer/distributed.py) trains none of them on several processes yet.
    """
    reasons = []
    if config.method is Method.QLORA:
        reasons.append("method QLoRA")
    if config.trainer_type is TrainerType.GRPO:
        reasons.append("trainer_type grpo")
    if config.provider is Provider.UNSLOTH:
        reasons.append("provider unsloth")
    return reasons


def _usable_tiers(config: TrainingConfig, tiers: tuple[GpuTier, ...]) -> tuple[GpuTier, ...]:
    reasons = single_gpu_only(config)
    if not reasons:
        return tiers
    what = " and ".join(reasons)
    named = next((tier for tier in tiers if tier.name == config.compute.tier), None)
    if named is not None and named.gpu_count > 1:
        raise InvalidRequestError(
            f"{what} trains on one GPU; tier {named.describe()} has {named.gpu_count}: "
            "choose a one-GPU tier or auto",
            field=TIER_FIELD,
        )
    usable = tuple(tier for tier in tiers if tier.gpu_count == 1)
    if not usable:
        raise InvalidRequestError(
            f"{what} trains on one GPU, and every tier here has several: use LoRA or Full "
            "(trainer_type sft, dpo or orpo, provider huggingface)",
            field=TIER_FIELD,
        )
    return usable


def place_job(
    config: TrainingConfig,
    *,
    tiers: tuple[GpuTier, ...],
    storage: Any,
    owner: str | None = None,
) -> Placement:
    """The tier the job trains on, with its estimate; InvalidRequestError when none fits or
    none is open to `owner` (None, naming nobody, is admitted only where every caller is)."""
    tiers = tiers_open_to(owner, tiers)
    if not tiers:
        raise InvalidRequestError(
            "no GPU tier of this deployment is open to this caller: ask the operator to add "
            "you to a tier's allowed_callers (Terraform gpu_tiers)",
            field=TIER_FIELD,
        )
    tiers = _usable_tiers(config, tiers)
    raw, source = model_config(config.base_model_id, storage)
    shape = None
    if raw is not None:
        try:
            shape = ModelShape.from_config(raw)
        except ValueError as error:
            logger.warning("no estimate for %s: %s", config.base_model_id, error)
    estimates: dict[str, MemoryEstimate] = {}

    def needed(tier: GpuTier) -> int | None:
        if shape is None:
            return None
        estimates[tier.name] = estimate_for(shape, config, tier)
        return estimates[tier.name].total

    try:
        tier, _ = choose_tier(tiers, config.compute.tier, needed)
    except TierChoiceError as error:
        raise InvalidRequestError(str(error), field=TIER_FIELD) from None
    estimate = estimates.get(tier.name)
    return Placement(
        tier=tier.name,
        gpu_type=tier.gpu_type,
        gpu_count=tier.gpu_count,
        gpu_memory_bytes=tier.memory_bytes,
        estimate_bytes=estimate.total if estimate else None,
        estimate=dataclasses.asdict(estimate) if estimate else None,
        estimated_from=source if estimate else None,
    )
