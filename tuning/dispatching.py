"""Dispatch: one message on `training-requests` -> at most one trainer execution.

A message is a `JobReference` (from submit) or a full `TrainRequest` (from
another service; the job is created first, its id derived from the message so
a redelivery finds the same job). A job not yet validated is validated first, on CPU
(`validating`, tuning.validating: its dataset checked and its tokens counted; a user error
fails it before any GPU). Then the job is *claimed* in a Firestore
transaction together with a GPU slot (`tuning.capacity`), launched, and the
execution recorded on the job if the claim still holds:

- duplicate deliveries: only one claim wins; the others acknowledge;
- a job that handed off from its execution (its attempt stopped before the task deadline,
  or was interrupted, after a checkpoint) is continued in a new execution, keeping its
  slot, up to `TRAINER_MAX_EXECUTIONS` executions;
- at capacity: the job stays `queued` with a visible reason, and
  `CapacityError` makes Pub/Sub redeliver with backoff;
- a job cancelled or deleted between claim and launch gets its new execution
  cancelled at once; a deleted or cancelled job is never launched;
- a message that can never succeed is acknowledged and recorded; only
  transient errors raise;
- a published request carrying a secret's value (`hf_token`, the W&B key) is refused
  before anything reads it: Pub/Sub keeps messages, so that channel takes secret
  references only (`POST /train` still takes values and stores them in Secret Manager).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import typing
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from tuning.capacity import ClaimOutcome, GpuSlots, is_continuation
from tuning.errors import (
    CapacityError,
    ConflictError,
    InvalidRequestError,
    TransientError,
    TuningError,
)
from tuning.events import JobNotification
from tuning.ids import (
    GCS_PREFIX_PATTERN,
    HF_MODEL_PATTERN,
    has_dot_segments,
    is_identity,
    is_segment_id,
)
from tuning.jobs import (
    ErrorType,
    JobError,
    JobRecord,
    JobStatus,
    new_job_id,
    stable_suffix,
    utcnow,
)
from tuning.launchers import Launcher
from tuning.logs import job_context
from tuning.reporting import EventReporter
from tuning.services import Services
from tuning.settings import LauncherSettings
from tuning.spec import (
    JobReference,
    TrainRequest,
    describe_validation_error,
    parse_train_request,
)
from tuning.submission import job_id_for, record_published_job
from tuning.tenancy import EVERY_CALLER, USABLE_BY_ANNOTATION
from tuning.validating import needs_validation, validate_job

logger = logging.getLogger(__name__)

# A message attribute naming the user a publishing service acts for; only principals
# allowed to publish on training-requests (trusted services, by IAM: Terraform's
# request_publishers) can set it. Checked like an HTTP identity (tuning.ids.is_identity).
OWNER_ATTRIBUTE = "owner"
STARTED = "trainer execution started; waiting for the trainer to report"


class DispatchOutcome(StrEnum):
    LAUNCHED = "launched"
    ALREADY_DISPATCHED = "already_dispatched"  # it has an execution, or one is being started
    NOT_QUEUED = "not_queued"  # cancelled, failed or finished: never launched again
    CANCELLED_BEFORE_START = "cancelled_before_start"  # its new execution was stopped at once
    UNKNOWN_JOB = "unknown_job"
    REJECTED = "rejected"  # can never succeed: acknowledged and recorded


@dataclass(frozen=True)
class DispatchResult:
    outcome: DispatchOutcome
    job_id: str | None = None
    execution: str | None = None


def dispatch_message(
    *, data: bytes, message_id: str, attributes: Mapping[str, str], services: Services
) -> DispatchResult:
    """Handle one `training-requests` message; raises only when a redelivery can help."""
    owner = attributes.get(OWNER_ATTRIBUTE) or None  # an empty attribute names nobody
    if owner is not None and not is_identity(owner):
        # Checked before anything else: a bad owner must not become a record or a launch.
        # The value is not logged (it may be 100 KiB or carry newlines that forge log
        # lines): its length and a hash let the publisher find the message it sent.
        logger.error(
            "message %s acknowledged without effect: its %s attribute (%d characters, "
            "sha256 %s) is not an identity (printable ASCII, no whitespace, at most 320)",
            message_id,
            OWNER_ATTRIBUTE,
            len(owner),
            hashlib.sha256(owner.encode("utf-8", "replace")).hexdigest()[:16],
        )
        return DispatchResult(DispatchOutcome.REJECTED)
    try:
        message = parse_request_message(data)
    except InvalidRequestError as error:
        return reject_message(data, error, message_id=message_id, owner=owner, services=services)
    if isinstance(message, JobReference):
        return dispatch_reference(message, owner=owner, message_id=message_id, services=services)
    try:
        job = queue_request(message, message_id=message_id, owner=owner, services=services)
    except (ConflictError, InvalidRequestError) as error:
        # Never retried: an idempotency clash, or a request naming what the owner may not
        # use (tuning.tenancy). No job: nothing was written, nor is the owner's to show.
        logger.error("request in message %s rejected: %s", message_id, error.message)
        return DispatchResult(DispatchOutcome.REJECTED)
    return dispatch_job(job.job_id, services=services)


def dispatch_reference(
    reference: JobReference, *, owner: str | None, message_id: str, services: Services
) -> DispatchResult:
    """Dispatch a referenced job, unless the publisher acts for someone who does not own it.

    Submit publishes references without an owner; a publisher that names one may only
    dispatch that owner's jobs (a service acting for Bob must not start Alice's job).
    """
    if owner is not None:
        job = services.jobs.find(reference.job_id)
        if job is not None and job.owner != owner:
            logger.error(
                "message %s acknowledged without effect: job %s is not owned by the publisher's %s",
                message_id,
                reference.job_id,
                OWNER_ATTRIBUTE,
            )
            return DispatchResult(DispatchOutcome.REJECTED)
    return dispatch_job(reference.job_id, services=services)


def parse_request_message(data: bytes) -> JobReference | TrainRequest:
    """A job reference or a full request; `InvalidRequestError` for anything else.

    A request carrying a secret's value is refused (`SecretInMessageError`) before any
    other check, so that the publisher learns to publish a reference whatever else is wrong.
    """
    try:
        payload = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # nesting too deep is as unreadable as bad JSON
        raise InvalidRequestError("the message is not JSON") from None
    if isinstance(payload, dict) and payload.get("kind") == "job_reference":
        try:
            return JobReference.model_validate(payload)
        except ValidationError as error:
            raise describe_validation_error(error) from None
    refuse_secret_values(payload)
    return parse_train_request(payload)


def secret_value_fields(model: type[BaseModel] = TrainRequest, prefix: str = "") -> dict[str, str]:
    """Every request field holding a secret's value (a `SecretStr`), dotted, mapped to the
    field that names a secret instead (its `_secret` sibling).

    Derived from the models so that a secret field added to tuning/spec.py is refused on
    the bus without anyone remembering this list.
    """
    fields: dict[str, str] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        kinds = _types_in(info.annotation)
        if SecretStr in kinds:
            fields[path] = f"{prefix}{name}_secret"
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                fields.update(secret_value_fields(kind, f"{path}."))
    return fields


def _types_in(annotation: Any) -> set[Any]:
    """The classes an annotation is made of, through Optional, unions, lists and Annotated."""
    arguments = typing.get_args(annotation)
    if not arguments:
        return {annotation}
    return {kind for argument in arguments for kind in _types_in(argument)}


SECRET_VALUE_FIELDS = secret_value_fields()


class SecretInMessageError(InvalidRequestError):
    """A published request carries a secret's value: refused, never stored or launched."""


def refuse_secret_values(payload: Any) -> None:
    """Raise `SecretInMessageError` naming each secret-value field the payload sets.

    Any value but null counts, valid or not: the value is on the bus either way. The value
    is never read into a message, a record or a log line.
    """
    problems = [
        {"field": field, "message": _publish_a_reference(field, reference)}
        for field, reference in SECRET_VALUE_FIELDS.items()
        if _value_at(payload, field) is not None
    ]
    if problems:
        first = problems[0]
        message = f"{first['field']}: {first['message']}"
        raise SecretInMessageError(message, field=first["field"], problems=problems)


def _value_at(payload: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(payload, dict):
            return None
        payload = payload.get(part)
    return payload


def _publish_a_reference(field: str, reference: str) -> str:
    return (
        "a request published on training-requests may not carry a secret's value "
        "(Pub/Sub keeps messages, and dead-lettered ones for days). Store the value in "
        "Secret Manager, have an operator share the secret with the job's owner by "
        f'annotating it {USABLE_BY_ANNOTATION}="OWNER" (the owner attribute you publish, or '
        f"'{EVERY_CALLER}'), and publish {reference}: "
        '"projects/PROJECT/secrets/SECRET/versions/N" without ' + field.rsplit(".", 1)[-1] + "; "
        "POST /train accepts the value itself (see docs/deploy.md, Publishers)"
    )


def _refuse_constant(name: str) -> Any:
    """`NaN`, `Infinity` and `-Infinity` are not JSON (RFC 8259), though json.loads reads them."""
    raise ValueError(f"{name} is not JSON")


def queue_request(
    request: TrainRequest, *, message_id: str, owner: str | None, services: Services
) -> JobRecord:
    """Create the job for a published request; a redelivered message finds the same job."""
    if request.request_id:  # the publisher's own idempotency key also covers its retries
        job_id = job_id_for(request, owner=owner, idempotency_key=None)
    else:
        model = request.training_config.base_model_id
        suffix = stable_suffix("pubsub", message_id)
        job_id = new_job_id(request.processed_dataset_id, model, suffix=suffix)
    return record_published_job(request, services=services, owner=owner, job_id=job_id).job


def dispatch_job(job_id: str, *, services: Services) -> DispatchResult:
    """Claim the job and a GPU slot, launch it, and record the execution."""
    settings = launcher_settings(services)
    claim_id = uuid.uuid4().hex
    with job_context(job_id):
        # The tier (and so the capacity pool) is fixed at submit; the claim re-reads the
        # job in its transaction, so a job deleted meanwhile is still found missing there.
        found = services.jobs.find(job_id)
        if found is not None and needs_validation(found):
            # On CPU, before any slot: a job that fails here never claims a GPU.
            found = validate_job(found, services)
            if found is None:
                return DispatchResult(DispatchOutcome.REJECTED, job_id)
        tier = settings.tier(found.placement.tier if found and found.placement else None)
        slots = GpuSlots.for_tier(services.jobs, settings, tier)
        claim = slots.claim(
            job_id,
            claim_id=claim_id,
            now=utcnow(),
            claim_timeout=timedelta(seconds=settings.stale_after_seconds),
        )
        if claim.outcome is ClaimOutcome.AT_CAPACITY:
            raise CapacityError(
                f"job {job_id} waits: {claim.in_use} of {tier.max_concurrent_jobs} "
                f"slots of tier {tier.name} are in use"
            )
        if claim.outcome is ClaimOutcome.OWNER_AT_LIMIT:
            raise CapacityError(
                f"job {job_id} waits: its owner already runs "
                f"{settings.max_concurrent_jobs_per_owner} jobs"
            )
        if claim.outcome is ClaimOutcome.EXHAUSTED and claim.job is not None:
            return refuse_another_execution(claim.job, settings, services)
        if claim.outcome is not ClaimOutcome.CLAIMED or claim.job is None:
            logger.info("job %s not launched: %s", job_id, claim.outcome.value)
            return DispatchResult(_OUTCOME_OF_CLAIM[claim.outcome], job_id)
        return _launch_claimed(claim.job, claim_id=claim_id, slots=slots, services=services)


_OUTCOME_OF_CLAIM = {
    ClaimOutcome.IN_PROGRESS: DispatchOutcome.ALREADY_DISPATCHED,
    ClaimOutcome.DISPATCHED: DispatchOutcome.ALREADY_DISPATCHED,
    ClaimOutcome.NOT_QUEUED: DispatchOutcome.NOT_QUEUED,
    ClaimOutcome.MISSING: DispatchOutcome.UNKNOWN_JOB,
}
TOO_LONG = "job_too_long"


def refuse_another_execution(
    job: JobRecord, settings: LauncherSettings, services: Services
) -> DispatchResult:
    """Fail a job that handed off (or was paused and resumed) after its last allowed
    execution (a user error: it asked for more training than the deployment gives one job)."""
    ended = job.handoff or job.last_attempt_end  # a handoff, or the pause before a resume
    step = ended.checkpoint_step if ended else None
    total = job.progress.total_steps if job.progress else None
    message = (
        f"the job trained in {job.executions} executions of at most "
        f"{settings.trainer_task_timeout_seconds} s each (TRAINER_MAX_EXECUTIONS="
        f"{settings.max_job_executions}) and reached step {step} of {total}: lower "
        "hyperparameters.max_steps or epochs, or ask the operator for a larger bound"
    )
    report_failure(job, message, services, error_type=ErrorType.USER, code=TOO_LONG)
    return DispatchResult(DispatchOutcome.REJECTED, job.job_id)


def _launch_claimed(
    job: JobRecord, *, claim_id: str, slots: GpuSlots, services: Services
) -> DispatchResult:
    launcher = services.launcher_for(job)
    try:
        execution = launcher.launch(job)
    except TransientError as error:
        slots.release(job.job_id, claim_id=claim_id, reason=f"launch will be retried: {error}")
        raise
    except TuningError as error:
        # A launch that cannot work as configured: fail the job visibly, do not loop.
        slots.release(job.job_id, claim_id=claim_id, reason="launch failed")
        report_failure(job, f"the trainer could not be started: {error.message}", services)
        return DispatchResult(DispatchOutcome.REJECTED, job.job_id)
    except Exception:
        slots.release(job.job_id, claim_id=claim_id, reason="launch will be retried")
        raise
    return record_execution(
        job.job_id, claim_id=claim_id, execution=execution, launcher=launcher, services=services
    )


def record_execution(
    job_id: str, *, claim_id: str, execution: str, launcher: Launcher, services: Services
) -> DispatchResult:
    """Write the execution on the job if our claim still holds; otherwise stop it again."""
    now = utcnow()

    def record(job: JobRecord) -> JobRecord | None:
        if job.dispatch_claim != claim_id or job.status.is_terminal:
            return None
        if job.status is JobStatus.PAUSED:
            return None  # paused while it launched: the execution just started is stopped
        if job.execution and not is_continuation(job):
            return None
        reason = STARTED if job.status is JobStatus.QUEUED else job.status_reason
        return job.model_copy(
            update={
                "execution": execution,
                "executions": job.executions + 1,
                "handoff": None,  # the job continues here
                "dispatch_claim": None,  # served: a later continuation claims afresh
                "dispatch_claimed_at": None,
                "dispatched_at": now,
                "status_reason": reason,
            }
        )

    transition = services.jobs.update(job_id, record)
    if transition is None or transition.after.execution != execution:
        # Deleted, cancelled or taken over by another delivery while we launched.
        logger.warning("job %s changed during launch; cancelling %s", job_id, execution)
        launcher.cancel(execution)
        return DispatchResult(DispatchOutcome.CANCELLED_BEFORE_START, job_id, execution)
    logger.info("job %s launched as %s", job_id, execution)
    return DispatchResult(DispatchOutcome.LAUNCHED, job_id, execution)


def report_failure(
    job: JobRecord,
    message: str,
    services: Services,
    *,
    error_type: ErrorType = ErrorType.SYSTEM,
    code: str = "launch_failed",
) -> None:
    """Publish a `failed` event for the job's current attempt, as the trainer would."""
    reporter = EventReporter(
        services.publisher,
        services.settings.events_topic,
        job_id=job.job_id,
        attempt=job.attempt,
        execution=job.execution,
        source="dispatch",
    )
    reporter.failed(message, error_type=error_type, code=code)


def reject_message(
    data: bytes,
    error: InvalidRequestError,
    *,
    message_id: str,
    services: Services,
    owner: str | None = None,
) -> DispatchResult:
    """Acknowledge a message that can never succeed; a request-shaped one becomes a failed job
    of `owner` (the publisher's attribute, already checked), so that the owner sees why."""
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        payload = None
    if not isinstance(payload, dict) or payload.get("kind") == "job_reference":
        logger.error("message %s acknowledged without effect: %s", message_id, error.message)
        return DispatchResult(DispatchOutcome.REJECTED)
    job = rejected_job_record(payload, error, message_id=message_id, owner=owner)
    with job_context(job.job_id):
        try:
            if services.jobs.find(job.job_id) is None:
                # Notify first: a retry after a failed publish then notifies again, never not
                # at all.
                notification = JobNotification.for_job(job, JobStatus.QUEUED)
                services.publisher.publish(
                    services.settings.notifications_topic, notification, job_id=job.job_id
                )
                services.jobs.create(job)
        except Exception as failure:
            if not isinstance(error, SecretInMessageError):
                raise
            # Deliberately acknowledged though unrecorded: a redelivery would keep the
            # secret in the subscription and, after the last attempt, in the dead-letter
            # store for days. The publisher still finds this line by its message id.
            logger.error(
                "request in message %s rejected (%s) but its failed job %s could not be "
                "recorded (%s); acknowledged anyway, so that the secret leaves Pub/Sub",
                message_id,
                error.field,
                job.job_id,
                type(failure).__name__,
            )
            return DispatchResult(DispatchOutcome.REJECTED, job.job_id)
        logger.error("request in message %s rejected: %s", message_id, error.message)
    return DispatchResult(DispatchOutcome.REJECTED, job.job_id)


# The error code of a job refused for carrying a secret's value on the bus.
SECRET_IN_MESSAGE = "secret_in_message"


def rejected_job_record(
    payload: dict[str, Any],
    error: InvalidRequestError,
    *,
    message_id: str,
    owner: str | None = None,
) -> JobRecord:
    """A `failed` record that shows the publisher (acting for `owner`) why its request was
    refused; it holds nothing of the payload but well-formed ids and a printable name."""
    dataset = _dataset_id(payload.get("processed_dataset_id"))
    config = payload.get("training_config")
    model = _model_id(config.get("base_model_id") if isinstance(config, dict) else None)
    job_id = new_job_id(dataset or "invalid", model or "request", suffix=stable_suffix(message_id))
    now = utcnow()
    name = payload.get("job_name")
    code = SECRET_IN_MESSAGE if isinstance(error, SecretInMessageError) else "invalid_request"
    return JobRecord(
        job_id=job_id,
        job_name=name[:128] if isinstance(name, str) and name.isprintable() else job_id,
        status=JobStatus.FAILED,
        status_reason="the request was rejected",
        base_model_id=model or "",
        processed_dataset_id=dataset or "",
        created_at=now,
        updated_at=now,
        finished_at=now,
        owner=owner,
        error=JobError(type=ErrorType.USER, message=error.message[:4000], code=code),
    )


def _dataset_id(value: Any) -> str | None:
    """The value if it is a well-formed dataset id (it may end up in paths)."""
    return value if isinstance(value, str) and is_segment_id(value) else None


def _model_id(value: Any) -> str | None:
    """The value if it is a well-formed Hub id or gs:// snapshot."""
    if not isinstance(value, str) or has_dot_segments(value.removeprefix("gs://")):
        return None
    pattern = GCS_PREFIX_PATTERN if value.startswith("gs://") else HF_MODEL_PATTERN
    return value if re.fullmatch(pattern, value) else None


def launcher_settings(services: Services) -> LauncherSettings:
    settings = services.settings
    if not isinstance(settings, LauncherSettings):
        raise TypeError("dispatch and reconcile need LauncherSettings")
    return settings
