"""What the core tests share: settings with unique names, services on the emulators, stand-ins.

The launcher is the one stand-in: Cloud Run cannot run here, and these tests
call the cores directly to steer what a launch or a status returns. Everything
else (Firestore, Pub/Sub, GCS) is the emulators.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.fixtures.datasets import upload_test_datasets
from tuning.errors import TuningError
from tuning.gcp.pubsub import PubSubAdmin
from tuning.jobs import JobRecord, SplitCounts, Validation
from tuning.launchers import ExecutionState, ExecutionStatus
from tuning.local.scratch import unique_names
from tuning.services import Services
from tuning.settings import LauncherSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class StandInLauncher:
    """Records launches and cancels; answers status from `statuses`."""

    launched: list[tuple[str, str]] = field(default_factory=list)  # (job_id, execution)
    cancelled: list[str] = field(default_factory=list)
    statuses: dict[str, ExecutionStatus] = field(default_factory=dict)
    error: TuningError | None = None
    during_launch: Callable[[JobRecord], None] | None = None
    _names: Any = field(default_factory=lambda: itertools.count(1))

    def launch(self, job: JobRecord) -> str:
        if self.error is not None:
            raise self.error
        if self.during_launch is not None:
            self.during_launch(job)
        execution = f"local-{next(self._names):012x}"
        self.launched.append((job.job_id, execution))
        return execution

    def status(self, execution: str) -> ExecutionStatus:
        return self.statuses.get(execution, ExecutionStatus(state=ExecutionState.NOT_FOUND))

    def cancel(self, execution: str) -> None:
        self.cancelled.append(execution)


@dataclass
class Core:
    settings: LauncherSettings
    services: Services
    launcher: StandInLauncher
    admin: PubSubAdmin
    events_subscription: str
    requests_subscription: str
    notifications_subscription: str

    def pulled(self, subscription: str, count: int, timeout: float = 10) -> list[bytes]:
        return [data for data, _ in self.admin.pull(subscription, count, timeout=timeout)]


def start_core(unique: str, **variables: str) -> Core:
    """Unique topics, buckets and collection, with pull subscriptions to see what is published."""
    project = os.environ["GOOGLE_CLOUD_PROJECT"]
    settings = LauncherSettings.from_env(
        {
            **unique_names(unique),
            "SECRET_BACKEND": "local",
            **variables,
        }
    )
    launcher = StandInLauncher()
    services = Services(settings, launcher=launcher)
    for bucket in (settings.config_bucket, settings.data_bucket, settings.models_bucket):
        services.storage.create_bucket_if_absent(bucket)
    upload_test_datasets(services)
    admin = PubSubAdmin(project)
    pulls = {}
    for topic in (settings.events_topic, settings.requests_topic, settings.notifications_topic):
        admin.ensure_topic(topic)
        pulls[topic] = admin.ensure_pull_subscription(f"{topic}-pull", topic)
    return Core(
        settings=settings,
        services=services,
        launcher=launcher,
        admin=admin,
        events_subscription=pulls[settings.events_topic],
        requests_subscription=pulls[settings.requests_topic],
        notifications_subscription=pulls[settings.notifications_topic],
    )


# What dispatch's validation records for a job whose dataset passed (tuning.validating): jobs
# made here start validated, as if their first delivery had checked them; a test of the
# validation itself passes validation=None.
VALIDATED = Validation(
    row_format="messages",
    train=SplitCounts(source="gs://data/processed_datasets/ds1/train.jsonl", rows=4, tokens=80),
    token_limit=1024,
    steps_per_epoch=1,
    total_steps=3,
    tokens_to_train=240,
)


def make_job(job_id: str, **fields: Any) -> JobRecord:
    fields.setdefault("created_at", T0)
    fields.setdefault("validation", VALIDATED)
    fields.setdefault("updated_at", fields["created_at"])
    return JobRecord(
        job_id=job_id,
        job_name=job_id,
        base_model_id="google/gemma-3-1b-it",
        processed_dataset_id="ds1",
        **fields,
    )
