"""The status function: list, get, events and signed downloads, against the emulators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from tests.emulator.test_api_stack import ApiStack, now_minus, seed_request
from tuning.events import ProgressEvent, TrainingEvent, TrainingPayload
from tuning.jobs import Artifacts, JobStatus, Progress

SEED_LIST_FIELDS = {"job_id", "job_name", "base_model_id", "status", "modality"}
SEED_DETAIL_FIELDS = {
    "job_name",
    "status",
    "modality",
    "wandb_url",
    "adapter_path",
    "base_model_id",
    "gguf_path",
    "metrics",
    "error",
}


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> ApiStack:
    return ApiStack.start(monkeypatch, tmp_path, unique)


def test_list_is_newest_first_a_page_at_a_time(stack: ApiStack) -> None:
    for age in range(5):
        stack.make_job(f"job-{age}", created_at=now_minus(100 * age))

    pages, token = [], None
    while True:
        answer = stack.get("/jobs", limit=2, **({"page_token": token} if token else {}))
        assert answer.status_code == 200
        body = answer.get_json()
        pages.append([job["job_id"] for job in body["jobs"]])
        token = body["next_page_token"]
        if token is None:
            break

    assert pages == [["job-0", "job-1"], ["job-2", "job-3"], ["job-4"]]
    item = stack.get("/jobs").get_json()["jobs"][0]
    assert set(item) == SEED_LIST_FIELDS | {"created_at", "updated_at"}


def test_list_filters_by_status(stack: ApiStack) -> None:
    stack.make_job("queued-1")
    stack.make_job("failed-1", status=JobStatus.FAILED)
    stack.make_job("failed-2", status=JobStatus.FAILED)

    answer = stack.get("/jobs", status="failed")

    assert sorted(job["job_id"] for job in answer.get_json()["jobs"]) == ["failed-1", "failed-2"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "running"}, "status"),
        ({"statuss": "failed"}, "statuss"),
    ],
)
def test_list_rejects_bad_parameters_naming_them(
    stack: ApiStack, query: dict[str, object], field: str
) -> None:
    answer = stack.get("/jobs", **query)

    assert answer.status_code == 422
    assert answer.get_json()["error"]["field"] == field


def test_get_shows_the_seed_fields_progress_and_no_secret(stack: ApiStack) -> None:
    job_id = stack.submit(seed_request(), caller="alice@example.com").get_json()["job_id"]
    now = datetime.now(UTC)
    stack.services.jobs.apply_event(
        TrainingEvent(
            job_id=job_id,
            attempt=0,
            seq=1,
            timestamp=now,
            payload=TrainingPayload(total_steps=40, wandb_url="https://wandb.ai/team/run"),
        )
    )
    stack.services.jobs.apply_event(
        ProgressEvent(
            job_id=job_id,
            attempt=0,
            seq=2,
            timestamp=now + timedelta(seconds=1),
            payload=Progress(step=10, total_steps=40, epoch=0.5, eta_seconds=90.0, loss=1.2),
        )
    )

    answer = stack.get(f"/jobs/{job_id}")

    assert answer.status_code == 200
    body = answer.get_json()
    assert set(body) >= SEED_DETAIL_FIELDS
    assert {"job_id", "created_at", "updated_at", "artifacts", "attempt", "execution"} <= set(body)
    assert body["status"] == "training"
    assert body["wandb_url"] == "https://wandb.ai/team/run"
    progress = body["progress"]
    assert {name: progress[name] for name in ("step", "total_steps", "epoch", "percent")} == {
        "step": 10,
        "total_steps": 40,
        "epoch": 0.5,
        "percent": 25.0,
    }
    assert (progress["eta_seconds"], progress["loss"]) == (90.0, 1.2)
    text = answer.get_data(as_text=True)
    assert "secret_references" not in text
    assert "secrets/" not in text
    assert seed_request()["hf_token"] not in text


@pytest.mark.parametrize("job_id", ["training_missing_job", "no.dots", "x" * 200])
def test_get_an_unknown_job_is_404(stack: ApiStack, job_id: str) -> None:
    answer = stack.get(f"/jobs/{job_id}")

    assert answer.status_code == 404
    assert answer.get_json()["error"] == {
        "code": "not_found",
        "message": "job not found",
        "field": "job_id",
    }


def test_events_come_oldest_first_a_page_at_a_time(stack: ApiStack) -> None:
    stack.make_job("job-ev")
    start = datetime.now(UTC)
    for step in range(5):
        stack.services.jobs.apply_event(
            ProgressEvent(
                job_id="job-ev",
                attempt=0,
                seq=step,
                timestamp=start + timedelta(seconds=step),
                payload=Progress(step=step * 10, total_steps=50, loss=2.0 - step / 10),
            )
        )

    events, token = [], None
    while True:
        body = stack.get(
            "/jobs/job-ev/events", limit=2, **({"page_token": token} if token else {})
        ).get_json()
        events += body["events"]
        token = body["next_page_token"]
        if token is None:
            break

    assert [event["payload"]["step"] for event in events] == [0, 10, 20, 30, 40]
    assert {event["type"] for event in events} == {"progress"}
    assert stack.get("/jobs/nobody/events").status_code == 404


@pytest.fixture
def completed(stack: ApiStack) -> dict[str, bytes]:
    """A completed job `done` whose adapter, merged model and GGUF files are in GCS."""
    layout = stack.settings.layout
    files = {
        layout.gguf_uri("done", "q8_0"): b"GGUF q8 bytes",
        layout.gguf_uri("done", "q4_k_m"): b"GGUF q4 bytes",
        layout.adapter_prefix("done") + "adapter_config.json": b'{"r": 16}',
        layout.adapter_prefix("done") + "adapter_model.safetensors": b"adapter weights",
        layout.merged_prefix("done") + "config.json": b"{}",
        layout.merged_prefix("done") + "model-00001-of-00002.safetensors": b"shard one",
        layout.merged_prefix("done") + "model-00002-of-00002.safetensors": b"shard two",
    }
    stack.make_job("done", status=JobStatus.EXPORTING)
    for uri, data in files.items():
        stack.upload(uri, data)
    stack.complete_job(
        "done",
        Artifacts(
            adapter_path=layout.adapter_prefix("done"),
            merged_path=layout.merged_prefix("done"),
            gguf_path=layout.gguf_uri("done", "q8_0"),
            gguf_files={
                "q8_0": layout.gguf_uri("done", "q8_0"),
                "q4_k_m": layout.gguf_uri("done", "q4_k_m"),
            },
        ),
    )
    return files


def fetch(url: str) -> bytes:
    answer = requests.get(url, timeout=10)
    answer.raise_for_status()
    return answer.content


def test_download_url_fetches_the_gguf_file(stack: ApiStack, completed: dict[str, bytes]) -> None:
    before = datetime.now(UTC)

    answer = stack.get("/jobs/download/done")

    assert answer.status_code == 200
    body = answer.get_json()
    assert fetch(body["download_url"]) == b"GGUF q8 bytes"
    assert "X-Goog-Signature" in body["download_url"]
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert (
        before + timedelta(seconds=899) <= expires_at <= datetime.now(UTC) + timedelta(minutes=15)
    )
    assert [file["path"] for file in body["files"]] == ["model-q8_0.gguf"]
    other = stack.get("/jobs/download/done", artifact="gguf", quantization="q4_k_m").get_json()
    assert fetch(other["download_url"]) == b"GGUF q4 bytes"


@pytest.mark.parametrize(
    ("artifact", "main_file"),
    [("adapter", "adapter_model.safetensors"), ("merged", "model-00001-of-00002.safetensors")],
)
def test_folder_artifacts_sign_every_file(
    stack: ApiStack, completed: dict[str, bytes], artifact: str, main_file: str
) -> None:
    body = stack.get("/jobs/download/done", artifact=artifact).get_json()

    fetched = {file["path"]: fetch(file["download_url"]) for file in body["files"]}

    folder = {"adapter": "trained_adapters", "merged": "merged_models"}[artifact]
    expected = {
        uri.rsplit("/", 1)[-1]: data for uri, data in completed.items() if f"/{folder}/" in uri
    }
    assert fetched == expected
    assert fetch(body["download_url"]) == expected[main_file]


def test_download_answers_409_until_completed_and_404_for_what_is_missing(
    stack: ApiStack, completed: dict[str, bytes]
) -> None:
    stack.make_job("running", status=JobStatus.TRAINING)
    stack.services.storage.delete(stack.settings.layout.gguf_uri("done", "q4_k_m"))

    running = stack.get("/jobs/download/running")
    missing_job = stack.get("/jobs/download/nobody")
    missing_file = stack.get("/jobs/download/done", quantization="q4_k_m")
    missing_quant = stack.get("/jobs/download/done", quantization="f16")

    assert running.status_code == 409
    assert "training" in running.get_json()["error"]["message"]
    assert missing_job.status_code == 404
    assert (missing_file.status_code, missing_quant.status_code) == (404, 404)
    assert missing_quant.get_json()["error"]["field"] == "artifact"


def test_download_never_signs_another_jobs_files(stack: ApiStack) -> None:
    layout = stack.settings.layout
    stack.upload(layout.adapter_prefix("victim") + "adapter_model.safetensors")
    stack.make_job("thief")
    stack.complete_job("thief", Artifacts(adapter_path=layout.adapter_prefix("victim")))

    answer = stack.get("/jobs/download/thief", artifact="adapter")

    assert answer.status_code == 404
