"""The launcher a deployable's settings ask for (`LAUNCHER=cloudrun|local`)."""

from __future__ import annotations

from tuning.launchers import Launcher
from tuning.settings import LauncherBackend, LauncherSettings, ServiceSettings


def launcher_from_settings(settings: ServiceSettings) -> Launcher:
    """A Cloud Run or local launcher; settings without launcher fields read them from the env."""
    if not isinstance(settings, LauncherSettings):
        # e.g. the delete function (ApiSettings) cancelling an execution
        settings = LauncherSettings.from_env()
    if settings.launcher is LauncherBackend.LOCAL:
        from tuning.launchers.local import LocalLauncher

        return LocalLauncher(
            settings.local_launcher_dir,
            command=settings.local_trainer_command,
            max_retries=settings.trainer_max_retries,
            task_timeout_seconds=settings.trainer_task_timeout_seconds,
        )
    from tuning.launchers.cloud_run import CloudRunLauncher

    return CloudRunLauncher(
        project=settings.project_id,
        region=settings.region,
        job_name=settings.trainer_job_name,
        task_timeout_seconds=settings.trainer_task_timeout_seconds,
    )
