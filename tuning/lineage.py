"""Continuing from an earlier job (`training_config.from_job`), checked before anything is written.

A job may start from the final adapter or weights of an earlier job, or from one of its
checkpoints, when that job is the caller's own: another caller's job answers as if it did not
exist (404 on `training_config.from_job`), whatever OWNER_SCOPING says, because continuing
from a model reads its weights into a job the caller then downloads. The base model, method
and modality must be the parent's (a LoRA adapter only fits the model it was trained on; a
Full job's weights are a model of their own shape), and the trainer type the parent's or any
after SFT (SFT then DPO, ORPO or GRPO: the usual path, as Vertex AI's tuning allows SFT before
RL). What the trainer reads is recorded (`Lineage.weights`): only the parent's own adapter
folder or checkpoint folder, never a path the parent's record or events name.
"""

from __future__ import annotations

from tuning.checkpoints import read_marker
from tuning.errors import InvalidRequestError, NotFoundError
from tuning.ids import is_segment_id
from tuning.jobs import JobRecord, JobStatus, Lineage
from tuning.services import Services
from tuning.spec import Provider, TrainerType, TrainingConfig

FROM_JOB_FIELD = "training_config.from_job"


class ParentNotFoundError(InvalidRequestError):
    """The request names a job that is not the caller's: answered as a job that does not
    exist (404), and, being a request that can never succeed, never retried (a published
    request naming one is acknowledged and dropped, as any invalid request)."""

    code = "not_found"
    http_status = 404


def check_parent(
    config: TrainingConfig, *, owner: str | None, services: Services
) -> Lineage | None:
    """The lineage of a job that continues an earlier one (None: it starts from its base
    model); InvalidRequestError or NotFoundError naming the field to fix otherwise."""
    if config.parent is None:
        return None
    parent_id, step = config.parent
    parent = services.jobs.find(parent_id) if is_segment_id(parent_id) else None
    if parent is None or parent.owner != owner:
        raise ParentNotFoundError(
            f"no job {parent_id} of yours to continue from", field=FROM_JOB_FIELD
        )
    _check_compatible(config, parent)
    layout = services.settings.layout
    if step is not None:
        try:
            read_marker(services.storage, layout, parent_id, step)
        except NotFoundError:
            raise InvalidRequestError(
                f"job {parent_id} has no checkpoint at step {step} (GET /jobs/{parent_id}/"
                "checkpoints lists the ones it keeps)",
                field=FROM_JOB_FIELD,
            ) from None
        weights = layout.checkpoint_prefix(parent_id, step)
    else:
        weights = _final_weights(parent, services)
    return Lineage(parent_job_id=parent_id, parent_step=step, weights=weights)


def _check_compatible(config: TrainingConfig, parent: JobRecord) -> None:
    if config.base_model_id != parent.base_model_id:
        raise InvalidRequestError(
            f"job {parent.job_id} was trained on {parent.base_model_id}: continue it with the "
            "same base_model_id",
            field="training_config.base_model_id",
        )
    if config.method is not parent.method:
        raise InvalidRequestError(
            f"job {parent.job_id} trained with method {parent.method.value}: continue it with "
            "the same method",
            field="training_config.method",
        )
    if config.modality is not parent.modality:
        raise InvalidRequestError(
            f"job {parent.job_id} is a {parent.modality.value} job: continue it with the same "
            "modality",
            field="training_config.modality",
        )
    if (
        config.trainer_type is not parent.trainer_type
        and parent.trainer_type is not TrainerType.SFT
    ):
        raise InvalidRequestError(
            f"job {parent.job_id} is a {parent.trainer_type.value} job: it continues as "
            f"{parent.trainer_type.value} (only an SFT job continues as another trainer type)",
            field="training_config.trainer_type",
        )
    if config.provider is Provider.UNSLOTH:
        raise InvalidRequestError(
            "from_job continues with the huggingface provider only",
            field="training_config.provider",
        )


def _final_weights(parent: JobRecord, services: Services) -> str:
    """The parent's exported adapter (or Full weights) folder, in its own output prefix."""
    if parent.status is not JobStatus.COMPLETED:
        raise InvalidRequestError(
            f"job {parent.job_id} is {parent.status.value}: continue from one of its checkpoints "
            f"('{parent.job_id}:<step>') or once it has completed",
            field=FROM_JOB_FIELD,
        )
    folder = services.settings.layout.adapter_prefix(parent.job_id)
    recorded = parent.artifacts.adapter_path
    if recorded is None or not recorded.startswith(folder) or not services.storage.list(folder):
        where = f" (exported to {parent.artifacts.hub_url})" if parent.artifacts.hub_url else ""
        raise InvalidRequestError(
            f"job {parent.job_id} has no adapter or weights in Cloud Storage{where}: continue "
            "from one of its checkpoints instead",
            field=FROM_JOB_FIELD,
        )
    return folder
