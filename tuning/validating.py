"""Dispatch's first step for a job: `validating`, on CPU, before any GPU slot is claimed.

A job submitted is `queued`. On its first delivery dispatch makes it `validating`, checks its
dataset and counts its tokens (tuning.preflight), records what it found (`validation`,
`dataset_stats`, the estimate) and makes it `queued` again, now waiting for a GPU slot; a
user error (no dataset, a bad row, an unreadable model snapshot) fails it there, before any
execution starts. A job stays validated: a redelivery, a continuation or a resumed job does not
validate again.

Deliveries may overlap (Pub/Sub delivers at least once): each runs the same checks and writes
the same result, and a job cancelled, paused or deleted meanwhile is left as its owner left it.
A validation that cannot read its inputs (GCS unavailable) raises TransientError: the job
stays `validating` and the redelivery (or reconcile's requeue) validates it again.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from tuning.errors import NotFoundError
from tuning.estimating import estimate
from tuning.failures import PermanentError
from tuning.jobs import ErrorType, JobRecord, JobStatus, Validation, utcnow
from tuning.preflight import dataset_stats, describe, validate_request
from tuning.reporting import EventReporter
from tuning.services import Services
from tuning.spec import TrainingConfig, TrainRequest

logger = logging.getLogger(__name__)

# Tries of a validation before the job fails (a try that dies is retried by the redelivery).
MAX_VALIDATION_ATTEMPTS = 3
# How long a validation may be in progress (dispatch's timeout, 540 s, is shorter): a job still
# `validating` after that was left by a delivery that died.
VALIDATION_LIFETIME = timedelta(seconds=600)
VALIDATING_REASON = "validating: checking the dataset and counting its tokens before any GPU"
WAITING_REASON = "waiting for a GPU slot"


def needs_validation(job: JobRecord) -> bool:
    """A job not validated yet, before its first execution (older jobs, continuations and
    resumed jobs go straight to their slot)."""
    waiting = job.status in (JobStatus.QUEUED, JobStatus.VALIDATING)
    return waiting and job.validation is None and job.executions == 0


def validate_job(job: JobRecord, services: Services) -> JobRecord | None:
    """Validate the job; the record for the claim to judge, or None when it failed
    validation (its `failed` event published) or was deleted."""

    now = utcnow()

    def begin(current: JobRecord) -> JobRecord | None:
        if not needs_validation(current):
            return None
        began = current.validation_started_at
        if current.status is JobStatus.VALIDATING and began and now - began < VALIDATION_LIFETIME:
            return None  # another delivery is validating it now: this one validates too
        # The first try, or one after a try that died (its function timed out or ran out of
        # memory): counted, so that a job whose validation cannot finish does not loop.
        return current.model_copy(
            update={
                "status": JobStatus.VALIDATING,
                "status_reason": VALIDATING_REASON,
                "validation_started_at": now,
                "validation_attempts": current.validation_attempts + 1,
            }
        )

    started = services.jobs.update(job.job_id, begin)
    if started is None:
        return None  # deleted meanwhile
    if not needs_validation(started.after):
        return started.after  # validated by another delivery, or stopped: the claim decides
    job = started.after
    if job.validation_attempts > MAX_VALIDATION_ATTEMPTS:
        _fail(job, ValidationUnfinishedError(_unfinished(job)), services)
        return None
    try:
        request = _request_of(job, services)
        config = request.training_config
        validation = validate_request(
            config,
            dataset_id=job.processed_dataset_id,
            layout=services.settings.layout,
            storage=services.storage,
            hf_token=None,  # dispatch is not given jobs' secrets (a gated model: see preflight)
        )
    except PermanentError as error:
        logger.info("job %s failed validation: %s", job.job_id, error.message)
        _fail(job, error, services)
        return None
    stats = dataset_stats(validation)
    priced = _estimate(job, config, validation, services)

    def validated(current: JobRecord) -> JobRecord | None:
        if current.status is not JobStatus.VALIDATING:
            return None  # cancelled, paused or failed meanwhile
        return current.model_copy(
            update={
                "status": JobStatus.QUEUED,
                "status_reason": f"{describe(validation)}; {WAITING_REASON}",
                "validation": validation,
                "dataset_stats": stats or current.dataset_stats,
                "estimate": priced,
            }
        )

    done = services.jobs.update(job.job_id, validated)
    if done is None:
        return None  # deleted meanwhile
    if done.changed:
        logger.info("job %s %s", job.job_id, describe(validation))
    # Unchanged: another delivery validated it first, or its owner cancelled or paused it
    # meanwhile; the claim decides (already dispatched, or not queued).
    return done.after


def _estimate(
    job: JobRecord, config: TrainingConfig, validation: Validation, services: Services
) -> dict[str, Any] | None:
    """The estimate kept on the job; a job is never held up by its estimate."""
    try:
        return estimate(config, validation, job.placement, services, owner=job.owner)
    except Exception:  # an estimate is advice: log it, and train anyway
        logger.exception("job %s: no estimate", job.job_id)
        return None


def _request_of(job: JobRecord, services: Services) -> TrainRequest:
    """The job's stored request (its secrets as references), as the trainer reads it."""
    uri = job.config_uri or services.settings.layout.config_uri(job.job_id)
    try:
        return TrainRequest.model_validate(services.storage.download_json(uri))
    except NotFoundError:
        raise BrokenJobConfigError(f"the job's config {uri} is missing") from None


class ValidationUnfinishedError(PermanentError):
    """Every try of the job's validation died before it finished (time or memory)."""

    code = "validation_unfinished"


def _unfinished(job: JobRecord) -> str:
    return (
        f"the validation before any GPU did not finish in {MAX_VALIDATION_ATTEMPTS} tries (each "
        f"ran out of dispatch's time or memory): processed_dataset_id "
        f"'{job.processed_dataset_id}' may be too large to read in one delivery, or the base "
        "model's chat template too slow; split the dataset into a smaller train file, or ask "
        "the operator for more dispatch memory"
    )


class BrokenJobConfigError(PermanentError):
    """The job's stored config is gone: our fault, and the same on every delivery."""

    error_type = ErrorType.SYSTEM
    code = "broken_job"


def _fail(job: JobRecord, error: PermanentError, services: Services) -> None:
    """A `failed` event from dispatch, as the trainer would publish it (the event function
    applies it like any other, so the job ends the same way whoever judged it)."""
    reporter = EventReporter(
        services.publisher,
        services.settings.events_topic,
        job_id=job.job_id,
        attempt=job.attempt,
        execution=job.execution,
        source="dispatch",
    )
    reporter.failed(error.message, error_type=error.error_type, code=error.code)
