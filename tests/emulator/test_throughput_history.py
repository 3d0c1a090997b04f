"""Completed jobs' measured throughput on the emulators: recorded once, never lost, then used."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from tests.emulator.event_core_fixtures import T0, Core, make_job, start_core
from tuning.event_sink import record_job_event
from tuning.events import CompletedEvent, CompletedPayload, FailedEvent, FailedPayload
from tuning.jobs import (
    Artifacts,
    DatasetStats,
    ErrorType,
    JobError,
    JobStatus,
    Metrics,
    Placement,
    Progress,
)
from tuning.pricing import FROM_HISTORY, HISTORY_MIN_JOBS, ThroughputKey, estimate_costs
from tuning.tiers import Engine, GpuTier

MODEL = "google/gemma-3-1b-it"
KEY = ThroughputKey(tier="default", base_model_id=MODEL, method="QLoRA", trainer_type="sft")
TIER = GpuTier(
    name="default",
    engine=Engine.CLOUD_RUN,
    gpu_type="nvidia-l4",
    gpu_memory_gib=22.4,
    cloud_run_job="trainer",
)


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> Core:
    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(tmp_path / "secrets.json"))
    return start_core(unique)


def training_job(core: Core, job_id: str) -> None:
    placement = Placement(tier="default", gpu_type="nvidia-l4", gpu_memory_bytes=1)
    core.services.jobs.create(make_job(job_id, status=JobStatus.TRAINING, placement=placement))


def completed(job_id: str, *, runtime: float) -> bytes:
    """A job that trained 40,000 tokens (2 epochs of 20,000 in 100 steps) in `runtime` s."""
    event = CompletedEvent(
        job_id=job_id,
        attempt=0,
        seq=9,
        timestamp=T0 + timedelta(minutes=5),
        payload=CompletedPayload(
            artifacts=Artifacts(adapter_path=f"gs://m/{job_id}/"),
            progress=Progress(step=100, total_steps=100, epoch=2.0),
            metrics=Metrics(step=100, train_runtime=runtime),
            dataset_stats=DatasetStats(train_rows=10, train_tokens=20_000),
        ),
    )
    return event.model_dump_json().encode()


def failed(job_id: str) -> bytes:
    event = FailedEvent(
        job_id=job_id,
        attempt=0,
        seq=9,
        timestamp=T0 + timedelta(minutes=5),
        payload=FailedPayload(
            error=JobError(type=ErrorType.SYSTEM, message="the GPU fell off"),
            progress=Progress(step=100, total_steps=100, epoch=2.0),
            metrics=Metrics(step=100, train_runtime=10.0),
            dataset_stats=DatasetStats(train_rows=10, train_tokens=20_000),
        ),
    )
    return event.model_dump_json().encode()


def test_a_completed_job_records_its_throughput_once_however_often_delivered(core):
    training_job(core, "job-a")

    for message_id in ("1", "2", "3"):
        record_job_event(
            data=completed("job-a", runtime=20.0), message_id=message_id, services=core.services
        )

    measured = core.services.throughput.lookup(KEY)
    assert measured is not None
    assert (measured.jobs, measured.tokens_per_second) == (1, 40_000 / 20.0)


def test_a_failed_job_records_nothing(core):
    training_job(core, "job-a")

    record_job_event(data=failed("job-a"), message_id="1", services=core.services)

    assert core.services.jobs.get("job-a").status is JobStatus.FAILED
    assert core.services.throughput.lookup(KEY) is None


def test_concurrent_completions_lose_no_update(core):
    runtimes = {f"job-{index}": 10.0 + index for index in range(8)}
    for job_id in runtimes:
        training_job(core, job_id)

    with ThreadPoolExecutor(max_workers=len(runtimes)) as pool:
        list(
            pool.map(
                lambda job_id: record_job_event(
                    data=completed(job_id, runtime=runtimes[job_id]),
                    message_id=job_id,
                    services=core.services,
                ),
                runtimes,
            )
        )

    measured = core.services.throughput.lookup(KEY)
    assert measured is not None
    assert measured.jobs == len(runtimes)
    expected = sum(40_000 / runtime for runtime in runtimes.values()) / len(runtimes)
    assert measured.tokens_per_second == pytest.approx(expected)


def test_estimates_use_the_history_from_k_completed_jobs_and_not_before(core):
    def estimate():
        (cost,) = estimate_costs(
            [TIER],
            parameters=999_885_952,
            method="QLoRA",
            trainer_type="sft",
            base_model_id=MODEL,
            tokens=4_000_000,
            history=core.services.throughput,
        )
        return cost

    for index in range(HISTORY_MIN_JOBS):
        assert estimate().throughput_source.startswith("table:")
        training_job(core, f"job-{index}")
        record_job_event(
            data=completed(f"job-{index}", runtime=40.0),
            message_id=str(index),
            services=core.services,
        )

    cost = estimate()
    assert (cost.tokens_per_second, cost.throughput_source) == (1000.0, FROM_HISTORY)
    assert cost.estimated_seconds == 4000.0
