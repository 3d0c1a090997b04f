"""What the reliability tests share: requests with fresh secrets, polling, records compared."""

from __future__ import annotations

from typing import Any

from tests.reliability.conftest import Ledger
from tuning.jobs import JobRecord
from tuning.local.scratch import wait_for

__all__ = ["all_jobs", "comparable", "train_request", "wait_for"]

# Fields a store stamps or a dispatcher fills with its own values: not part of "the same record".
VOLATILE = {"updated_at"}


def train_request(ledger: Ledger, **changes: Any) -> dict[str, Any]:
    """A valid request carrying two secrets (Hub token and W&B key) no one has seen before."""
    request: dict[str, Any] = {
        "processed_dataset_id": "dataset_abc123",
        "hf_token": ledger.token("hf_"),
        "job_name": "reliability",
        "training_config": {
            "base_model_id": "google/gemma-3-1b-it",
            "method": "LoRA",
            "wandb_config": {"api_key": ledger.token("wandb"), "project": "reliability"},
        },
    }
    request.update(changes)
    return request


def comparable(job: JobRecord) -> dict[str, Any]:
    return job.model_dump(exclude=VOLATILE)


def all_jobs(stack: Any) -> dict[str, JobRecord]:
    """Every job record of the stack's collection, by id (paging through the list)."""
    jobs: dict[str, JobRecord] = {}
    token = None
    while True:
        page = stack.services.jobs.list_jobs(limit=100, page_token=token)
        jobs.update((job.job_id, job) for job in page.jobs)
        token = page.next_page_token
        if token is None:
            return jobs


def redeliveries(deliveries: list[dict[str, Any]]) -> int:
    """Deliveries beyond the first of each message."""
    return len(deliveries) - len({entry["message_id"] for entry in deliveries})


def seed_job(stack: Any, job_id: str, *, owner: str | None, status: str) -> JobRecord:
    """A job written as dispatch and the trainer would leave it: `queued`, `training` (with an
    execution) or `completed` (with a GGUF file in the models bucket, so it can be downloaded)."""
    from tuning.events import CompletedEvent, CompletedPayload
    from tuning.jobs import Artifacts, JobStatus, Metrics, new_job_record, utcnow
    from tuning.spec import parse_train_request

    request = parse_train_request(
        {
            "processed_dataset_id": "ds1",
            "job_name": f"seeded {job_id}",
            "training_config": {"base_model_id": "google/gemma-3-1b-it"},
        }
    )
    record = new_job_record(
        request, job_id=job_id, owner=owner, config_uri=None, secret_references={}
    )
    if status == "training":
        record = record.model_copy(
            update={"status": JobStatus.TRAINING, "execution": "local-00000000beef"}
        )
    stack.services.jobs.create(record)
    if status != "completed":
        return record
    gguf = stack.settings.layout.gguf_uri(job_id, "q8_0")
    stack.services.storage.upload_bytes(gguf, b"GGUF weights")
    event = CompletedEvent(
        job_id=job_id,
        attempt=0,
        seq=9,
        timestamp=utcnow(),
        payload=CompletedPayload(
            artifacts=Artifacts(gguf_path=gguf), metrics=Metrics(eval_loss=0.5, step=9)
        ),
    )
    transition = stack.services.jobs.apply_event(event)
    assert transition is not None and transition.after.status is JobStatus.COMPLETED
    return transition.after
