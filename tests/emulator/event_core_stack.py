"""The event-driven core as it runs locally: real servers, real push subscriptions.

`EventCoreStack.start_core` gives a test its own scratch stack (`tuning.local.scratch`:
buckets, topics, jobs collection and launcher directory with a unique suffix) running
the dispatch, on_job_event and reconcile functions as functions-framework servers with
Pub/Sub push subscriptions wired to them. Trainers are `tests/fixtures/fake_trainer.py`
processes started by the local launcher, each steered by a control file per job.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import requests

from tests.fixtures.datasets import SMALL_DATASET
from tuning.ids import SEGMENT_PATTERN
from tuning.jobs import JobRecord
from tuning.launchers.local import read_record
from tuning.local.bootstrap import DeliveryPolicy
from tuning.local.scratch import ScratchStack, wait_for
from tuning.spec import JobReference, TrainRequest, parse_train_request
from tuning.submission import submit_job

__all__ = ["EventCoreStack", "train_request", "wait_for"]

REPO = Path(__file__).resolve().parents[2]
FAKE_TRAINER = REPO / "tests" / "fixtures" / "fake_trainer.py"

# A rejected push comes back about once a second (no retry policy: see DeliveryPolicy).
TEST_DISPATCH = DeliveryPolicy(ack_deadline_seconds=30, max_delivery_attempts=100)
TEST_EVENTS = DeliveryPolicy(ack_deadline_seconds=30, max_delivery_attempts=10)


def train_request(**changes: Any) -> TrainRequest:
    """A small valid request without secrets."""
    data: dict[str, Any] = {
        "processed_dataset_id": "dataset_abc123",
        "job_name": "event-core",
        "training_config": {"base_model_id": "google/gemma-3-1b-it", "method": "LoRA"},
    }
    data.update(changes)
    return parse_train_request(data)


class EventCoreStack(ScratchStack):
    @classmethod
    def start_core(
        cls,
        workdir: Path,
        *,
        dispatch_policy: DeliveryPolicy = TEST_DISPATCH,
        events_policy: DeliveryPolicy = TEST_EVENTS,
        **variables: str,
    ) -> EventCoreStack:
        """Start dispatch, on_job_event and reconcile with fake trainers steered per job."""
        for folder in ("records", "control"):
            (workdir / folder).mkdir(parents=True, exist_ok=True)
        return cls.start(
            workdir,
            functions=("dispatch", "on_job_event", "reconcile"),
            dispatch_policy=dispatch_policy,
            events_policy=events_policy,
            **{
                "LOCAL_TRAINER_COMMAND": f"{sys.executable} {FAKE_TRAINER}",
                "FAKE_TRAINER_RECORD_DIR": str(workdir / "records"),
                "FAKE_TRAINER_CONTROL_DIR": str(workdir / "control"),
                "THREADS": "8",
                **variables,
            },
        )

    # Acting on the stack -----------------------------------------------------------

    def submit(self, request: TrainRequest | None = None, **behaviour: Any) -> str:
        """Queue a job as the submit function does; `behaviour` steers its fake trainer.

        Its dataset is uploaded first when absent (dispatch validates it before a slot)."""
        self.ensure_dataset((request or train_request()).processed_dataset_id)
        submitted = submit_job(
            request or train_request(),
            services=self.services,
            owner="tester@example.com",
            publish=False,
        )
        job_id = submitted.job.job_id
        if behaviour:
            self.control(job_id, **behaviour)
        self.publisher.publish(
            self.settings.requests_topic, JobReference(job_id=job_id), job_id=job_id
        )
        return job_id

    def ensure_dataset(self, dataset_id: str) -> None:
        """A small valid SFT dataset under `dataset_id`, unless it has one."""
        prefix = self.settings.layout.dataset_prefix(dataset_id)
        if not self.services.storage.list(prefix):
            self.services.storage.upload_bytes(f"{prefix}train.jsonl", SMALL_DATASET)

    def control(self, job_id: str, **behaviour: Any) -> None:
        """How the fake trainer behaves for one job (see tests/fixtures/fake_trainer.py)."""
        (self.workdir / "control" / f"{job_id}.json").write_text(json.dumps(behaviour))

    def publish_request(self, data: bytes, **attributes: str) -> str:
        """Publish a message as another service does; a request's dataset is uploaded first."""
        try:
            dataset = json.loads(data).get("processed_dataset_id")
        except (ValueError, AttributeError):
            dataset = None
        if isinstance(dataset, str) and re.fullmatch(SEGMENT_PATTERN, dataset):
            self.ensure_dataset(dataset)
        return self.publisher.publish(self.settings.requests_topic, data, **attributes)

    def reconcile(self) -> dict[str, Any]:
        response = requests.post(f"{self.servers['reconcile'].url}/", timeout=60)
        assert response.status_code == 200, response.text
        return dict(response.json())

    # Looking at the stack ----------------------------------------------------------

    def job(self, job_id: str) -> JobRecord:
        return self.services.jobs.get(job_id)

    def all_jobs(self) -> list[JobRecord]:
        return self.services.jobs.list_jobs(limit=100).jobs

    def executions(self, job_id: str | None = None) -> list[str]:
        """Every execution the local launcher started (for one job, when given)."""
        names = list(self.launcher.executions())
        if job_id is None:
            return names
        return [
            name
            for name in names
            if json.loads((self.launcher.folder(name) / "spec.json").read_text())["job_id"]
            == job_id
        ]

    def trainer_pid(self, execution: str) -> int | None:
        record = read_record(self.launcher.folder(execution))
        return record.trainer_pid if record else None

    def trainer_runs(self) -> list[dict[str, Any]]:
        """What each fake trainer attempt wrote about itself."""
        folder = self.workdir / "records"
        return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]

    def log(self, function: str) -> str:
        return self.servers[function].log()

    def history_size(self, job_id: str) -> int:
        count, token = 0, None
        while True:
            page = self.services.jobs.list_events(job_id, limit=1000, page_token=token)
            count += len(page.events)
            token = page.next_page_token
            if token is None:
                return count
