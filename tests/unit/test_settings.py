"""Settings from the environment: seed names, defaults, and errors that name the variable."""

from __future__ import annotations

import pytest

from tuning.layout import StorageLayout
from tuning.settings import (
    ApiSettings,
    LauncherBackend,
    LauncherSettings,
    SecretBackend,
    ServiceSettings,
    SettingsError,
    TrainerSettings,
)

BASE = {
    "PROJECT_ID": "demo-project",
    "GCS_CONFIG_BUCKET_NAME": "demo-configs",
    "GCS_DATA_BUCKET_NAME": "demo-data",
    "GCS_MODELS_BUCKET_NAME": "demo-models",
}


def environ(**changes: str | None) -> dict[str, str]:
    merged: dict[str, str | None] = {**BASE, **changes}
    return {key: value for key, value in merged.items() if value is not None}


def test_reads_the_seed_variables():
    settings = ServiceSettings.from_env(environ(REGION="europe-west4"))

    assert settings.project_id == "demo-project"
    assert settings.region == "europe-west4"
    assert settings.config_bucket == "demo-configs"
    assert settings.data_bucket == "demo-data"
    assert settings.models_bucket == "demo-models"


def test_google_cloud_project_is_accepted_instead_of_project_id():
    settings = ServiceSettings.from_env(environ(PROJECT_ID=None, GOOGLE_CLOUD_PROJECT="gcp-proj"))

    assert settings.project_id == "gcp-proj"


def test_project_id_wins_over_google_cloud_project():
    settings = ServiceSettings.from_env(environ(GOOGLE_CLOUD_PROJECT="other"))

    assert settings.project_id == "demo-project"


def test_defaults_for_region_topics_and_collection():
    settings = ServiceSettings.from_env(environ())

    assert settings.region == "us-central1"
    assert settings.requests_topic == "training-requests"
    assert settings.events_topic == "job-events"
    assert settings.notifications_topic == "job-notifications"
    assert settings.jobs_collection == "training_jobs"
    assert settings.secret_backend is SecretBackend.SECRET_MANAGER
    assert settings.secret_prefix == "tuning-"


def test_topics_can_be_renamed():
    settings = ServiceSettings.from_env(
        environ(TRAINING_REQUESTS_TOPIC="req", JOB_EVENTS_TOPIC="ev", JOB_NOTIFICATIONS_TOPIC="no")
    )

    assert (settings.requests_topic, settings.events_topic, settings.notifications_topic) == (
        "req",
        "ev",
        "no",
    )


def test_missing_data_bucket_names_the_variable():
    with pytest.raises(SettingsError) as caught:
        ServiceSettings.from_env(environ(GCS_DATA_BUCKET_NAME=None))

    assert "GCS_DATA_BUCKET_NAME" in caught.value.message
    assert "GCS_CONFIG_BUCKET_NAME" not in caught.value.message
    assert caught.value.code == "misconfigured"


def test_missing_project_names_both_variables():
    with pytest.raises(SettingsError) as caught:
        ServiceSettings.from_env(environ(PROJECT_ID=None))

    assert "PROJECT_ID" in caught.value.message
    assert "GOOGLE_CLOUD_PROJECT" in caught.value.message


def test_every_missing_variable_is_named_at_once():
    with pytest.raises(SettingsError) as caught:
        ServiceSettings.from_env({})

    for name in BASE:
        assert name in caught.value.message


def test_malformed_value_names_its_variable():
    with pytest.raises(SettingsError) as caught:
        ServiceSettings.from_env(environ(SECRET_PREFIX="has spaces!"))

    assert "SECRET_PREFIX" in caught.value.message


def test_empty_bucket_is_refused():
    with pytest.raises(SettingsError, match="GCS_MODELS_BUCKET_NAME"):
        ServiceSettings.from_env(environ(GCS_MODELS_BUCKET_NAME=""))


def test_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch):
    for name, value in environ(REGION="asia-east1").items():
        monkeypatch.setenv(name, value)

    settings = ServiceSettings.from_env()

    assert settings.region == "asia-east1"


def test_settings_are_frozen():
    settings = ServiceSettings.from_env(environ())

    with pytest.raises(ValueError, match="frozen"):
        settings.region = "elsewhere"  # type: ignore[misc]


def test_layout_uses_the_three_buckets():
    settings = ServiceSettings.from_env(environ())

    assert settings.layout == StorageLayout("demo-data", "demo-configs", "demo-models")
    assert settings.layout.gguf_uri("job1", "q8_0") == (
        "gs://demo-models/gguf_models/job1/model-q8_0.gguf"
    )


def test_api_settings_parse_booleans_and_bounds():
    settings = ApiSettings.from_env(environ(OWNER_SCOPING="true"))

    assert settings.owner_scoping is True
    assert settings.id_token_audiences == ()  # tokens Cloud Run did not check: refused
    assert settings.signed_url_ttl_seconds == 900


def test_id_token_audiences_are_a_comma_separated_list():
    settings = ApiSettings.from_env(
        environ(ID_TOKEN_AUDIENCES="https://submit-x.a.run.app, https://status-x.a.run.app,")
    )

    assert settings.id_token_audiences == (
        "https://submit-x.a.run.app",
        "https://status-x.a.run.app",
    )


def test_api_settings_refuse_a_too_short_signed_url_ttl():
    with pytest.raises(SettingsError, match="SIGNED_URL_TTL_SECONDS"):
        ApiSettings.from_env(environ(SIGNED_URL_TTL_SECONDS="5"))


def test_launcher_settings_defaults_and_bounds():
    settings = LauncherSettings.from_env(environ())

    assert settings.launcher is LauncherBackend.CLOUD_RUN
    assert settings.max_concurrent_jobs == 4
    with pytest.raises(SettingsError, match="MAX_CONCURRENT_JOBS"):
        LauncherSettings.from_env(environ(MAX_CONCURRENT_JOBS="0"))


def test_trainer_settings_read_the_cloud_run_task_attempt():
    settings = TrainerSettings.from_env(
        environ(JOB_ID="job1", CLOUD_RUN_TASK_ATTEMPT="2", CLOUD_RUN_EXECUTION="exec-7")
    )

    assert (settings.job_id, settings.attempt, settings.execution) == ("job1", 2, "exec-7")


@pytest.mark.parametrize("job_id", [None, "", "../job2", "a/b"])
def test_trainer_settings_refuse_a_missing_or_unsafe_job_id(job_id: str | None):
    with pytest.raises(SettingsError, match="JOB_ID"):
        TrainerSettings.from_env(environ(JOB_ID=job_id))
