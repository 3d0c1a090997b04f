"""The job record (what `GET /jobs/{job_id}` shows) and its parts.

The record is stored in Firestore as `model_dump(mode="json")`; reading it
back ignores unknown fields so that a newer deployable's extra fields do not
break an older one. How events change it lives in `tuning.state`.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from tuning.ids import slug
from tuning.spec import Method, Modality, TrainerType, TrainRequest


class JobStatus(StrEnum):
    QUEUED = "queued"  # submitted; after validation, waiting for a GPU slot
    VALIDATING = "validating"  # its dataset checked and tokens counted, on CPU, before any GPU
    PREPARING = "preparing"
    TRAINING = "training"
    EXPORTING = "exporting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"  # stopped at the owner's request after a checkpoint; resume continues it

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def rank(self) -> int:
        """Position in the pipeline; every terminal status ranks last."""
        return _RANK[self]


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE_STATUSES = (JobStatus.PREPARING, JobStatus.TRAINING, JobStatus.EXPORTING)
_RANK = {
    JobStatus.PAUSED: 0,  # at rest, like queued: a resumed job is queued again
    JobStatus.QUEUED: 0,
    JobStatus.VALIDATING: 0,  # before any execution: no trainer event can follow it
    JobStatus.PREPARING: 1,
    JobStatus.TRAINING: 2,
    JobStatus.EXPORTING: 3,
    JobStatus.COMPLETED: 4,
    JobStatus.FAILED: 4,
    JobStatus.CANCELLED: 4,
}


class Part(BaseModel):
    """Base of the record's parts: tolerant when reading stored documents."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class ErrorType(StrEnum):
    USER = "user"  # bad dataset or config: retrying the same job cannot help
    SYSTEM = "system"  # infrastructure or our bug: the job may succeed if resubmitted


class JobError(Part):
    type: ErrorType
    message: str = Field(..., max_length=4000)
    code: str | None = Field(None, description="A stable machine-readable reason.")


class Progress(Part):
    step: int = Field(0, ge=0, description="Optimizer steps done (the global step).")
    total_steps: int | None = Field(None, ge=0)
    epoch: float | None = Field(None, ge=0)
    loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = Field(None, ge=0)
    eta_seconds: float | None = Field(None, ge=0, description="Estimated time to finish training.")
    metrics: dict[str, float] | None = Field(
        None,
        description="The method's training figures at this step: DPO/ORPO reward margins and "
        "log-odds, GRPO rewards per function (`rewards_<name>_mean`), KL when beta is above 0. "
        "Evaluation figures are in the job's `metrics`.",
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def percent(self) -> float | None:
        if not self.total_steps:
            return None
        return round(min(100.0, 100.0 * self.step / self.total_steps), 2)


class EvalScore(Part):
    """One built-in scorer's mean over the scored eval rows, for the base and the tuned model."""

    base: float | None = Field(
        None, ge=0, le=1, description="The base model's mean; null: its answers are unknown."
    )
    tuned: float = Field(..., ge=0, le=1, description="The fine-tuned model's mean.")
    rows: int = Field(..., ge=1, description="How many eval rows were scored.")


class Metrics(Part):
    """Evaluation and training figures; the seed's names first, trainer extras allowed."""

    model_config = ConfigDict(extra="allow", frozen=True)

    accuracy: float | None = Field(None, description="Token accuracy on shifted labels.")
    perplexity: float | None = Field(None, description="exp(eval_loss).")
    eval_loss: float | None = None
    eval_runtime: float | None = Field(None, description="Seconds spent evaluating.")
    train_loss: float | None = None
    train_runtime: float | None = None
    tokens_per_second: float | None = None
    step: int | None = Field(None, ge=0, description="The step these figures were taken at.")
    eval_scores: dict[str, EvalScore] | None = Field(
        None,
        description="Generated answers scored against the eval split's references, per "
        "built-in scorer (exact_match, numeric_match, format), base and fine-tuned "
        "(eval_config.scored_rows); set once training ends.",
    )


class Artifacts(Part):
    adapter_path: str | None = Field(None, description="gs:// prefix of the adapter or weights.")
    merged_path: str | None = Field(None, description="gs:// prefix of the merged 16-bit model.")
    gguf_path: str | None = Field(None, description="The first GGUF file written.")
    gguf_files: dict[str, str] = Field(default_factory=dict, description="quantization -> uri")
    hub_url: str | None = Field(None, description="The Hugging Face repo, for hfhub exports.")
    samples_path: str | None = Field(
        None, description="gs:// URI of the base and fine-tuned sample answers (JSONL)."
    )


class AttemptEnding(StrEnum):
    """Why a task attempt stopped before the job ended."""

    DEADLINE = "deadline"  # it checkpointed and stopped before its task timeout
    INTERRUPTED = "interrupted"  # SIGTERM (maintenance, a stop): it checkpointed if it could
    FAILED = "failed"  # it crashed, was killed or timed out; Cloud Run retried the task
    PAUSED = "paused"  # its owner paused the job: it checkpointed (if training) and stopped


class AttemptEnd(Part):
    """How the job's previous attempt ended, and where the next one goes on from."""

    attempt: int = Field(..., ge=0, description="The attempt that ended.")
    reason: AttemptEnding
    step: int | None = Field(None, ge=0, description="The last step it reported.")
    checkpoint_step: int | None = Field(
        None, ge=0, description="Its last complete checkpoint: where the next attempt resumes."
    )
    execution: str | None = Field(None, description="The execution it ran in.")
    at: datetime | None = None


class DatasetStats(Part):
    train_rows: int = Field(0, ge=0)
    eval_rows: int = Field(0, ge=0)
    train_tokens: int = Field(0, ge=0)
    truncated_rows: int = Field(0, ge=0)


class SplitCounts(Part):
    """One split as the validation before any GPU read it."""

    source: str = Field(..., description="The split file, or how the eval rows were held out.")
    rows: int = Field(..., ge=0)
    tokens: int | None = Field(
        None, ge=0, description="Tokens trained on (each row cut at its limit); null: not counted."
    )
    truncated_rows: int | None = Field(None, ge=0, description="Rows longer than the limit.")
    longest: int | None = Field(None, ge=0, description="The longest row, in tokens.")


class Validation(Part):
    """What the validation before any GPU found (`validating`), and the training it implies."""

    row_format: str
    train: SplitCounts
    eval: SplitCounts | None = Field(None, description="Null: evaluation is off.")
    token_limit: int = Field(..., description="max_seq_length (GRPO: max_prompt_length).")
    tokens_note: str | None = Field(
        None, description="Why tokens were not counted (the trainer counts them then)."
    )
    packed_rows: int | None = Field(
        None, ge=0, description="Training sequences after packing (packing jobs)."
    )
    steps_per_epoch: int | None = Field(None, ge=0)
    total_steps: int | None = Field(None, ge=0)
    tokens_to_train: int | None = Field(
        None, ge=0, description="Tokens over every epoch (or max_steps' share of them)."
    )
    validated_at: datetime | None = None


class Placement(Part):
    """The GPU tier a job trains on and the memory estimate that chose it."""

    tier: str
    gpu_type: str
    gpu_count: int = Field(1, ge=1)
    gpu_memory_bytes: int = Field(..., ge=0, description="What one GPU of the tier holds.")
    estimate_bytes: int | None = Field(
        None, ge=0, description="Estimated peak memory per GPU; null: the trainer checks."
    )
    estimate: dict[str, int] | None = Field(
        None, description="The estimate by part, in bytes (weights, gradients, optimizer...)."
    )
    estimated_from: str | None = Field(None, description="Which model config it was made from.")


class Lineage(Part):
    """The earlier job a job continues from (`training_config.from_job`)."""

    parent_job_id: str
    parent_step: int | None = Field(
        None, ge=0, description="The parent's checkpoint step; null: its final model."
    )
    weights: str = Field(..., description="gs:// folder of the adapter or weights it starts from.")


class JobRecord(BaseModel):
    """One fine-tuning job as stored in Firestore under `jobs/{job_id}`."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    job_name: str
    owner: str | None = Field(None, description="The caller's identity (email or subject).")
    status: JobStatus = JobStatus.QUEUED
    status_reason: str | None = Field(None, description="Why the job waits or was stopped.")
    modality: Modality = Modality.TEXT
    base_model_id: str
    processed_dataset_id: str
    trainer_type: TrainerType = TrainerType.SFT
    method: Method = Method.QLORA
    created_at: datetime
    updated_at: datetime
    request_id: str | None = Field(None, description="The idempotency key it was created with.")
    request_fingerprint: str | None = Field(
        None, description="Hash of the request without secrets: a reused key must match it."
    )
    config_uri: str | None = None
    lineage: Lineage | None = Field(
        None, description="The earlier job it continues from, and from which of its weights."
    )
    placement: Placement | None = Field(
        None, description="Its GPU tier and memory estimate (null: recorded before tiers)."
    )
    secret_references: dict[str, str] = Field(
        default_factory=dict, description="Secret Manager versions; never the values."
    )
    attempt: int = Field(
        0,
        ge=0,
        description="The attempt now reporting, counted over every execution of the job "
        "(a job longer than one task continues in a new execution, attempts numbered on).",
    )
    execution: str | None = Field(None, description="The Cloud Run execution running the job.")
    executions: int = Field(0, ge=0, description="How many executions the job has run in.")
    handoff: AttemptEnd | None = Field(
        None,
        description="Set while the job waits for the next execution to continue it: the "
        "attempt that stopped at its task deadline (or was interrupted) after a checkpoint.",
    )
    last_attempt_end: AttemptEnd | None = Field(
        None, description="Why the previous attempt ended (deadline, interruption, failure)."
    )
    resumed_from_step: int | None = Field(
        None, ge=0, description="The checkpoint step the current attempt resumed from."
    )
    dispatch_claim: str | None = Field(
        None, description="The dispatch delivery that holds the right to launch the job."
    )
    dispatch_claimed_at: datetime | None = None
    dispatched_at: datetime | None = Field(None, description="When its execution was started.")
    requeued_at: datetime | None = Field(
        None, description="When reconcile last re-published the job for dispatch."
    )
    pause_requested_at: datetime | None = Field(
        None,
        description="When its owner asked to pause it; set while the trainer checkpoints and "
        "stops (the job is pausing) and while it is paused, cleared by resume.",
    )
    paused_at: datetime | None = Field(None, description="When the job was last paused.")
    last_event_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress | None = None
    metrics: Metrics | None = None
    artifacts: Artifacts = Field(default_factory=Artifacts)
    dataset_stats: DatasetStats | None = None
    validation: Validation | None = Field(
        None, description="The validation before any GPU: rows, tokens and steps per split."
    )
    validation_started_at: datetime | None = Field(
        None, description="When its latest validation try began."
    )
    validation_attempts: int = Field(
        0, ge=0, description="Validation tries begun (one that died is retried, a few times)."
    )
    estimate: dict[str, Any] | None = Field(
        None,
        description="GPU time and cost estimated before training (tuning.pricing), kept to "
        "compare with the actual run.",
    )
    wandb_url: str | None = None
    error: JobError | None = None

    def to_document(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> JobRecord:
        return cls.model_validate(document)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id(dataset_id: str, base_model_id: str, *, suffix: str | None = None) -> str:
    """A readable id in the seed's shape: `training_{dataset}_{model}_{suffix}`.

    The suffix is random, or derived by the caller from something stable and
    non-secret (an idempotency key, a Pub/Sub message id); never from a token.
    """
    model_name = base_model_id.rstrip("/").rsplit("/", 1)[-1]
    tail = suffix if suffix is not None else secrets.token_hex(6)
    return f"training_{slug(dataset_id, 32)}_{slug(model_name, 40)}_{slug(tail, 24)}"


def stable_suffix(*parts: str) -> str:
    """A short suffix that is the same for the same parts (none of them secret)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]


def new_job_record(
    request: TrainRequest,
    *,
    job_id: str,
    owner: str | None,
    config_uri: str | None,
    secret_references: dict[str, str],
    placement: Placement | None = None,
    lineage: Lineage | None = None,
    now: datetime | None = None,
) -> JobRecord:
    """The `queued` record for a validated request (secret values never reach it)."""
    created = now or utcnow()
    config = request.training_config
    return JobRecord(
        job_id=job_id,
        job_name=request.job_name or job_id,
        owner=owner,
        modality=config.modality,
        base_model_id=config.base_model_id,
        processed_dataset_id=request.processed_dataset_id,
        trainer_type=config.trainer_type,
        method=config.method,
        created_at=created,
        updated_at=created,
        request_id=request.request_id,
        request_fingerprint=request.fingerprint(),
        config_uri=config_uri,
        secret_references=secret_references,
        placement=placement,
        lineage=lineage,
    )
