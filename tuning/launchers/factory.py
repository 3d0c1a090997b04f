"""The launcher for a GPU tier, as the deployable's settings ask (`LAUNCHER=cloudrun|local`).

In production each tier's engine decides: a Cloud Run tier runs executions of its own
trainer job, a Vertex tier runs Vertex AI custom jobs on its machine type. Locally
(`LAUNCHER=local`) every tier runs the trainer as processes on this machine.
"""

from __future__ import annotations

from tuning.launchers import Launcher
from tuning.settings import LauncherBackend, LauncherSettings, ServiceSettings, SettingsError
from tuning.tiers import Engine, GpuTier


def launcher_settings_of(settings: ServiceSettings) -> LauncherSettings:
    """The launcher fields of `settings`, read from the environment where it has none
    (e.g. the delete function, whose ApiSettings cancel executions)."""
    return settings if isinstance(settings, LauncherSettings) else LauncherSettings.from_env()


def launcher_from_settings(settings: ServiceSettings) -> Launcher:
    """The launcher of the deployment's first tier (a deployment without tiers has one)."""
    return launcher_for_tier(settings, settings.tiers[0])


def launcher_for_tier(settings: ServiceSettings, tier: GpuTier) -> Launcher:
    launcher_settings = launcher_settings_of(settings)
    if launcher_settings.launcher is LauncherBackend.LOCAL:
        from tuning.launchers.local import LocalLauncher

        return LocalLauncher(
            launcher_settings.local_launcher_dir,
            command=launcher_settings.local_trainer_command,
            max_retries=launcher_settings.trainer_max_retries,
            task_timeout_seconds=launcher_settings.trainer_task_timeout_seconds,
            processes=tier.gpu_count,  # a multi-GPU tier: CPU processes under torchrun
        )
    if tier.engine is Engine.VERTEX:
        return _vertex_launcher(launcher_settings, tier)
    from tuning.launchers.cloud_run import CloudRunLauncher

    assert tier.cloud_run_job is not None  # a Cloud Run tier names its job (GpuTier)
    return CloudRunLauncher(
        project=launcher_settings.project_id,
        region=tier.region or launcher_settings.region,
        job_name=tier.cloud_run_job,
        task_timeout_seconds=tier.task_timeout_seconds
        or launcher_settings.trainer_task_timeout_seconds,
    )


def _vertex_launcher(settings: LauncherSettings, tier: GpuTier) -> Launcher:
    from tuning.launchers.vertex import VertexLauncher

    if not settings.trainer_image or not settings.trainer_service_account:
        raise SettingsError(
            f"tier {tier.name} runs on Vertex AI: set TRAINER_IMAGE and TRAINER_SERVICE_ACCOUNT"
        )
    assert tier.machine_type is not None  # a Vertex tier names its machine (GpuTier)
    return VertexLauncher(
        settings.project_id,
        tier.region or settings.region,
        machine_type=tier.machine_type,
        accelerator_type=tier.gpu_type,
        accelerator_count=tier.gpu_count,
        image_uri=settings.trainer_image,
        service_account=settings.trainer_service_account,
        task_timeout_seconds=tier.task_timeout_seconds or settings.trainer_task_timeout_seconds,
        extra_env=trainer_static_environment(settings),
    )


def trainer_static_environment(settings: ServiceSettings) -> dict[str, str]:
    """What the Cloud Run trainer job's template sets (terraform/trainer.tf), for engines
    without a template: where the trainer finds its buckets, topic, collection and secrets.
    Vertex runs one attempt per custom job (no task retries), so that attempt is the last."""
    return {
        "PROJECT_ID": settings.project_id,
        "REGION": settings.region,
        "GCS_CONFIG_BUCKET_NAME": settings.config_bucket,
        "GCS_DATA_BUCKET_NAME": settings.data_bucket,
        "GCS_MODELS_BUCKET_NAME": settings.models_bucket,
        "TRAINING_REQUESTS_TOPIC": settings.requests_topic,
        "JOB_EVENTS_TOPIC": settings.events_topic,
        "JOB_NOTIFICATIONS_TOPIC": settings.notifications_topic,
        "JOBS_COLLECTION": settings.jobs_collection,
        "SECRET_BACKEND": settings.secret_backend.value,
        "SECRET_PREFIX": settings.secret_prefix,
        "ALLOWED_BASE_MODEL_LOCATIONS": ",".join(settings.allowed_base_model_locations),
        "TRAINER_MAX_RETRIES": "0",
        "LOG_FORMAT": "json",
    }
