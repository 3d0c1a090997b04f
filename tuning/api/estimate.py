"""`POST /train:estimate`: a dry run of `POST /train` that creates nothing.

The body is a `/train` body. It is refused exactly as `/train` would refuse it (what it names
must be the caller's: tuning.tenancy; its `from_job` the caller's: tuning.lineage; a tier that
holds it among those open to the caller: tuning.placement), then the validation dispatch runs
before any GPU (tuning.preflight) reads its dataset and counts its tokens, and tuning.estimating
prices the training per tier. No record, config, secret or message is written; a secret value in
the body is only used to read the base model's tokenizer from the Hub.
"""

from __future__ import annotations

from typing import Any

from tuning.api.intake import register_secrets
from tuning.api.models import EstimateResponse
from tuning.errors import InvalidRequestError
from tuning.estimating import estimate
from tuning.failures import DatasetError, PermanentError
from tuning.lineage import check_parent
from tuning.preflight import ModelUnreadableError, validate_request
from tuning.services import Services
from tuning.spec import parse_train_request
from tuning.submission import place
from tuning.tenancy import BASE_MODEL_FIELD, check_request

DATASET_FIELD = "processed_dataset_id"
# Counting's share of the submit function's 300 s (terraform/functions.tf); past it the answer
# comes without token counts, and a note says so.
ESTIMATE_COUNTING_SECONDS = 200.0


def estimate_train_request(data: Any, *, services: Services, owner: str | None) -> EstimateResponse:
    request = parse_train_request(data)
    register_secrets(request)
    check_request(request, owner=owner, settings=services.settings, secrets=services.secrets)
    config = request.training_config
    check_parent(config, owner=owner, services=services)
    placement = place(request, services, owner=owner)
    token = request.hf_token.get_secret_value() if request.hf_token is not None else None
    try:
        validation = validate_request(
            config,
            dataset_id=request.processed_dataset_id,
            layout=services.settings.layout,
            storage=services.storage,
            hf_token=token,
            counting_seconds=ESTIMATE_COUNTING_SECONDS,
        )
    except DatasetError as error:
        raise InvalidRequestError(error.message, field=DATASET_FIELD) from None
    except ModelUnreadableError as error:
        raise InvalidRequestError(error.message, field=BASE_MODEL_FIELD) from None
    except PermanentError as error:
        raise InvalidRequestError(error.message) from None
    priced = estimate(config, validation, placement, services, owner=owner)
    return EstimateResponse(placement=placement, validation=validation, estimate=priced)
