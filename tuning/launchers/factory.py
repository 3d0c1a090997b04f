"""The launcher for a GPU tier, as the deployable's settings ask (`LAUNCHER=cloudrun|local`).

In production each tier's engine decides: a Cloud Run tier runs executions of its own
trainer job, a Vertex tier runs Vertex AI custom jobs on its machine type. Locally
(`LAUNCHER=local`) every tier runs the trainer as processes on this machine.
"""

from __future__ import annotations

from tuning.launchers import Launcher
from tuning.settings import LauncherBackend, LauncherSettings, ServiceSettings
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
        )
    if tier.engine is Engine.VERTEX:
        raise NotImplementedError(
            "the Vertex AI launcher is wired in with tuning/launchers/vertex.py"
        )
    from tuning.launchers.cloud_run import CloudRunLauncher

    assert tier.cloud_run_job is not None  # a Cloud Run tier names its job (GpuTier)
    return CloudRunLauncher(
        project=launcher_settings.project_id,
        region=tier.region or launcher_settings.region,
        job_name=tier.cloud_run_job,
        task_timeout_seconds=launcher_settings.trainer_task_timeout_seconds,
    )
