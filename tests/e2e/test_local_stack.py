"""The whole local stack through its public surfaces only: HTTP (via the CLI) and Pub/Sub."""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.e2e.conftest import LocalStack
from tuning.gcp.pubsub import Publisher
from tuning.gcp.storage import GcsStore
from tuning.local.demo import demo_request
from tuning.local.stack import MULTI_GPU_TIER


def quick_request(local_stack: LocalStack, **hyperparameters: Any) -> dict[str, Any]:
    """The demo job, shortened: a few steps are enough to cross every stage."""
    request = demo_request(
        local_stack.exports["TUNING_DEMO_MODEL"], local_stack.exports["TUNING_DEMO_DATASET"]
    )
    request["training_config"]["hyperparameters"].update(
        {"max_steps": 6, "logging_steps": 1, "save_strategy": "no", **hyperparameters}
    )
    # LoRA, merged on export: these tests follow an adapter and a merged model through every
    # route (the demo itself trains Full, which exports the whole model as its adapter).
    request["training_config"].update(
        method="LoRA", export_config={"format": "merged", "destination": "gcs"}
    )
    # Sample answers stay on (the default) but short: they cost generation on every job.
    request["training_config"]["eval_config"]["sample_max_new_tokens"] = 8
    return request


def finished(job: dict[str, Any]) -> bool:
    return job["status"] in {"completed", "failed", "cancelled"}


@pytest.fixture(scope="module")
def completed_job(local_stack: LocalStack) -> dict[str, Any]:
    job_id = local_stack.submit(quick_request(local_stack), "completed")
    return local_stack.wait_for(job_id, finished)


def test_submitted_job_is_trained_exported_and_completed(completed_job: dict[str, Any]) -> None:
    assert completed_job["status"] == "completed", completed_job.get("error")
    metrics = completed_job["metrics"]
    assert metrics["eval_loss"] > 0
    assert metrics["perplexity"] == pytest.approx(2.718281828 ** metrics["eval_loss"], rel=1e-6)
    assert completed_job["artifacts"]["adapter_path"].endswith(f"/{completed_job['job_id']}/")
    assert completed_job["artifacts"]["merged_path"].endswith(f"/{completed_job['job_id']}/")
    assert completed_job["progress"]["step"] == completed_job["progress"]["total_steps"] == 6


def test_events_and_plot_show_both_loss_curves(
    local_stack: LocalStack, completed_job: dict[str, Any], tmp_path: Path
) -> None:
    job_id = completed_job["job_id"]
    history = json.loads(local_stack.cli("--json", "events", job_id).stdout)
    types = [event["type"] for event in history]
    assert types[0] == "preparing" and types[-1] == "completed"
    assert {"training", "progress", "evaluation", "exporting"} <= set(types)

    plot = tmp_path / "loss.png"
    local_stack.cli("plot", job_id, "-o", str(plot))

    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 100


def test_logs_show_the_end_of_the_trainer_log(
    local_stack: LocalStack, completed_job: dict[str, Any]
) -> None:
    job_id = completed_job["job_id"]
    whole = local_stack.cli("logs", job_id, "--lines", "10000").stdout.splitlines()
    last = local_stack.cli("logs", job_id, "--lines", "3").stdout.splitlines()

    assert "[supervisor local-" in whole[0] and "attempt 0:" in whole[0]
    assert any(f"published completed event {job_id}" in line for line in whole), whole[-20:]
    # The end of the same file (its supervisor may still add its final line meanwhile).
    assert len(last) == 3 and last[0] in whole[-4:]


def test_samples_show_base_and_tuned_answers_side_by_side(
    local_stack: LocalStack, completed_job: dict[str, Any]
) -> None:
    job_id = completed_job["job_id"]
    samples = json.loads(local_stack.cli("--json", "samples", job_id).stdout)
    shown = local_stack.cli("samples", job_id, "--width", "100").stdout

    assert samples["job_id"] == job_id and samples["samples"]
    assert all(s["base_answer"] is not None and "tuned_answer" in s for s in samples["samples"])
    assert completed_job["artifacts"]["samples_path"].endswith(f"/{job_id}/samples.jsonl")
    assert "fine-tuned" in shown and samples["samples"][0]["prompt"][:30] in shown
    scores = completed_job["metrics"].get("eval_scores")
    assert scores == samples["eval_scores"]


def test_download_fetches_the_merged_model(
    local_stack: LocalStack, completed_job: dict[str, Any], tmp_path: Path
) -> None:
    local_stack.cli(
        "download", completed_job["job_id"], "--artifact", "merged", "-o", str(tmp_path)
    )

    names = {path.name for path in tmp_path.iterdir()}
    assert any(name.endswith(".safetensors") for name in names), names


def test_watch_shows_a_progress_bar_that_advances(local_stack: LocalStack) -> None:
    # Long enough (several of the local stack's 1 s progress intervals, even on a fast
    # machine) for the 0.5 s polls to see the bar at more than one step.
    job_id = local_stack.submit(quick_request(local_stack, max_steps=60), "watched")

    result = local_stack.cli("watch", job_id, "--interval", "0.5", "--timeout", "300")

    steps = {part.split("/")[0].split()[-1] for part in result.stderr.split("|") if "/60" in part}
    assert result.returncode == 0
    assert len(steps) >= 2, result.stderr[-2000:]
    assert "completed" in result.stdout


def test_request_published_by_another_service_completes(local_stack: LocalStack) -> None:
    name = f"from-another-service-{uuid.uuid4().hex[:8]}"
    request = quick_request(local_stack)
    request["job_name"] = name

    with local_stack.scoped():
        Publisher(local_stack.exports["GOOGLE_CLOUD_PROJECT"]).publish(
            local_stack.exports["TUNING_REQUESTS_TOPIC"], request
        )

    def published_job() -> dict[str, Any] | None:
        listing = json.loads(local_stack.cli("--json", "list", "--limit", "100").stdout)
        return next((job for job in listing["jobs"] if job["job_name"] == name), None)

    job = None
    for _ in range(60):
        job = published_job()
        if job is not None:
            break
        time.sleep(1)
    assert job is not None, "the published request never became a job"
    final = local_stack.wait_for(job["job_id"], finished)
    assert final["status"] == "completed", final.get("error")


def test_cancel_stops_a_running_job_and_keeps_it_cancelled(local_stack: LocalStack) -> None:
    job_id = local_stack.submit(quick_request(local_stack, max_steps=400), "cancelled")
    local_stack.wait_for(job_id, lambda job: (job.get("progress") or {}).get("step", 0) >= 2)

    local_stack.cli("cancel", job_id)

    assert local_stack.job(job_id)["status"] == "cancelled"
    time.sleep(5)  # late events of the stopped execution must not revive it
    job = local_stack.job(job_id)
    assert job["status"] == "cancelled"
    assert job["progress"]["step"] < 400


def test_delete_removes_every_object_of_a_completed_job(local_stack: LocalStack) -> None:
    job_id = local_stack.submit(quick_request(local_stack), "deleted")
    assert local_stack.wait_for(job_id, finished)["status"] == "completed"
    models = local_stack.exports["TUNING_MODELS_BUCKET"]
    config = local_stack.exports["TUNING_CONFIG_BUCKET"]
    with local_stack.scoped():
        before = GcsStore().list(f"gs://{models}/")
    assert any(f"/{job_id}/" in uri for uri in before)

    local_stack.cli("delete", job_id)

    with local_stack.scoped():
        remaining = GcsStore().list(f"gs://{models}/") + GcsStore().list(f"gs://{config}/")
    assert not [uri for uri in remaining if job_id in uri]
    assert local_stack.cli("status", job_id, check=False).returncode == 1


def test_job_with_an_invalid_dataset_fails_as_a_user_error(local_stack: LocalStack) -> None:
    dataset_id = f"broken-{uuid.uuid4().hex[:8]}"
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {"messages": [{"role": "user", "content": "no answer here"}]},
    ]
    data = local_stack.exports["TUNING_DATA_BUCKET"]
    with local_stack.scoped():
        GcsStore().upload_bytes(
            f"gs://{data}/processed_datasets/{dataset_id}/train.jsonl",
            "".join(json.dumps(row) + "\n" for row in rows).encode(),
        )
    request = copy.deepcopy(quick_request(local_stack))
    request["processed_dataset_id"] = dataset_id

    job = local_stack.wait_for(local_stack.submit(request, "broken"), finished)

    assert job["status"] == "failed"
    assert job["error"]["type"] == "user" and job["error"]["code"] == "invalid_dataset"
    assert "row 1, field 'messages': no assistant message" in job["error"]["message"]
    # Refused by dispatch's validation before any GPU: no execution was ever started.
    assert job["executions"] == 0 and job["execution"] is None


def test_the_dry_run_counts_what_the_trainer_trained_and_the_job_keeps_its_estimate(
    local_stack: LocalStack, completed_job: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "estimate.json"
    path.write_text(json.dumps(quick_request(local_stack)))

    answer = json.loads(local_stack.cli("--json", "estimate", str(path)).stdout)
    printed = local_stack.cli("estimate", str(path)).stdout

    validation, stats = answer["validation"], completed_job["dataset_stats"]
    assert validation["train"]["rows"] == stats["train_rows"]
    assert validation["train"]["tokens"] == stats["train_tokens"]
    assert validation["train"]["truncated_rows"] == stats["truncated_rows"]
    assert validation["total_steps"] == completed_job["progress"]["total_steps"] == 6
    assert completed_job["validation"]["train"] == validation["train"]
    estimate = completed_job["estimate"]
    assert estimate["tier"] == answer["placement"]["tier"]
    assert estimate["estimated_steps"] == 6 and estimate["actual_steps"] == 6
    assert estimate["actual_seconds"] > 0 and estimate["estimated_seconds"] is not None
    assert f"{stats['train_rows']} rows, {stats['train_tokens']} tokens" in printed


def test_job_on_a_two_gpu_tier_trains_as_two_processes_with_one_set_of_events(
    local_stack: LocalStack,
) -> None:
    request = quick_request(local_stack)
    request["training_config"]["compute"] = {"tier": MULTI_GPU_TIER}
    job_id = local_stack.submit(request, "two-gpus")

    job = local_stack.wait_for(job_id, finished, timeout=600)

    assert job["status"] == "completed", job.get("error")
    assert job["placement"]["tier"] == MULTI_GPU_TIER and job["placement"]["gpu_count"] == 2
    assert job["progress"]["step"] == job["progress"]["total_steps"] == 6
    types = [
        event["type"] for event in json.loads(local_stack.cli("--json", "events", job_id).stdout)
    ]
    # Rank 0 alone publishes: the stages a job passes once appear once, as for one process.
    assert types.count("training") == types.count("exporting") == types.count("completed") == 1
    log = local_stack.cli("logs", job_id, "--lines", "10000").stdout
    assert "torch.distributed.run --standalone --nproc_per_node=2" in log
    assert "rank 1: done" in log  # the follower trained and took part in the gather

    local_stack.cli("delete", job_id)
    models = local_stack.exports["TUNING_MODELS_BUCKET"]
    with local_stack.scoped():
        assert not [uri for uri in GcsStore().list(f"gs://{models}/") if job_id in uri]


def test_checkpoints_are_listed_downloaded_and_continued_from(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    parent = local_stack.submit(
        quick_request(local_stack, save_strategy="steps", save_steps=2), "parent"
    )
    assert local_stack.wait_for(parent, finished)["status"] == "completed"

    listed = json.loads(local_stack.cli("--json", "checkpoints", parent).stdout)["checkpoints"]
    assert [checkpoint["step"] for checkpoint in listed] == [6, 4, 2]  # save_total_limit 3
    assert all(checkpoint["train_loss"] is not None for checkpoint in listed)
    table = local_stack.cli("checkpoints", parent).stdout
    assert table.splitlines()[0].split()[:2] == ["step", "epoch"] and len(table.splitlines()) == 4
    local_stack.cli("download", parent, "--checkpoint", "4", "-o", str(tmp_path / "at-4"))
    names = {path.name for path in (tmp_path / "at-4").iterdir()}
    assert "adapter_model.safetensors" in names and "optimizer.pt" not in names

    request = quick_request(local_stack)
    request["training_config"]["from_job"] = f"{parent}:4"
    child = local_stack.submit(request, "child")
    job = local_stack.wait_for(child, finished)
    assert job["status"] == "completed", job.get("error")
    assert job["lineage"] == {"parent_job_id": parent, "parent_step": 4}

    other = local_stack.cli(
        "--as",
        "mallory@example.com",
        "submit",
        str(local_stack.workdir / "child.json"),
        check=False,
    )
    assert other.returncode != 0 and "of yours" in other.stderr


def test_a_paused_job_checkpoints_stops_and_resumes_to_completion(local_stack: LocalStack) -> None:
    # Long enough that the pause lands mid-run: the trainer reads its record every 2 s here,
    # and on an idle machine the tiny model trains some 25 steps a second.
    job_id = local_stack.submit(quick_request(local_stack, max_steps=400), "paused")
    local_stack.wait_for(job_id, lambda job: (job.get("progress") or {}).get("step", 0) >= 3)

    local_stack.cli("pause", job_id)
    paused = local_stack.wait_for(job_id, lambda job: job["status"] in {"paused", "failed"})

    assert paused["status"] == "paused", paused.get("error")
    stopped_at = paused["last_attempt_end"]["checkpoint_step"]
    assert stopped_at is not None and 3 <= stopped_at < 400
    local_stack.cli("resume", job_id)
    done = local_stack.wait_for(job_id, finished)
    assert done["status"] == "completed", done.get("error")
    assert done["resumed_from_step"] == stopped_at
    assert done["progress"]["step"] == 400 and done["executions"] == 2
