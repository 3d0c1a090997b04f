"""A job's estimate before training: what it trains on (tuning.preflight) priced per tier.

Used by dispatch's validation (the estimate is kept on the job, to compare with the actual
run) and by `POST /train:estimate` (the same figures for a request, creating nothing). The
tiers estimated are those the caller may use; the one the job was placed on comes first.
"""

from __future__ import annotations

import logging
from typing import Any

from tuning.errors import TuningError
from tuning.estimates import ModelShape
from tuning.jobs import Placement, Validation
from tuning.pricing import estimate_costs, parameters_of
from tuning.services import Services
from tuning.spec import TrainingConfig
from tuning.tiers import GpuTier, tiers_open_to

logger = logging.getLogger(__name__)


def estimate(
    config: TrainingConfig,
    validation: Validation,
    placement: Placement | None,
    services: Services,
    *,
    owner: str | None,
) -> dict[str, Any]:
    """{"tier", "tokens", "steps", "tiers": [per-tier cost], "note"?} for the job's record."""
    answer: dict[str, Any] = {
        "tier": placement.tier if placement else None,
        "tokens": validation.tokens_to_train,
        "steps": validation.total_steps,
        "tiers": [],
    }
    parameters = model_parameters(config.base_model_id, services)
    if validation.tokens_to_train is None or parameters is None:
        answer["note"] = (
            "no time or cost: "
            + ("its tokens were not counted" if validation.tokens_to_train is None else "")
            + ("" if parameters is not None else "the model's size is unknown")
        )
        return answer
    tiers = _tiers_for(services, owner=owner, first=placement.tier if placement else None)
    costs = estimate_costs(
        tiers,
        parameters=parameters,
        method=config.method.value,
        trainer_type=config.trainer_type.value,
        base_model_id=config.base_model_id,
        tokens=validation.tokens_to_train,
        history=services.throughput,
        prices=services.settings.gpu_pricing,
    )
    answer["tiers"] = [cost.to_dict() for cost in costs]
    return answer


def model_parameters(base_model_id: str, services: Services) -> int | None:
    """The language model's parameters: the catalog's for a published Gemma, else those of a
    `gs://` snapshot's config.json (None: neither says)."""
    known = parameters_of(base_model_id)
    if known is not None or not base_model_id.startswith("gs://"):
        return known
    prefix = base_model_id if base_model_id.endswith("/") else f"{base_model_id}/"
    try:
        config = services.storage.download_json(f"{prefix}config.json")
        return ModelShape.from_config(config).language_parameters
    except (TuningError, KeyError, TypeError, ValueError) as error:
        logger.info("no parameter count for %s: %s", base_model_id, error)
        return None


def _tiers_for(services: Services, *, owner: str | None, first: str | None) -> list[GpuTier]:
    """The tiers the owner may use (tuning.tiers.tiers_open_to), the job's own first."""
    tiers = list(tiers_open_to(owner, services.settings.tiers))
    tiers.sort(key=lambda tier: tier.name != first)
    return tiers
