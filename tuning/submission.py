"""Turning a validated `TrainRequest` into a queued job, all or nothing.

Used by the submit function (which then publishes a `JobReference`) and by
dispatch for full requests that other services publish (`record_published_job`: their
secrets are references only, so dispatch never writes or deletes a secret). The order matters:
what the request names is checked first (`tuning.tenancy`: base model locations, secrets
shared with the owner; `tuning.lineage`: the earlier job it continues) and where the job
trains (`tuning.placement`: its GPU tier, or a 422 when none holds it), then secrets (only
references leave this module), the redacted config, then the Firestore record, then the
message. If any step fails, the steps
before it are undone, so a failed submit leaves no record, config or secret.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from tuning.errors import ConflictError, TransientError, TuningError
from tuning.jobs import JobRecord, Lineage, Placement, new_job_id, new_job_record, stable_suffix
from tuning.lineage import check_parent
from tuning.placement import place_job
from tuning.services import Services
from tuning.spec import JobReference, TrainRequest
from tuning.tenancy import check_request

logger = logging.getLogger(__name__)

HF_TOKEN = "hf_token"
WANDB_API_KEY = "wandb_api_key"


@dataclass(frozen=True)
class Submitted:
    job: JobRecord
    created: bool  # False when an earlier submit with the same key made the job


def job_id_for(request: TrainRequest, *, owner: str | None, idempotency_key: str | None) -> str:
    """The job id: stable for one caller's idempotency key, random otherwise."""
    key = idempotency_key or request.request_id
    suffix = stable_suffix(owner or "", key) if key else None
    model = request.training_config.base_model_id
    return new_job_id(request.processed_dataset_id, model, suffix=suffix)


def submit_job(
    request: TrainRequest,
    *,
    services: Services,
    owner: str | None,
    idempotency_key: str | None = None,
    job_id: str | None = None,
    publish: bool = True,
) -> Submitted:
    """Queue an HTTP request's job: secrets, config, record and (when `publish`) the
    request message.

    First, what the request names must be the owner's to use (InvalidRequestError, 422):
    checked before anything is written, and outside the try below, which would turn the
    refusal into a TransientError.
    """
    check_request(request, owner=owner, settings=services.settings, secrets=services.secrets)
    job_id = job_id or job_id_for(request, owner=owner, idempotency_key=idempotency_key)
    existing = services.jobs.find(job_id)
    if existing is not None:
        return Submitted(job=_same_request(existing, request, owner=owner), created=False)
    lineage = check_parent(request.training_config, owner=owner, services=services)
    placement = place(request, services, owner=owner)
    try:
        references = store_secrets(request, job_id=job_id, services=services)
        return _record_job(
            request,
            job_id,
            owner,
            references,
            placement,
            lineage,
            services=services,
            publish=publish,
        )
    except TuningError as error:
        remove_job_data(job_id, services=services)
        raise TransientError(f"could not queue job {job_id}: {error.message}") from error


def record_published_job(
    request: TrainRequest, *, services: Services, owner: str | None, job_id: str
) -> Submitted:
    """Record the job of a request published on `training-requests`, which names its
    secrets by reference only (dispatch refuses a value before this): config and record,
    no secret written, so none to remove, and no message (dispatch launches it itself)."""
    wandb = request.training_config.wandb_config
    if request.hf_token is not None or (wandb is not None and wandb.api_key is not None):
        raise ValueError("a published request must name its secrets by reference")
    check_request(request, owner=owner, settings=services.settings, secrets=services.secrets)
    existing = services.jobs.find(job_id)
    if existing is not None:
        return Submitted(job=_same_request(existing, request, owner=owner), created=False)
    lineage = check_parent(request.training_config, owner=owner, services=services)
    placement = place(request, services, owner=owner)
    references = referenced_secrets(request)
    try:
        return _record_job(
            request,
            job_id,
            owner,
            references,
            placement,
            lineage,
            services=services,
            publish=False,
        )
    except TuningError as error:
        remove_job_files(job_id, services=services)
        raise TransientError(f"could not queue job {job_id}: {error.message}") from error


def _record_job(
    request: TrainRequest,
    job_id: str,
    owner: str | None,
    references: dict[str, str],
    placement: Placement,
    lineage: Lineage | None,
    *,
    services: Services,
    publish: bool,
) -> Submitted:
    config_uri = services.settings.layout.config_uri(job_id)
    services.storage.upload_json(config_uri, request.redacted(references))
    record = new_job_record(
        request,
        job_id=job_id,
        owner=owner,
        config_uri=config_uri,
        secret_references=references,
        placement=placement,
        lineage=lineage,
    )
    stored, created = services.jobs.create(record)
    if not created:  # a concurrent submit with the same key got there first
        return Submitted(job=_same_request(stored, request, owner=owner), created=False)
    if publish:
        services.publisher.publish(
            services.settings.requests_topic, JobReference(job_id=job_id), job_id=job_id
        )
    return Submitted(job=stored, created=True)


def place(request: TrainRequest, services: Services, *, owner: str | None) -> Placement:
    """The job's GPU tier among those open to `owner` (InvalidRequestError when none can
    hold it): decided before any write, so a refusal leaves nothing behind."""
    return place_job(
        request.training_config,
        tiers=services.settings.tiers,
        storage=services.storage,
        owner=owner,
    )


def referenced_secrets(request: TrainRequest) -> dict[str, str]:
    """The secrets the request names by reference: name -> Secret Manager version."""
    references: dict[str, str] = {}
    if request.hf_token_secret is not None:
        references[HF_TOKEN] = request.hf_token_secret
    wandb = request.training_config.wandb_config
    if wandb is not None and wandb.api_key_secret is not None:
        references[WANDB_API_KEY] = wandb.api_key_secret
    return references


def store_secrets(request: TrainRequest, *, job_id: str, services: Services) -> dict[str, str]:
    """Write the request's secret values to the secret store; return name -> reference."""
    references: dict[str, str] = {}
    if request.hf_token is not None:
        value = request.hf_token.get_secret_value()
        references[HF_TOKEN] = services.secrets.put(job_id, HF_TOKEN, value)
    elif request.hf_token_secret is not None:
        references[HF_TOKEN] = request.hf_token_secret
    wandb = request.training_config.wandb_config
    if wandb is not None and wandb.api_key is not None:
        value = wandb.api_key.get_secret_value()
        references[WANDB_API_KEY] = services.secrets.put(job_id, WANDB_API_KEY, value)
    elif wandb is not None and wandb.api_key_secret is not None:
        references[WANDB_API_KEY] = wandb.api_key_secret
    return references


def remove_job_data(job_id: str, *, services: Services) -> list[str]:
    """Delete the job's record, config and managed secrets; what was deleted, as names.

    Every step runs even when an earlier one fails; the first failure is raised
    at the end so a retry can finish the work.
    """
    return _remove(
        job_id,
        [lambda: services.secrets.delete_job_secrets(job_id), *_file_steps(job_id, services)],
    )


def remove_job_files(job_id: str, *, services: Services) -> list[str]:
    """Delete the job's record and config (a published job, which has no managed secret)."""
    return _remove(job_id, _file_steps(job_id, services))


def _file_steps(job_id: str, services: Services) -> list[Callable[[], list[str]]]:
    config_uri = services.settings.layout.config_uri(job_id)
    return [
        lambda: [config_uri] if services.storage.delete(config_uri) else [],
        lambda: [f"jobs/{job_id}"] if services.jobs.delete(job_id) else [],
    ]


def _remove(job_id: str, steps: list[Callable[[], list[str]]]) -> list[str]:
    removed: list[str] = []
    failures: list[TuningError] = []
    for step in steps:
        try:
            removed.extend(step())
        except TuningError as error:
            logger.warning("clean-up of job %s incomplete: %s", job_id, error.message)
            failures.append(error)
    if failures:
        raise failures[0]
    return removed


def _same_request(existing: JobRecord, request: TrainRequest, *, owner: str | None) -> JobRecord:
    # Job ids hash the owner with the key, so this cannot happen by chance; should it ever,
    # a replay must not hand one caller another's job.
    if existing.owner != owner:
        raise ConflictError(
            "this idempotency key names a job of another caller; choose another key",
            field="Idempotency-Key",
        )
    if existing.request_fingerprint not in (None, request.fingerprint()):
        raise ConflictError(
            "this idempotency key was already used for a different request",
            field="Idempotency-Key",
        )
    return existing
