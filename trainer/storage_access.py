"""The job's own storage: the trainer's Cloud Storage narrowed to this job's paths at start.

Every tenant's jobs run under one service account, so before the trainer reads anything of
the job from Cloud Storage it swaps its store for one limited to what the job's record
(Firestore, written at submit) names: see `tuning.gcp.access_boundary`. In production the
store's client holds a downscoped token; on the local stack the store enforces the rules.
"""

from __future__ import annotations

import copy
import logging

from trainer.errors import JobGone
from trainer.hub_staging import StagerStorage, stager_rules, staging_rule
from tuning.gcp.access_boundary import StorageBoundary, job_storage_boundary
from tuning.gcp.storage import GcsStore, narrowed_store
from tuning.layout import GCS_SCHEME
from tuning.services import Services
from tuning.settings import TrainerSettings
from tuning.tenancy import BaseModelLocations

logger = logging.getLogger(__name__)


def narrow_job_storage(settings: TrainerSettings, services: Services) -> Services:
    """Services whose storage reaches only this job's paths; `services` stays as it was."""
    record = services.jobs.find(settings.job_id)
    if record is None:
        raise JobGone(f"job {settings.job_id} no longer exists")
    boundary = job_storage_boundary(
        record,
        settings.layout,
        base_model_locations=BaseModelLocations.from_settings(settings),
    )
    if stages_hub_models(settings, record.base_model_id):
        # A Hub model is staged in the models bucket and read through its volume
        # (trainer/hub_staging.py): this repo's staged copies, read-only; a stager writes
        # through `hub_stager_storage`.
        rule = staging_rule(settings.models_bucket, record.base_model_id)
        boundary = StorageBoundary(rules=(*boundary.rules, rule))
    narrowed = copy.copy(services)  # shares the adapters already made (jobs, publisher)
    narrowed.__dict__["storage"] = narrowed_store(
        services.storage, boundary, project=settings.project_id
    )
    logger.info("storage narrowed to %d rules of job %s", len(boundary.rules), settings.job_id)
    return narrowed


def stages_hub_models(settings: TrainerSettings, base_model_id: str) -> bool:
    """Whether this job's Hub model is staged in the models bucket (there is a volume)."""
    return settings.models_mount_path is not None and not base_model_id.startswith(GCS_SCHEME)


def hub_stager_storage(settings: TrainerSettings, services: Services) -> StagerStorage | None:
    """What a job that stages its Hub model writes with: a store narrowed to that commit's
    marker (create-only) and the stager's own folder, besides reading the repo's copies
    (review finding F5); None when the job stages nothing. Made from the trainer's own
    store before it is narrowed to the job (call it first), for the record's repo only."""
    record = services.jobs.find(settings.job_id)
    if record is None or not stages_hub_models(settings, record.base_model_id):
        return None
    base_model_id = record.base_model_id
    storage = services.storage
    bucket = settings.models_bucket

    def narrowed_to_stage(sha: str, folder: str) -> GcsStore:
        rules = (
            staging_rule(bucket, base_model_id),
            *stager_rules(bucket, base_model_id, sha, folder),
        )
        return narrowed_store(storage, StorageBoundary(rules=rules), project=settings.project_id)

    return narrowed_to_stage
