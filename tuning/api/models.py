"""What the HTTP API answers, and the query parameters it accepts (pydantic v2).

Field names follow the seed service where it had them. The OpenAPI document is
generated from these models, so their descriptions are the API's reference.
A job's `secret_references`, `config_uri` and request fingerprint are internal
and appear in no response model.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from tuning.events import JobEvent
from tuning.jobs import (
    Artifacts,
    AttemptEnd,
    DatasetStats,
    EvalScore,
    JobError,
    JobRecord,
    JobStatus,
    Lineage,
    Metrics,
    Placement,
    Progress,
    Validation,
)
from tuning.samples import SampleLine
from tuning.spec import GgufQuantization, Method, Modality, TrainerType, field_error
from tuning.tiers import Engine, GpuTier

MAX_PAGE_TOKEN_LENGTH = 1000


class Answer(BaseModel):
    """Base of every response model."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Query(BaseModel):
    """Base of query-parameter models: an unknown or misspelt parameter is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# Responses -----------------------------------------------------------------


class Problem(Answer):
    field: str = Field(..., description="Dotted path of the field, empty for the whole body.")
    message: str


class ErrorDetail(Answer):
    code: str = Field(..., description="Stable machine-readable reason, e.g. `not_found`.")
    message: str = Field(..., description="What went wrong and, where it helps, how to fix it.")
    field: str | None = Field(None, description="The request field to fix, when one is to blame.")
    details: list[Problem] | None = Field(None, description="Every problem, when several.")


class ErrorResponse(Answer):
    """Every 4xx and 503 answer."""

    error: ErrorDetail


class Health(Answer):
    status: Literal["ok"] = "ok"
    function: str = Field(..., description="Which function answered.")


class TierView(Answer):
    name: str = Field(..., description="What `training_config.compute.tier` names.")
    engine: Engine
    gpu_type: str
    gpu_count: int
    gpu_memory_gib: float = Field(..., description="Memory of one of its GPUs.")
    max_concurrent_jobs: int = Field(..., description="Jobs it trains at once.")

    @classmethod
    def of(cls, tier: GpuTier) -> TierView:
        return cls(
            name=tier.name,
            engine=tier.engine,
            gpu_type=tier.gpu_type,
            gpu_count=tier.gpu_count,
            gpu_memory_gib=tier.gpu_memory_gib,
            max_concurrent_jobs=tier.max_concurrent_jobs,
        )


class TierList(Answer):
    """`GET /tiers`: the GPU tiers of the deployment, smallest first."""

    tiers: list[TierView]


class SubmitResponse(Answer):
    job_id: str = Field(..., description="The job's id; the same id when a submit is replayed.")
    status: JobStatus = Field(..., description="`queued` for a new job; the current status.")


class JobSummary(Answer):
    """One item of `GET /jobs`: the seed's list fields plus timestamps."""

    job_id: str
    job_name: str
    base_model_id: str
    status: JobStatus
    modality: Modality
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, job: JobRecord) -> JobSummary:
        return cls(
            job_id=job.job_id,
            job_name=job.job_name,
            base_model_id=job.base_model_id,
            status=job.status,
            modality=job.modality,
            created_at=job.created_at,
            updated_at=job.updated_at,
        )


class JobList(Answer):
    jobs: list[JobSummary] = Field(..., description="Newest first.")
    next_page_token: str | None = Field(
        None, description="Pass as `page_token` for the next page; null on the last page."
    )


class JobDetail(Answer):
    """`GET /jobs/{job_id}`: the seed's fields, then progress, artifacts and execution."""

    job_id: str
    job_name: str
    status: JobStatus
    status_reason: str | None = Field(None, description="Why the job waits or was stopped.")
    modality: Modality
    wandb_url: str | None = None
    adapter_path: str | None = Field(
        None, description="gs:// prefix of the trained adapter (or the merged model)."
    )
    base_model_id: str
    gguf_path: str | None = Field(None, description="gs:// URI of the first GGUF file.")
    metrics: Metrics | None = Field(None, description="Latest evaluation and training figures.")
    error: JobError | None = Field(
        None,
        description="Why the job failed; `type` says whether the user or the system is to blame.",
    )
    processed_dataset_id: str
    trainer_type: TrainerType
    method: Method
    owner: str | None = Field(None, description="Who submitted the job.")
    created_at: datetime
    updated_at: datetime
    dispatched_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress | None = None
    artifacts: Artifacts
    dataset_stats: DatasetStats | None = None
    attempt: int = Field(
        ...,
        description="The attempt now reporting, counted over the job's executions: a job "
        "longer than one task continues in a new execution from its latest checkpoint.",
    )
    execution: str | None = Field(None, description="The execution running the job.")
    executions: int = Field(0, description="How many executions the job has run in.")
    last_attempt_end: AttemptEnd | None = Field(
        None,
        description="Why the previous attempt ended: `deadline` (it checkpointed before the "
        "task timeout), `interrupted` (SIGTERM), `failed` (a crash; Cloud Run retried) or "
        "`paused` (its owner paused the job; `step` is where it stopped).",
    )
    pause_requested_at: datetime | None = Field(
        None,
        description="When a pause was asked for: set while the job is pausing (its trainer "
        "saves a checkpoint and stops) and while it is paused; cleared by resume.",
    )
    paused_at: datetime | None = Field(None, description="When the job was last paused.")
    resumed_from_step: int | None = Field(
        None, description="The checkpoint step the current attempt resumed from."
    )
    placement: Placement | None = Field(
        None, description="The GPU tier the job trains on and the memory estimate behind it."
    )
    lineage: LineageView | None = Field(
        None, description="The earlier job it continues (`training_config.from_job`)."
    )
    validation: Validation | None = Field(
        None,
        description="What the validation before any GPU found (status `validating`): rows, "
        "tokens and truncated rows per split, steps per epoch and in total.",
    )
    estimate: EstimateVsActual | None = Field(
        None, description="The GPU time and cost estimated before training, beside the actual."
    )

    @classmethod
    def from_record(cls, job: JobRecord) -> JobDetail:
        artifacts = job.artifacts
        return cls(
            job_id=job.job_id,
            job_name=job.job_name,
            status=job.status,
            status_reason=job.status_reason,
            modality=job.modality,
            wandb_url=job.wandb_url,
            # The seed reported the model's folder here whichever format was exported.
            adapter_path=artifacts.adapter_path or artifacts.merged_path,
            base_model_id=job.base_model_id,
            gguf_path=artifacts.gguf_path,
            metrics=job.metrics,
            error=job.error,
            processed_dataset_id=job.processed_dataset_id,
            trainer_type=job.trainer_type,
            method=job.method,
            owner=job.owner,
            created_at=job.created_at,
            updated_at=job.updated_at,
            dispatched_at=job.dispatched_at,
            finished_at=job.finished_at,
            progress=job.progress,
            artifacts=artifacts,
            dataset_stats=job.dataset_stats,
            attempt=job.attempt,
            execution=job.execution,
            executions=job.executions,
            last_attempt_end=job.last_attempt_end,
            pause_requested_at=job.pause_requested_at,
            paused_at=job.paused_at,
            resumed_from_step=job.resumed_from_step,
            placement=job.placement,
            lineage=LineageView.of(job.lineage) if job.lineage else None,
            validation=job.validation,
            estimate=EstimateVsActual.of(job),
        )


class EstimateVsActual(Answer):
    """The job's estimate on its own tier, and what the run measured once it trained."""

    tier: str | None = None
    estimated_seconds: float | None = Field(None, description="Training time estimated.")
    estimated_cost_usd: float | None = None
    estimated_steps: int | None = None
    estimated_tokens: int | None = Field(None, description="Tokens over every epoch.")
    actual_seconds: float | None = Field(None, description="train_runtime, once trained.")
    actual_steps: int | None = None
    actual_tokens_per_second: float | None = None
    tiers: list[dict[str, Any]] = Field(
        default_factory=list, description="Every tier's estimate (tuning.pricing.TierCost)."
    )
    note: str | None = None

    @classmethod
    def of(cls, job: JobRecord) -> EstimateVsActual | None:
        estimate = job.estimate
        if not estimate:
            return None
        tiers = [tier for tier in estimate.get("tiers") or [] if isinstance(tier, dict)]
        own = next((tier for tier in tiers if tier.get("tier") == estimate.get("tier")), {})
        metrics = job.metrics
        return cls(
            tier=estimate.get("tier"),
            estimated_seconds=own.get("estimated_seconds"),
            estimated_cost_usd=own.get("estimated_cost_usd"),
            estimated_steps=estimate.get("steps"),
            estimated_tokens=estimate.get("tokens"),
            actual_seconds=metrics.train_runtime if metrics else None,
            actual_steps=job.progress.step if job.progress and job.status.is_terminal else None,
            actual_tokens_per_second=metrics.tokens_per_second if metrics else None,
            tiers=tiers,
            note=estimate.get("note"),
        )


class EstimateResponse(Answer):
    """`POST /train:estimate`: what the job would train on, where, how long and at what cost."""

    placement: Placement = Field(..., description="The tier chosen and its memory estimate.")
    validation: Validation = Field(..., description="Rows, tokens and steps, as validated.")
    estimate: dict[str, Any] = Field(
        ...,
        description="`tokens` and `steps` to train, and `tiers`: per tier the caller may use "
        "(the chosen one first), tokens/s and where that figure came from, seconds and USD "
        "with the price's source; `note` when time or cost cannot be estimated.",
    )


class LineageView(Answer):
    parent_job_id: str = Field(..., description="The job it continues from.")
    parent_step: int | None = Field(
        None, description="The parent's checkpoint it started from; null: its final model."
    )

    @classmethod
    def of(cls, lineage: Lineage) -> LineageView:
        return cls(parent_job_id=lineage.parent_job_id, parent_step=lineage.parent_step)


class EventList(Answer):
    events: list[JobEvent] = Field(..., description="Applied lifecycle events, oldest first.")
    next_page_token: str | None = None


class ArtifactKind(StrEnum):
    GGUF = "gguf"
    ADAPTER = "adapter"
    MERGED = "merged"
    CHECKPOINT = "checkpoint"  # one of the job's checkpoints (`?checkpoint=STEP`)


class CheckpointView(Answer):
    """One complete checkpoint of a job, as `GET /jobs/{job_id}/checkpoints` lists it."""

    step: int = Field(..., ge=0, description="The optimizer step it was saved at.")
    epoch: float | None = Field(None, description="Epochs done then (fractional mid-epoch).")
    created_at: AwareDatetime | None = Field(None, description="When it was complete.")
    train_loss: float | None = Field(None, description="The last training loss logged by then.")
    eval_step: int | None = Field(None, description="The step of `eval_metrics`.")
    eval_metrics: dict[str, float] = Field(
        default_factory=dict,
        description="The nearest evaluation at or before `step` (e.g. `eval_loss`); empty "
        "when none ran by then.",
    )
    size_bytes: int | None = Field(None, description="Every file of it, training state included.")


class CheckpointList(Answer):
    checkpoints: list[CheckpointView] = Field(..., description="Newest first.")
    next_page_token: str | None = None


class SampleList(Answer):
    """`GET /jobs/{job_id}/samples`: the base and the fine-tuned model's answers to the same
    prompts, made at the end of training (`eval_config.samples`)."""

    job_id: str
    samples: list[SampleLine] = Field(
        ...,
        description="One per distinct prompt: the sample prompts first, then the other "
        "scored eval rows.",
    )
    eval_scores: dict[str, EvalScore] | None = Field(
        None, description="The job's `metrics.eval_scores`, when it scored any rows."
    )


class DownloadFile(Answer):
    path: str = Field(..., description="The file's name relative to the artifact's folder.")
    download_url: str


class DownloadLinks(Answer):
    """Short-lived V4 signed URLs for one artifact of a completed job, or for one checkpoint
    of a job."""

    job_id: str
    artifact: ArtifactKind
    checkpoint: int | None = Field(None, description="The checkpoint's step, for `checkpoint`.")
    download_url: str = Field(
        ...,
        description="The artifact's main file: the GGUF file, or the first weights file "
        "(`*.safetensors`) of the adapter, merged or checkpoint folder.",
    )
    expires_at: AwareDatetime
    files: list[DownloadFile] = Field(
        ..., description="Every file of the artifact (one for GGUF), each with its own URL."
    )


class DeleteResponse(Answer):
    """The seed's response to `DELETE /jobs/{job_id}`."""

    job_id: str
    deleted: bool
    message: str
    deleted_resources: list[str] = Field(
        ..., description="GCS prefixes and objects, secrets and the job record that were removed."
    )


# Query parameters ----------------------------------------------------------


class NoQuery(Query):
    """Operations that take no query parameters reject any they are given."""


class ListJobsQuery(Query):
    # The seed listed every job; the largest page keeps small deployments seeing them all.
    limit: int = Field(100, ge=1, le=100, description="Jobs per page.")
    page_token: str | None = Field(
        None, min_length=1, max_length=MAX_PAGE_TOKEN_LENGTH, description="From `next_page_token`."
    )
    status: JobStatus | None = Field(None, description="Only jobs in this status.")


class EventsQuery(Query):
    limit: int = Field(100, ge=1, le=1000, description="Events per page.")
    page_token: str | None = Field(
        None, min_length=1, max_length=MAX_PAGE_TOKEN_LENGTH, description="From `next_page_token`."
    )


class DownloadQuery(Query):
    artifact: ArtifactKind | None = Field(
        None,
        description="Which artifact to download: `gguf` when omitted, `checkpoint` when "
        "`checkpoint` is given.",
    )
    quantization: GgufQuantization | None = Field(
        None, description="For `gguf`: which GGUF file; the first one written when omitted."
    )
    checkpoint: int | None = Field(
        None,
        ge=0,
        description="The step of one of the job's checkpoints (`GET /jobs/{job_id}/"
        "checkpoints`): its weights or adapter, without the optimizer and RNG state. The "
        "job need not be completed.",
    )

    @model_validator(mode="after")
    def _one_artifact(self) -> DownloadQuery:
        if self.quantization is not None and self.kind is not ArtifactKind.GGUF:
            raise field_error("quantization", "quantization applies to artifact=gguf only")
        if self.checkpoint is not None and self.kind is not ArtifactKind.CHECKPOINT:
            raise field_error("checkpoint", "checkpoint downloads a checkpoint: leave artifact out")
        if self.kind is ArtifactKind.CHECKPOINT and self.checkpoint is None:
            raise field_error("checkpoint", "artifact=checkpoint needs checkpoint=STEP")
        return self

    @property
    def kind(self) -> ArtifactKind:
        if self.artifact is not None:
            return self.artifact
        return ArtifactKind.GGUF if self.checkpoint is None else ArtifactKind.CHECKPOINT


class CheckpointsQuery(Query):
    limit: int = Field(20, ge=1, le=100, description="Checkpoints per page.")
    page_token: str | None = Field(
        None, min_length=1, max_length=MAX_PAGE_TOKEN_LENGTH, description="From `next_page_token`."
    )
