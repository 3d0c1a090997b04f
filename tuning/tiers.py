"""GPU tiers: the machines a deployment trains on, declared by the operator, chosen per job.

The operator lists tiers in Terraform (`gpu_tiers`); the functions read them from
`GPU_TIERS` (JSON). Each is one kind of machine on one engine: a Cloud Run job with one GPU
(L4 24 GB, RTX PRO 6000 96 GB), or a Vertex AI custom job on a multi-GPU machine
(e.g. 8 x H100 80 GB, trained with FSDP under torchrun). Each tier has its own capacity
(`max_concurrent_jobs`, one capacity document per tier in tuning/capacity.py).

A request names a tier (`training_config.compute.tier`) or leaves it to `auto`: the
smallest tier whose GPUs hold the job's memory estimate (tuning/estimates.py). Without
`GPU_TIERS` a deployment has the one tier it had before tiers existed (`default`: the
Cloud Run job `TRAINER_JOB_NAME`, `TRAINER_GPU_TYPE`, `MAX_CONCURRENT_JOBS`).

Each tier says who may train on it (`allowed_callers`): identities exactly as jobs record
their owner (the email or subject of a caller's ID token, a publisher's `owner` attribute),
or `*` for every caller, the form secrets are shared in (tuning/tenancy.py). Unset: every
caller. Placement (tuning/placement.py) sees only the tiers open to the job's owner.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from tuning.ids import is_identity
from tuning.tenancy import EVERY_CALLER

AUTO = "auto"
DEFAULT_TIER = "default"
GIB = 1024**3

TierName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,30}$")]


class Engine(StrEnum):
    CLOUD_RUN = (
        "cloudrun"  # one GPU per instance: https://cloud.google.com/run/docs/configuring/jobs/gpu
    )
    VERTEX = "vertex"  # Vertex AI custom jobs: multi-GPU machines


# GPU memory per Cloud Run accelerator type in GiB: the cards' 24 GB and 96 GB
# (https://cloud.google.com/run/docs/configuring/jobs/gpu) as nvidia-smi totals them
# (23034 MiB and 97887 MiB). A tier may declare less to leave headroom.
CLOUD_RUN_GPU_MEMORY_GIB = {"nvidia-l4": 22.4, "nvidia-rtx-pro-6000": 95.5}
# The same per Vertex AI accelerator type (MachineSpec.acceleratorType) Terraform declares
# tiers of (terraform/variables.tf vertex_gpu_memory_gib, which writes each tier's
# gpu_memory_gib; tests/terraform/test_contract.py keeps the two equal).
VERTEX_GPU_MEMORY_GIB = {
    "NVIDIA_H200_141GB": 140.4,
    "NVIDIA_H100_MEGA_80GB": 79.6,
    "NVIDIA_H100_80GB": 79.6,
    "NVIDIA_A100_80GB": 80.0,
    "NVIDIA_TESLA_A100": 40.0,
    "NVIDIA_L4": 22.4,
}


class GpuTier(BaseModel):
    """One kind of machine jobs train on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: TierName
    engine: Engine
    gpu_type: str = Field(..., min_length=1, max_length=64)
    gpu_count: int = Field(1, ge=1, le=16)
    gpu_memory_gib: float = Field(..., gt=0, le=1024, description="Usable memory of one GPU.")
    region: str | None = Field(None, description="Where its jobs run; the deployment's if unset.")
    max_concurrent_jobs: int = Field(1, ge=1, le=1000)
    # Cloud Run: the trainer job of this tier (the GPU type is part of a job's template).
    cloud_run_job: str | None = Field(None, max_length=63)
    # Vertex AI: the machine holding the GPUs (e.g. a3-highgpu-8g for 8 x H100 80 GB).
    machine_type: str | None = Field(None, max_length=64)
    # How long one execution may train before it checkpoints and hands off (Vertex allows
    # days: scheduling.timeout); unset: TRAINER_TASK_TIMEOUT_SECONDS, Cloud Run's bound.
    task_timeout_seconds: int | None = Field(None, ge=60, le=604800)
    # Who may train here: owners' identities (as jobs record them) or EVERY_CALLER.
    allowed_callers: tuple[str, ...] = Field((EVERY_CALLER,), min_length=1, max_length=1000)

    @field_validator("allowed_callers")
    @classmethod
    def _callers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for caller in value:
            if caller != EVERY_CALLER and not is_identity(caller):
                raise ValueError(
                    f"{caller!r} is neither an identity (printable ASCII without spaces, at "
                    f"most 320 characters) nor '{EVERY_CALLER}' (every caller)"
                )
        return value

    def admits(self, owner: str | None) -> bool:
        """Whether jobs of `owner` (None: a published job naming nobody) may train here."""
        return EVERY_CALLER in self.allowed_callers or (
            owner is not None and owner in self.allowed_callers
        )

    @model_validator(mode="after")
    def _engine_fields(self) -> GpuTier:
        if self.engine is Engine.CLOUD_RUN:
            if self.gpu_count != 1:
                raise ValueError(f"tier {self.name}: Cloud Run gives one GPU per instance")
            if not self.cloud_run_job:
                raise ValueError(f"tier {self.name}: a cloudrun tier names its cloud_run_job")
        if self.engine is Engine.VERTEX and not self.machine_type:
            raise ValueError(f"tier {self.name}: a vertex tier names its machine_type")
        return self

    @property
    def memory_bytes(self) -> int:
        """What one of its GPUs holds."""
        return int(self.gpu_memory_gib * GIB)

    @property
    def capacity_pool(self) -> str:
        """The capacity document its slots are counted in."""
        return self.name

    def describe(self) -> str:
        return f"{self.name} ({self.gpu_count} x {self.gpu_type}, {self.gpu_memory_gib:g} GiB each)"


def parse_tiers(value: str | Iterable[Mapping[str, Any]]) -> tuple[GpuTier, ...]:
    """Tiers from `GPU_TIERS` (a JSON list) or a list of dicts; names must be unique."""
    try:
        items = json.loads(value) if isinstance(value, str) else list(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"GPU_TIERS is not JSON: {error}") from None
    if not isinstance(items, list) or not items:
        raise ValueError("GPU_TIERS must be a non-empty JSON list of tiers")
    tiers = tuple(_tier(index, item) for index, item in enumerate(items))
    names = [tier.name for tier in tiers]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"GPU_TIERS names a tier twice: {', '.join(duplicates)}")
    if AUTO in names:
        raise ValueError(f"GPU_TIERS: '{AUTO}' is not a tier name (it means: choose one)")
    return tiers


def _tier(index: int, item: Any) -> GpuTier:
    try:
        return GpuTier.model_validate(item)
    except ValidationError as error:
        name = item.get("name") if isinstance(item, Mapping) else None
        problems = "; ".join(
            f"{'.'.join(map(str, problem['loc'])) or 'tier'}: {problem['msg']}"
            for problem in error.errors(include_url=False, include_input=False)
        )
        raise ValueError(f"GPU_TIERS tier {index} ({name or 'unnamed'}): {problems}") from None


def tiers_open_to(owner: str | None, tiers: Iterable[GpuTier]) -> tuple[GpuTier, ...]:
    """The tiers jobs of `owner` may train on (None: a published job naming nobody)."""
    return tuple(tier for tier in tiers if tier.admits(owner))


def legacy_tier(*, trainer_job_name: str, gpu_type: str, max_concurrent_jobs: int) -> GpuTier:
    """The one tier of a deployment that declares none: its Cloud Run trainer job."""
    return GpuTier(
        name=DEFAULT_TIER,
        engine=Engine.CLOUD_RUN,
        gpu_type=gpu_type,
        gpu_memory_gib=CLOUD_RUN_GPU_MEMORY_GIB.get(
            gpu_type, CLOUD_RUN_GPU_MEMORY_GIB["nvidia-l4"]
        ),
        max_concurrent_jobs=max_concurrent_jobs,
        cloud_run_job=trainer_job_name,
    )


def by_capacity(tiers: Iterable[GpuTier]) -> list[GpuTier]:
    """Smallest first: by memory per GPU times GPUs, then fewer GPUs (cheaper to wait for)."""
    return sorted(tiers, key=lambda tier: (tier.memory_bytes * tier.gpu_count, tier.gpu_count))


class TierChoiceError(ValueError):
    """No tier can take the job: `message` says why, with the estimate."""


def choose_tier(
    tiers: Iterable[GpuTier], requested: str, needed_bytes: Callable[[GpuTier], int | None]
) -> tuple[GpuTier, int | None]:
    """The tier a job runs on, and the memory one of its GPUs needs there (None: unknown).

    `needed_bytes(tier)` is the job's estimate per GPU on that tier (it depends on the GPU
    count: FSDP shards weights, gradients and optimizer state). `auto` takes the smallest tier
    that fits; without an estimate, the smallest tier (the trainer checks before it loads).
    """
    ordered = by_capacity(tiers)
    if requested != AUTO:
        tier = next((t for t in ordered if t.name == requested), None)
        if tier is None:
            names = ", ".join(t.name for t in ordered)
            raise TierChoiceError(f"no tier '{requested}' here: use auto or one of {names}")
        needed = needed_bytes(tier)
        if needed is not None and needed > tier.memory_bytes:
            raise TierChoiceError(
                f"tier {tier.describe()} cannot hold the job: it needs about "
                f"{needed / GIB:.1f} GiB per GPU{_fitting_hint(ordered, needed_bytes)}"
            )
        return tier, needed
    for tier in ordered:
        needed = needed_bytes(tier)
        if needed is None or needed <= tier.memory_bytes:
            return tier, needed
    largest = ordered[-1]
    needed = needed_bytes(largest)
    assert needed is not None  # every tier was estimated, or the loop returned
    raise TierChoiceError(
        f"no tier can hold the job: on the largest, {largest.describe()}, it needs about "
        f"{needed / GIB:.1f} GiB per GPU; use method QLoRA or LoRA, a shorter "
        "max_seq_length or a smaller batch_size, or ask the operator for a larger tier"
    )


def _fitting_hint(ordered: list[GpuTier], needed_bytes: Callable[[GpuTier], int | None]) -> str:
    for tier in ordered:
        needed = needed_bytes(tier)
        if needed is not None and needed <= tier.memory_bytes:
            return f"; tier {tier.name} fits it (or use auto)"
    return "; no tier here fits it"
