"""The submit function's core: validate a `POST /train` body and queue the job.

Secret values in the body are registered with the log redactor before anything
else can log them; `tuning.submission.submit_job` does the all-or-nothing work.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from tuning.api.models import SubmitResponse
from tuning.errors import InvalidRequestError
from tuning.ids import IDEMPOTENCY_KEY_PATTERN
from tuning.logs import job_context, register_secret
from tuning.services import Services
from tuning.spec import TrainRequest, parse_train_request
from tuning.submission import submit_job

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class Accepted:
    answer: SubmitResponse
    created: bool  # False: a replay of an earlier submit with the same key


def accept_train_request(
    data: Any, *, services: Services, owner: str | None, idempotency_key: str | None
) -> Accepted:
    """Queue the job the body asks for; a replayed key returns the job it made before."""
    if idempotency_key is not None:
        _check_key(idempotency_key)
    request = parse_train_request(data)
    register_secrets(request)
    submitted = submit_job(request, services=services, owner=owner, idempotency_key=idempotency_key)
    job = submitted.job
    with job_context(job.job_id):
        if submitted.created:
            logger.info("queued job %s for %s", job.job_id, owner or "an anonymous caller")
        else:
            logger.info("replayed submit of job %s (status %s)", job.job_id, job.status.value)
    answer = SubmitResponse(job_id=job.job_id, status=job.status)
    return Accepted(answer=answer, created=submitted.created)


def register_secrets(request: TrainRequest) -> None:
    """Make the log redactor hide the body's secret values before anything can log them."""
    if request.hf_token is not None:
        register_secret(request.hf_token.get_secret_value())
    wandb = request.training_config.wandb_config
    if wandb is not None and wandb.api_key is not None:
        register_secret(wandb.api_key.get_secret_value())


def _check_key(key: str) -> None:
    if re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key) is None:
        raise InvalidRequestError(
            f"{IDEMPOTENCY_HEADER} must match {IDEMPOTENCY_KEY_PATTERN}", field=IDEMPOTENCY_HEADER
        )
