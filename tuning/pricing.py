"""GPU time and cost of a training job on each tier, before it runs (pure, torch-free).

`estimate_costs(tiers, parameters=..., method=..., trainer_type=..., base_model_id=...,
tokens=..., history=..., prices=...)` answers, per `tuning.tiers.GpuTier`, how long the job
trains and what that costs. `tokens` are the tokens it trains on over all its epochs, as the
trainer counts them (`DatasetStats.train_tokens` x epochs: each row cut at max_seq_length; a
preference pair counted once, at its longer answer; a GRPO row by its prompt).

Throughput, in order of preference:

1. this deployment's completed jobs of the same tier, base model, method and trainer type,
   once at least `HISTORY_MIN_JOBS` have been measured (`measured_tokens_per_second`; kept
   by tuning/gcp/throughput.py). The estimate says only that it comes from this
   deployment's completed jobs: never which jobs, whose, or how many;
2. the operator's figure for the GPU type (Terraform `gpu_pricing`, `GPU_PRICING`);
3. the table below: peak dense bf16 TFLOPs x `MODEL_FLOPS_UTILIZATION` / FLOPs per token.

Prices: the operator's figure for the GPU type, else the table (None where no published
figure was found: the estimate then has a time and no cost). Both figures carry their source.

What it leaves out: loading the model, evaluation outside training, export and the wait for a
slot; attention's FLOPs (they grow with sequence length; at Gemma's sizes and a few thousand
tokens they are a small share of 6N); prices other than on-demand (Spot, DWS Flex-start, CUDs).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if TYPE_CHECKING:
    from tuning.jobs import JobRecord
    from tuning.tiers import GpuTier

REGION = "us-central1"
READ_ON = "2026-12-04"  # when the figures below were read at their sources

# A figure from this deployment's history is used once this many completed jobs of the same
# key were measured: one job can be an outlier (a cold Hub download inside train_runtime, a
# machine shared with another process); three agree well enough to beat the table.
HISTORY_MIN_JOBS = 3
FROM_HISTORY = "this deployment's completed jobs"


@dataclass(frozen=True)
class TablePrice:
    """On-demand USD per GPU-hour of a tier's machine, divided by its GPUs (None: not found)."""

    usd_per_gpu_hour: float | None
    source: str
    read_on: str = READ_ON
    region: str = REGION


# Cloud Run bills a GPU job per second for the GPU plus the instance's CPU and memory
# (https://cloud.google.com/run/pricing; jobs use the "no zonal redundancy" GPU rate:
# https://cloud.google.com/run/docs/configuring/jobs/gpu). Vertex AI custom training bills
# the machine type plus each accelerator (https://cloud.google.com/vertex-ai/pricing).
# Only the first table of each Google page could be read here: Cloud Run's Tier 1 CPU rate for
# jobs ($0.000018 / vCPU-second, $0.0648 / vCPU-hour). The L4 figure is therefore a secondary
# one that agrees with it; the others were not found and stay None until an operator sets them.
PRICES: dict[str, TablePrice] = {
    # $0.67/h for the GPU plus ~$0.75/h for 8 vCPU and 32 GiB (var.trainer_gpu's default sizing):
    # 8 x $0.0648 (Google's CPU rate above) + 32 x $0.0072 (GiB-hour) = $0.749.
    "nvidia-l4": TablePrice(
        usd_per_gpu_hour=1.42,
        source=(
            "secondary: https://braindrip.blog/blueprints/deploy-gemma-to-cloud-run/"
            "01-deploy-gemma-to-cloud-run/06-costs-safety-and-teardown ($0.67/h L4 + ~$0.75/h "
            "for 8 vCPU / 32 GiB, per https://cloud.google.com/run/pricing; its CPU rate "
            "$0.000018/vCPU-s read there); GPU table itself not read"
        ),
    ),
    "nvidia-rtx-pro-6000": TablePrice(
        None, "not found: https://cloud.google.com/run/pricing (GPU table not read)"
    ),
    **{
        accelerator: TablePrice(
            None, "not found: https://cloud.google.com/vertex-ai/pricing (training table not read)"
        )
        for accelerator in (
            "NVIDIA_H200_141GB",
            "NVIDIA_H100_MEGA_80GB",
            "NVIDIA_H100_80GB",
            "NVIDIA_A100_80GB",
            "NVIDIA_TESLA_A100",
            "NVIDIA_L4",
        )
    },
}


@dataclass(frozen=True)
class PeakCompute:
    """Peak dense (no 2:4 sparsity) bf16 tensor TFLOPs of one GPU, from NVIDIA's datasheet."""

    bf16_tflops: float
    source: str


# NVIDIA quotes tensor TFLOPs "with sparsity"; dense is half of that figure.
_H100 = PeakCompute(989.0, "https://www.nvidia.com/en-us/data-center/h100/ (1,979 sparse, SXM)")
_A100 = PeakCompute(
    312.0,
    "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
    "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf (BF16 Tensor Core 312, 624 sparse)",
)
_L4 = PeakCompute(121.0, "https://www.nvidia.com/en-us/data-center/l4/ (BF16 242 sparse)")
PEAK_COMPUTE: dict[str, PeakCompute] = {
    "nvidia-l4": _L4,
    # Derived, not read: NVIDIA gives 4,000 AI TOPS (FP4, sparse) for the RTX PRO 6000
    # Blackwell; Blackwell halves the rate from FP4 to FP8 and from FP8 to BF16, and dense is
    # half of sparse (B200's datasheet: 18 PF FP4 sparse, 2.25 PF BF16 dense): 4,000 / 8.
    "nvidia-rtx-pro-6000": PeakCompute(
        500.0,
        "derived: https://www.nvidia.com/en-us/data-center/rtx-pro-6000-blackwell-server-edition/"
        " (4,000 FP4 AI TOPS sparse) / 8, Blackwell's FP4:BF16-dense ratio",
    ),
    "NVIDIA_H200_141GB": PeakCompute(
        989.0, "https://www.nvidia.com/en-us/data-center/h200/ (BF16 1,979 sparse, SXM)"
    ),
    "NVIDIA_H100_MEGA_80GB": _H100,  # the same H100 SXM; a3-megagpu adds network, not FLOPs
    "NVIDIA_H100_80GB": _H100,
    "NVIDIA_A100_80GB": _A100,
    "NVIDIA_TESLA_A100": _A100,
    "NVIDIA_L4": _L4,
}

# Model-FLOPs utilisation (model FLOPs per second over the peak). PaLM measured 46.2% training
# without rematerialisation (Chowdhery et al. 2022, https://arxiv.org/abs/2204.02311, Table 3);
# the trainer checkpoints activations, which redoes the forward (8N of work for 6N of model
# FLOPs: x0.75, about 35%), and fine-tuning's short rows and small batches lose some more.
MODEL_FLOPS_UTILIZATION = 0.30
# FSDP on one machine's NVLink: PyTorch FSDP scales near-linearly within a node (Zhao et al.
# 2023, https://arxiv.org/abs/2304.11277, section 7); assumed 85% of linear for the all-gathers
# and reduce-scatters not hidden behind compute.
MULTI_GPU_EFFICIENCY = 0.85
# QLoRA dequantises every NF4 weight in the forward and again in the backward (bitsandbytes,
# https://arxiv.org/abs/2305.14314): assumed 1.4x LoRA's time for the same FLOPs.
QLORA_SLOWDOWN = 1.4
# GRPO's time goes to generating completions (num_generations per prompt, one token at a time,
# memory-bound), not to the FLOPs of its update: assumed 10x SFT's time per prompt token, an
# order of magnitude that the deployment's history replaces after HISTORY_MIN_JOBS jobs.
GRPO_SLOWDOWN = 10.0

# Training FLOPs per token and parameter: forward 2N, backward 4N with weight gradients
# (Kaplan et al. 2020, https://arxiv.org/abs/2001.08361, section 2.1). A frozen base (LoRA,
# QLoRA) skips the weight gradients: 4N (the adapters' own FLOPs are under 1% of N).
_FLOPS_PER_PARAMETER = {"Full": 6.0, "LoRA": 4.0, "QLoRA": 4.0}
METHODS = tuple(_FLOPS_PER_PARAMETER)
TRAINER_TYPES = ("sft", "dpo", "orpo", "grpo")


def flops_per_token(parameters: int, *, method: str, trainer_type: str) -> float:
    """Training FLOPs (with QLoRA's and GRPO's slowdowns as FLOP-equivalents) per counted token.

    DPO and ORPO train on the chosen and the rejected answer of each pair (counted once in
    `tokens`): twice SFT's work; DPO adds a forward of the reference model over both (2 x 2N;
    under LoRA the same weights with the adapter off).
    """
    if method not in _FLOPS_PER_PARAMETER:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if trainer_type not in TRAINER_TYPES:
        raise ValueError(f"trainer_type must be one of {', '.join(TRAINER_TYPES)}")
    if parameters < 1:
        raise ValueError("parameters must be at least 1")
    per_token = _FLOPS_PER_PARAMETER[method] * parameters
    if method == "QLoRA":
        per_token *= QLORA_SLOWDOWN
    if trainer_type in ("dpo", "orpo"):
        per_token *= 2
    if trainer_type == "dpo":
        per_token += 2 * 2 * parameters
    if trainer_type == "grpo":
        per_token *= GRPO_SLOWDOWN
    return per_token


def table_tokens_per_second(
    gpu_type: str, gpu_count: int, *, parameters: int, method: str, trainer_type: str
) -> float | None:
    """Tokens a second a tier of `gpu_count` x `gpu_type` trains, by the table (None: unknown)."""
    peak = PEAK_COMPUTE.get(gpu_type)
    if peak is None:
        return None
    per_gpu = (
        peak.bf16_tflops
        * 1e12
        * MODEL_FLOPS_UTILIZATION
        / flops_per_token(parameters, method=method, trainer_type=trainer_type)
    )
    return per_gpu * scaling(gpu_count)


def scaling(gpu_count: int) -> float:
    """How many single GPUs `gpu_count` GPUs of one tier are worth."""
    return float(gpu_count) if gpu_count == 1 else gpu_count * MULTI_GPU_EFFICIENCY


def parameters_of(base_model_id: str) -> int | None:
    """The language model's parameters of a catalogued Google Gemma checkpoint (None: unlisted).

    What a text job's FLOPs scale with: the decoder and the (tied) embeddings, which are also
    the output projection; a vision tower does not run on text rows.
    """
    from tuning.estimates import ModelShape
    from tuning.model_catalog import catalog_config

    config = catalog_config(base_model_id)
    return ModelShape.from_config(config).language_parameters if config else None


# Operator overrides ---------------------------------------------------------------------------


class GpuPricing(BaseModel):
    """The operator's figures for one GPU type (Terraform `gpu_pricing`); either may be unset."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    usd_per_gpu_hour: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="All-in USD per GPU-hour: the machine (or Cloud Run's CPU and memory) "
        "divided by its GPUs, plus one GPU.",
    )
    tokens_per_second: float | None = Field(
        None,
        gt=0,
        le=1e9,
        description="Training tokens a second of one GPU, for every model and method "
        "(the deployment's history replaces it per model and method).",
    )

    @model_validator(mode="after")
    def _something_set(self) -> GpuPricing:
        if self.usd_per_gpu_hour is None and self.tokens_per_second is None:
            raise ValueError("set usd_per_gpu_hour, tokens_per_second or both")
        return self


OPERATOR_SOURCE = "the operator's gpu_pricing (GPU_PRICING)"


def parse_gpu_pricing(value: str | Mapping[str, Any]) -> dict[str, GpuPricing]:
    """`GPU_PRICING` (a JSON object: GPU type -> figures) or a dict; '' or '{}': none."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"GPU_PRICING is not JSON: {error}") from None
    if not isinstance(value, Mapping):
        raise ValueError("GPU_PRICING must be a JSON object: GPU type -> figures")
    parsed = {}
    for gpu_type, figures in value.items():
        try:
            parsed[str(gpu_type)] = GpuPricing.model_validate(figures)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, item['loc'])) or 'figures'}: {item['msg']}"
                for item in error.errors(include_url=False, include_input=False)
            )
            raise ValueError(f"GPU_PRICING {gpu_type}: {problems}") from None
    return parsed


# History --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThroughputKey:
    """What a measured throughput is kept under: the tier, base model, method and trainer type."""

    tier: str
    base_model_id: str
    method: str
    trainer_type: str

    @property
    def document_id(self) -> str:
        """A Firestore document id for the key (a model id holds '/', which ids cannot)."""
        raw = "\x1f".join((self.tier, self.base_model_id, self.method, self.trainer_type))
        return hashlib.sha256(raw.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class MeasuredThroughput:
    """The deployment's completed jobs of one key, aggregated: how many and their mean rate."""

    jobs: int
    tokens_per_second: float


class ThroughputHistory(Protocol):
    """Where measured throughputs are looked up (tuning/gcp/throughput.py: Firestore)."""

    def lookup(self, key: ThroughputKey) -> MeasuredThroughput | None: ...


def throughput_key(job: JobRecord) -> ThroughputKey | None:
    """The key a job's throughput is recorded under (None: it has no tier, recorded before)."""
    if job.placement is None:
        return None
    return ThroughputKey(
        tier=job.placement.tier,
        base_model_id=job.base_model_id,
        method=str(job.method),
        trainer_type=str(job.trainer_type),
    )


def measured_tokens_per_second(job: JobRecord) -> float | None:
    """The tokens a second a completed job trained, in `estimate_costs`'s units (None: unknown).

    From the final snapshot: the dataset's tokens per step (train_tokens x epochs / steps) times
    the steps of the last run (from `resumed_from_step`, if it resumed), over that run's
    `train_runtime`. The trainer's own `tokens_per_second` counts what TRL counts (both answers
    of a pair, GRPO's completions), so it is used only for SFT, where the two agree.
    """
    metrics, progress, stats = job.metrics, job.progress, job.dataset_stats
    runtime = metrics.train_runtime if metrics else None
    if not runtime or runtime <= 0:
        return None
    final_step = (metrics.step if metrics else None) or (progress.step if progress else 0)
    if stats and stats.train_tokens and progress and progress.epoch and progress.step:
        tokens_per_step = stats.train_tokens * progress.epoch / progress.step
        steps = final_step - (job.resumed_from_step or 0)
        if steps > 0:
            return tokens_per_step * steps / runtime
    if str(job.trainer_type) == "sft" and metrics and metrics.tokens_per_second:
        return metrics.tokens_per_second
    return None


# The estimate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierCost:
    """One tier's estimate: throughput and where it came from, time, cost and the price's source."""

    tier: str
    gpu_type: str
    gpu_count: int
    tokens_per_second: float | None  # the whole tier's, all its GPUs together
    throughput_source: str
    estimated_seconds: float | None
    estimated_cost_usd: float | None  # None without a price or a throughput
    usd_per_gpu_hour: float | None
    price_source: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (an API response, a Firestore field)."""
        return asdict(self)


def estimate_costs(
    tiers: Iterable[GpuTier],
    *,
    parameters: int,
    method: str,
    trainer_type: str,
    base_model_id: str,
    tokens: int,
    history: ThroughputHistory | None = None,
    prices: Mapping[str, GpuPricing] | None = None,
) -> list[TierCost]:
    """Training time and cost of the job on each tier, in the order given.

    `parameters`: the base model's language-model parameters (`parameters_of`, or
    `ModelShape.language_parameters` of its config.json). `tokens`: what it trains on over all
    epochs (module docstring). `history`: the deployment's measured throughputs (None: the
    tables only). `prices`: the operator's figures per GPU type (`ServiceSettings.gpu_pricing`).
    """
    if tokens < 0:
        raise ValueError("tokens must not be negative")
    flops_per_token(parameters, method=method, trainer_type=trainer_type)  # validates the inputs
    overrides = prices or {}
    return [
        _tier_cost(
            tier,
            parameters=parameters,
            method=method,
            trainer_type=trainer_type,
            base_model_id=base_model_id,
            tokens=tokens,
            history=history,
            override=overrides.get(tier.gpu_type),
        )
        for tier in tiers
    ]


def _tier_cost(
    tier: GpuTier,
    *,
    parameters: int,
    method: str,
    trainer_type: str,
    base_model_id: str,
    tokens: int,
    history: ThroughputHistory | None,
    override: GpuPricing | None,
) -> TierCost:
    rate, rate_source = _throughput(
        tier,
        parameters=parameters,
        method=method,
        trainer_type=trainer_type,
        base_model_id=base_model_id,
        history=history,
        override=override,
    )
    price: float | None
    if override is not None and override.usd_per_gpu_hour is not None:
        price, price_source = override.usd_per_gpu_hour, OPERATOR_SOURCE
    else:
        table = PRICES.get(tier.gpu_type)
        price = table.usd_per_gpu_hour if table else None
        price_source = (
            f"{table.source}; {table.region}, read {table.read_on}"
            if table
            else f"no price for {tier.gpu_type}: set it in gpu_pricing"
        )
    seconds = tokens / rate if rate else None
    cost = None
    if seconds is not None and price is not None:
        cost = round(seconds / 3600 * price * tier.gpu_count, 4)
    return TierCost(
        tier=tier.name,
        gpu_type=tier.gpu_type,
        gpu_count=tier.gpu_count,
        tokens_per_second=round(rate, 3) if rate else None,
        throughput_source=rate_source,
        estimated_seconds=round(seconds, 1) if seconds is not None else None,
        estimated_cost_usd=cost,
        usd_per_gpu_hour=price,
        price_source=price_source,
    )


def _throughput(
    tier: GpuTier,
    *,
    parameters: int,
    method: str,
    trainer_type: str,
    base_model_id: str,
    history: ThroughputHistory | None,
    override: GpuPricing | None,
) -> tuple[float | None, str]:
    """The tier's tokens a second and where the figure comes from.

    History counts only for Hub models: their names are public, while a `gs://` snapshot may
    be one team's, and an estimate's source switching to history (and its figure moving with
    each completion) would tell other callers when that team's jobs completed.
    """
    if history is not None and not base_model_id.startswith("gs://"):
        key = ThroughputKey(tier.name, base_model_id, str(method), str(trainer_type))
        measured = history.lookup(key)
        if measured is not None and measured.jobs >= HISTORY_MIN_JOBS:
            return measured.tokens_per_second, FROM_HISTORY
    if override is not None and override.tokens_per_second is not None:
        return override.tokens_per_second * scaling(tier.gpu_count), OPERATOR_SOURCE
    rate = table_tokens_per_second(
        tier.gpu_type,
        tier.gpu_count,
        parameters=parameters,
        method=method,
        trainer_type=trainer_type,
    )
    peak = PEAK_COMPUTE.get(tier.gpu_type)
    if rate is None or peak is None:
        return None, f"no throughput for {tier.gpu_type}: set it in gpu_pricing"
    per_parameter = flops_per_token(parameters, method=method, trainer_type=trainer_type)
    per_parameter /= parameters
    shared = ""
    if tier.gpu_count > 1:
        shared = f", {tier.gpu_count} GPUs at {MULTI_GPU_EFFICIENCY:g} efficiency"
    return rate, (
        f"table: {peak.bf16_tflops:g} bf16 TFLOPs ({peak.source}) x {MODEL_FLOPS_UTILIZATION:g} "
        f"MFU / {per_parameter:g}N FLOPs per token{shared}"
    )
