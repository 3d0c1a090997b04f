"""LAUNCHER chooses the launcher; the local one takes its command, folder and retries."""

from __future__ import annotations

import json
import sys

import pytest

from tuning.launchers.cloud_run import CloudRunLauncher
from tuning.launchers.factory import launcher_for_tier, launcher_from_settings
from tuning.launchers.local import LocalLauncher
from tuning.settings import ApiSettings, LauncherSettings, SettingsError

BASE = {
    "PROJECT_ID": "demo-project",
    "REGION": "europe-west4",
    "GCS_CONFIG_BUCKET_NAME": "demo-configs",
    "GCS_DATA_BUCKET_NAME": "demo-data",
    "GCS_MODELS_BUCKET_NAME": "demo-models",
}


def test_cloud_run_is_the_default_and_targets_the_configured_job():
    launcher = launcher_from_settings(
        LauncherSettings.from_env({**BASE, "TRAINER_JOB_NAME": "gemma-l4"})
    )

    assert isinstance(launcher, CloudRunLauncher)
    assert launcher.job_resource == "projects/demo-project/locations/europe-west4/jobs/gemma-l4"


def test_local_launcher_reads_its_command_folder_and_retries(tmp_path):
    settings = LauncherSettings.from_env(
        {
            **BASE,
            "LAUNCHER": "local",
            "LOCAL_TRAINER_COMMAND": "python3 -m trainer --fast",
            "LOCAL_LAUNCHER_DIR": str(tmp_path),
            "TRAINER_MAX_RETRIES": "1",
        }
    )

    launcher = launcher_from_settings(settings)

    assert isinstance(launcher, LocalLauncher)
    assert launcher.command == ["python3", "-m", "trainer", "--fast"]
    assert launcher.directory == tmp_path.resolve()
    assert launcher.max_retries == 1


def test_local_launcher_runs_python_m_trainer_by_default():
    launcher = launcher_from_settings(LauncherSettings.from_env({**BASE, "LAUNCHER": "local"}))

    assert isinstance(launcher, LocalLauncher)
    assert launcher.command == [sys.executable, "-m", "trainer"]
    assert launcher.max_retries == 3


TWO_GPUS = {
    "name": "two",
    "engine": "vertex",
    "gpu_type": "NVIDIA_L4",
    "gpu_count": 2,
    "gpu_memory_gib": 22.4,
    "machine_type": "g2-standard-24",
}


def test_local_launcher_runs_a_multi_gpu_tier_as_one_process_per_gpu_under_torchrun(tmp_path):
    settings = LauncherSettings.from_env(
        {**BASE, "LAUNCHER": "local", "GPU_TIERS": json.dumps([TWO_GPUS])}
    )

    launcher = launcher_for_tier(settings, settings.tiers[0])

    assert isinstance(launcher, LocalLauncher)
    assert launcher.command == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "trainer",
    ]


def test_a_multi_gpu_tier_refuses_a_local_command_that_is_not_python():
    settings = LauncherSettings.from_env(
        {
            **BASE,
            "LAUNCHER": "local",
            "LOCAL_TRAINER_COMMAND": "/bin/sleep 30",
            "GPU_TIERS": json.dumps([TWO_GPUS]),
        }
    )

    with pytest.raises(SettingsError, match="Python interpreter"):
        launcher_for_tier(settings, settings.tiers[0])


def test_settings_without_launcher_fields_read_them_from_the_environment(monkeypatch):
    for name, value in {**BASE, "LAUNCHER": "local"}.items():
        monkeypatch.setenv(name, value)

    launcher = launcher_from_settings(ApiSettings.from_env())

    assert isinstance(launcher, LocalLauncher)


def test_bad_launcher_settings_name_the_variable():
    with pytest.raises(SettingsError, match="TRAINER_MAX_RETRIES"):
        LauncherSettings.from_env({**BASE, "TRAINER_MAX_RETRIES": "-1"})
    with pytest.raises(SettingsError, match="LAUNCHER"):
        LauncherSettings.from_env({**BASE, "LAUNCHER": "kubernetes"})


def test_each_tier_gets_its_engine_s_launcher():
    import json

    from tests.unit.test_tiers import H100X8, RTX
    from tuning.launchers.factory import launcher_for_tier
    from tuning.launchers.vertex import VertexLauncher

    settings = LauncherSettings.from_env(
        {
            **BASE,
            "GPU_TIERS": json.dumps([{**RTX, "region": "us-central1"}, H100X8]),
            "TRAINER_IMAGE": "europe-west4-docker.pkg.dev/demo-project/t/trainer:1",
            "TRAINER_SERVICE_ACCOUNT": "trainer@demo-project.iam.gserviceaccount.com",
        }
    )
    rtx, h100 = settings.tiers

    cloud_run = launcher_for_tier(settings, rtx)
    vertex = launcher_for_tier(settings, h100)

    assert isinstance(cloud_run, CloudRunLauncher)
    assert cloud_run.job_resource == "projects/demo-project/locations/us-central1/jobs/trainer-rtx"
    assert isinstance(vertex, VertexLauncher)
    assert (vertex.machine_type, vertex.accelerator_count) == ("a3-highgpu-8g", 8)
    assert vertex.parent == "projects/demo-project/locations/europe-west4"
    # What the Cloud Run job's template gives the trainer, the custom job carries itself.
    assert vertex.extra_env["GCS_MODELS_BUCKET_NAME"] == "demo-models"
    assert vertex.extra_env["TRAINER_MAX_RETRIES"] == "0"


def test_a_vertex_tier_without_the_trainer_image_is_a_clear_error():
    import json

    from tests.unit.test_tiers import H100X8
    from tuning.launchers.factory import launcher_for_tier

    settings = LauncherSettings.from_env({**BASE, "GPU_TIERS": json.dumps([H100X8])})

    with pytest.raises(SettingsError, match="set TRAINER_IMAGE and TRAINER_SERVICE_ACCOUNT"):
        launcher_for_tier(settings, settings.tiers[0])
