"""Environment -> one frozen settings object per deployable, read once.

Variable names follow the seed service where it had them (`PROJECT_ID`,
`REGION`, `GCS_CONFIG_BUCKET_NAME`); Terraform sets them in production and
the local stack writes them to `.local/stack.env`. A missing or malformed
variable fails at start-up with a message that names it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from tuning.errors import TuningError
from tuning.layout import StorageLayout
from tuning.pricing import GpuPricing, parse_gpu_pricing
from tuning.tiers import GpuTier, legacy_tier, parse_tiers


class SettingsError(TuningError):
    """The deployable's environment is incomplete or malformed."""

    code = "misconfigured"


class SecretBackend(StrEnum):
    SECRET_MANAGER = "secretmanager"
    LOCAL = "local"


class LauncherBackend(StrEnum):
    CLOUD_RUN = "cloudrun"
    LOCAL = "local"


def env(name: str, *more: str) -> Any:
    """Bind a field to one or more environment variable names (first wins)."""
    return AliasChoices(name, *more)


class ServiceSettings(BaseModel):
    """What every deployable needs: project, buckets, topics, the jobs collection."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    project_id: str = Field(
        ..., min_length=1, validation_alias=env("PROJECT_ID", "GOOGLE_CLOUD_PROJECT")
    )
    region: str = Field("us-central1", validation_alias=env("REGION"))
    config_bucket: str = Field(..., min_length=3, validation_alias=env("GCS_CONFIG_BUCKET_NAME"))
    data_bucket: str = Field(..., min_length=3, validation_alias=env("GCS_DATA_BUCKET_NAME"))
    models_bucket: str = Field(..., min_length=3, validation_alias=env("GCS_MODELS_BUCKET_NAME"))
    requests_topic: str = Field(
        "training-requests", validation_alias=env("TRAINING_REQUESTS_TOPIC")
    )
    events_topic: str = Field("job-events", validation_alias=env("JOB_EVENTS_TOPIC"))
    notifications_topic: str = Field(
        "job-notifications", validation_alias=env("JOB_NOTIFICATIONS_TOPIC")
    )
    jobs_collection: str = Field("training_jobs", validation_alias=env("JOBS_COLLECTION"))
    secret_backend: SecretBackend = Field(
        SecretBackend.SECRET_MANAGER, validation_alias=env("SECRET_BACKEND")
    )
    secret_prefix: str = Field(
        "tuning-", pattern=r"^[A-Za-z0-9_-]{1,40}$", validation_alias=env("SECRET_PREFIX")
    )
    # Where a gs:// base_model_id may point besides the models bucket's base_models/
    # (tuning/tenancy.py): comma-separated gs://bucket/ or gs://bucket/prefix/. Submit,
    # dispatch and the trainer all check it; jobs' outputs stay refused whatever is listed.
    allowed_base_model_locations: tuple[str, ...] = Field(
        (), validation_alias=env("ALLOWED_BASE_MODEL_LOCATIONS")
    )
    # The GPU tiers jobs train on (tuning/tiers.py): Terraform's gpu_tiers as JSON. Unset:
    # the one Cloud Run tier below (the trainer job, its GPU type, its concurrency).
    gpu_tiers: tuple[GpuTier, ...] = Field((), validation_alias=env("GPU_TIERS"))
    trainer_job_name: str = Field("gemma-trainer", validation_alias=env("TRAINER_JOB_NAME"))
    trainer_gpu_type: str = Field("nvidia-l4", validation_alias=env("TRAINER_GPU_TYPE"))
    max_concurrent_jobs: int = Field(4, ge=1, le=1000, validation_alias=env("MAX_CONCURRENT_JOBS"))
    # The operator's GPU prices and throughputs for estimates (tuning/pricing.py): Terraform's
    # gpu_pricing as JSON, GPU type -> {usd_per_gpu_hour, tokens_per_second}. Unset: the tables.
    gpu_pricing: dict[str, GpuPricing] = Field(
        default_factory=dict, validation_alias=env("GPU_PRICING")
    )
    # Where completed jobs' measured throughput is kept (tuning/gcp/throughput.py); unset:
    # `<JOBS_COLLECTION>_throughput`, so that a stack's own collection names keep it apart.
    throughput_collection: str | None = Field(None, validation_alias=env("THROUGHPUT_COLLECTION"))

    @field_validator("allowed_base_model_locations", mode="before")
    @classmethod
    def _locations_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_base_model_locations")
    @classmethod
    def _locations_format(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from tuning.tenancy import parse_location

        for location in value:
            parse_location(location)  # ValueError names the entry and the rule
        return value

    @field_validator("gpu_tiers", mode="before")
    @classmethod
    def _tiers_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_tiers(value) if value.strip() else ()
        return value

    @field_validator("gpu_pricing", mode="before")
    @classmethod
    def _pricing_json(cls, value: Any) -> Any:
        return parse_gpu_pricing(value) if isinstance(value, str | Mapping) else value

    @property
    def throughput_collection_name(self) -> str:
        return self.throughput_collection or f"{self.jobs_collection}_throughput"

    @property
    def tiers(self) -> tuple[GpuTier, ...]:
        """The declared tiers, or the one tier of a deployment that declares none."""
        if self.gpu_tiers:
            return self.gpu_tiers
        return (
            legacy_tier(
                trainer_job_name=self.trainer_job_name,
                gpu_type=self.trainer_gpu_type,
                max_concurrent_jobs=self.max_concurrent_jobs,
            ),
        )

    def tier(self, name: str | None) -> GpuTier:
        """A job's tier by name (None: a job recorded before tiers, on the first tier)."""
        tiers = self.tiers
        if name is None:
            return tiers[0]
        for tier in tiers:
            if tier.name == name:
                return tier
        raise SettingsError(f"GPU_TIERS has no tier '{name}' (a job names it)")

    @property
    def layout(self) -> StorageLayout:
        return StorageLayout(
            data_bucket=self.data_bucket,
            config_bucket=self.config_bucket,
            models_bucket=self.models_bucket,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Read the settings, failing with the name of every bad variable."""
        source = dict(os.environ if environ is None else environ)
        try:
            return cls.model_validate(source)
        except ValidationError as error:
            names = [
                f"{_variable_names(cls, str(item['loc'][0]))} ({item['msg']})"
                for item in error.errors(include_url=False, include_input=False)
            ]
            raise SettingsError(
                f"{cls.__name__}: environment variable(s) missing or invalid: " + "; ".join(names)
            ) from None


def _variable_names(settings: type[BaseModel], reported: str) -> str:
    """All the variables that can set the field an error reports under `reported`."""
    for field in settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices) and reported in alias.choices:
            return " or ".join(map(str, alias.choices))
    return reported


class ApiSettings(ServiceSettings):
    """The HTTP functions: submit, status, delete."""

    owner_scoping: bool = Field(False, validation_alias=env("OWNER_SCOPING"))
    # Audiences (the functions' URLs) for which a token Cloud Run did NOT check is verified
    # against Google's certificates; empty: such tokens are refused (tuning/identity.py).
    id_token_audiences: tuple[str, ...] = Field((), validation_alias=env("ID_TOKEN_AUDIENCES"))

    @field_validator("id_token_audiences", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    signed_url_ttl_seconds: int = Field(
        900, ge=60, le=604800, validation_alias=env("SIGNED_URL_TTL_SECONDS")
    )


class LauncherSettings(ServiceSettings):
    """Deployables that start, inspect or stop trainer executions."""

    launcher: LauncherBackend = Field(LauncherBackend.CLOUD_RUN, validation_alias=env("LAUNCHER"))
    # Slots one owner's jobs may hold at once; 0: any number up to max_concurrent_jobs.
    max_concurrent_jobs_per_owner: int = Field(
        0, ge=0, le=1000, validation_alias=env("MAX_CONCURRENT_JOBS_PER_OWNER")
    )
    # Reconcile only ever fails a job whose execution has *ended*, so a short threshold
    # makes it look sooner, never fail a running job; tests and the local stack use seconds.
    stale_after_seconds: int = Field(900, ge=1, validation_alias=env("RECONCILE_STALE_SECONDS"))
    # A running execution silent this long is hung (a deadlock, a stuck download): reconcile
    # cancels it and fails the job rather than let it hold a GPU until the task timeout.
    # 0: never. Must exceed the longest silent phase (a large model's export).
    stalled_after_seconds: int = Field(0, ge=0, validation_alias=env("RECONCILE_STALLED_SECONDS"))
    # The local launcher (LAUNCHER=local) only: what it runs, where it keeps executions,
    # and how often it restarts a failed task (Cloud Run's max_retries lives in Terraform).
    # Cloud Run's task timeout for the trainer (Terraform's trainer_task_timeout_seconds):
    # the launcher sets it on each execution and tells the trainer, which checkpoints and
    # hands the job to a new execution shortly before it (trainer/handoff.py).
    trainer_task_timeout_seconds: int = Field(
        3600, ge=1, le=604800, validation_alias=env("TRAINER_TASK_TIMEOUT_SECONDS")
    )
    # How many executions one job may run in (each at most one task timeout of training,
    # plus Cloud Run's retries of failed attempts): bounds a job's total time on a GPU.
    max_job_executions: int = Field(24, ge=1, le=50, validation_alias=env("TRAINER_MAX_EXECUTIONS"))
    # Vertex AI tiers run the trainer image as custom jobs under the trainer's account; a
    # Cloud Run tier's job template holds both instead (terraform/trainer.tf).
    trainer_image: str | None = Field(None, validation_alias=env("TRAINER_IMAGE"))
    trainer_service_account: str | None = Field(
        None, validation_alias=env("TRAINER_SERVICE_ACCOUNT")
    )
    local_trainer_command: str | None = Field(
        None,
        validation_alias=env("LOCAL_TRAINER_COMMAND"),
        description="python -m trainer if unset",
    )
    local_launcher_dir: str = Field(".local/executions", validation_alias=env("LOCAL_LAUNCHER_DIR"))
    trainer_max_retries: int = Field(3, ge=0, le=10, validation_alias=env("TRAINER_MAX_RETRIES"))


class TrainerSettings(ServiceSettings):
    """The Cloud Run job: which job to run and which task attempt this is."""

    job_id: str = Field(
        ..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$", validation_alias=env("JOB_ID")
    )
    attempt: int = Field(0, ge=0, validation_alias=env("CLOUD_RUN_TASK_ATTEMPT"))
    # Attempts the job made in its earlier executions (the launcher sets it on a
    # continuation), so that its events number attempts over the whole job.
    attempt_base: int = Field(0, ge=0, le=900, validation_alias=env("TRAINER_ATTEMPT_BASE"))
    execution: str | None = Field(None, validation_alias=env("CLOUD_RUN_EXECUTION"))
    work_dir: str = Field("/tmp/tuning", validation_alias=env("TRAINER_WORK_DIR"))  # noqa: S108
    # Must equal the Cloud Run job's max_retries: the attempt with this index is the last one,
    # so the trainer reports a system failure itself instead of asking for another retry.
    max_retries: int = Field(3, ge=0, le=10, validation_alias=env("TRAINER_MAX_RETRIES"))
    progress_interval_seconds: float = Field(
        30.0, ge=0, validation_alias=env("TRAINER_PROGRESS_INTERVAL_SECONDS")
    )
    # How often a training attempt reads its job record to learn that it was cancelled,
    # deleted or superseded by another execution; at most this long on a GPU for nothing.
    job_check_interval_seconds: float = Field(
        60.0, ge=0, validation_alias=env("TRAINER_JOB_CHECK_SECONDS")
    )

    # The task's timeout as the launcher set it (unset: no deadline, e.g. a manual run).
    task_timeout_seconds: float | None = Field(
        None, gt=0, validation_alias=env("TRAINER_TASK_TIMEOUT_SECONDS")
    )
    # A checkpoint at least this often (wall clock) while training, whatever save_steps
    # says, so that an interruption loses at most this much work. 0: only save_steps.
    checkpoint_interval_seconds: float = Field(
        600.0, ge=0, validation_alias=env("TRAINER_CHECKPOINT_INTERVAL_SECONDS")
    )
    # The least time kept before the task deadline for the last checkpoint and its upload;
    # the trainer keeps more when its measured checkpoints take longer.
    deadline_reserve_seconds: float = Field(
        120.0, ge=0, validation_alias=env("TRAINER_DEADLINE_RESERVE_SECONDS")
    )
    # Between SIGTERM and SIGKILL (Cloud Run's container contract: 10 s).
    stop_grace_seconds: float = Field(
        10.0, ge=0, validation_alias=env("TRAINER_STOP_GRACE_SECONDS")
    )
    # The models bucket as a read-only Cloud Storage volume (terraform/trainer.tf): where the
    # container sees it, and the bucket folder it shows (Cloud Storage FUSE's only-dir; empty:
    # the whole bucket). Set, a gs:// base model under it is read in place instead of being
    # copied into the task's memory, and a Hub model is staged once under base_models/hub/
    # and read from there (trainer/base_model.py). Unset: both are downloaded, as before.
    models_mount_path: str | None = Field(None, validation_alias=env("MODELS_MOUNT_PATH"))
    models_mount_only_dir: str = Field(
        "",
        pattern=r"^([A-Za-z0-9_.=+-]+(/[A-Za-z0-9_.=+-]+)*)?$",
        validation_alias=env("MODELS_MOUNT_ONLY_DIR"),
    )

    @field_validator("models_mount_path", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("models_mount_path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value

    @field_validator("models_mount_only_dir")
    @classmethod
    def _plain_folder(cls, value: str) -> str:
        if any(part in (".", "..") for part in value.split("/")):
            raise ValueError("a folder of the bucket, without '.' or '..' segments")
        return value

    @property
    def job_attempt(self) -> int:
        """This attempt's number over the whole job (what its events carry)."""
        return self.attempt_base + self.attempt

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_retries
