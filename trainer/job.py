"""The job this task runs: its redacted config, its secrets, and whether it is still wanted."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import ValidationError

from trainer.errors import BrokenJobError, JobGone, UserError
from tuning.errors import InvalidRequestError, NotFoundError
from tuning.jobs import AttemptEnding, JobRecord, JobStatus, Lineage, Placement, Validation
from tuning.launchers import same_execution
from tuning.logs import register_secret
from tuning.services import Services
from tuning.settings import TrainerSettings
from tuning.spec import TrainRequest, describe_validation_error

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    settings: TrainerSettings
    request: TrainRequest
    hf_token: str | None
    wandb_api_key: str | None
    placement: Placement | None = None  # the tier submit chose, and its estimate if it had one
    lineage: Lineage | None = None  # the earlier job it continues (training_config.from_job)
    # What dispatch's validation found before any GPU (tuning.preflight): rows, tokens, steps.
    validation: Validation | None = None

    @property
    def job_id(self) -> str:
        return self.settings.job_id


def ensure_job_active(services: Services, settings: TrainerSettings) -> JobRecord:
    """The job's record; JobGone when it was deleted, cancelled, ended or paused (this attempt
    or an older one), or runs on another execution."""
    job = services.jobs.find(settings.job_id)
    if job is None:
        raise JobGone(f"job {settings.job_id} no longer exists")
    if job.status.is_terminal:
        raise JobGone(f"job {settings.job_id} is already {job.status.value}")
    if job.status is JobStatus.PAUSED:
        raise JobGone(f"job {settings.job_id} is paused")
    ended = job.last_attempt_end
    if ended and ended.reason is AttemptEnding.PAUSED and settings.job_attempt <= ended.attempt:
        raise JobGone(f"job {settings.job_id} was paused at attempt {ended.attempt}")
    if (
        job.execution
        and settings.execution
        and not same_execution(job.execution, settings.execution)
    ):
        raise JobGone(f"job {settings.job_id} now runs on execution {job.execution}")
    return job


def load_job(settings: TrainerSettings, services: Services) -> Job:
    """Read the redacted request and resolve its secrets, registering them for redaction first."""
    record = ensure_job_active(services, settings)
    config_uri = settings.layout.config_uri(settings.job_id)
    try:
        data = services.storage.download_json(config_uri)
    except NotFoundError:
        ensure_job_active(services, settings)  # deleted meanwhile: stop quietly
        raise BrokenJobError(f"the job's config {config_uri} is missing") from None
    try:
        request = TrainRequest.model_validate(data)
    except ValidationError as error:
        raise UserError(f"invalid job config: {describe_validation_error(error).message}") from None
    hf_token = _secret(services, request.hf_token_secret, "hf_token_secret")
    wandb = request.training_config.wandb_config
    wandb_key = _secret(services, wandb.api_key_secret if wandb else None, "wandb_config.api_key")
    return Job(
        settings=settings,
        request=request,
        hf_token=hf_token,
        wandb_api_key=wandb_key,
        placement=record.placement,
        lineage=record.lineage,
        validation=record.validation,
    )


def _secret(services: Services, reference: str | None, field: str) -> str | None:
    if reference is None:
        return None
    try:
        value = services.secrets.get(reference)
    except (NotFoundError, InvalidRequestError) as error:
        raise UserError(f"{field}: {error.message}") from None
    register_secret(value)  # before anything can log it
    return value
