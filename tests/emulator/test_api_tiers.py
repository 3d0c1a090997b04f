"""POST /train picks the job's GPU tier from its memory estimate; a refusal writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.emulator.test_api_stack import ApiStack, seed_request
from tests.unit.test_tiers import H100X8, L4, RTX

OWNER = "alice@example.com"


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> ApiStack:
    monkeypatch.setenv("GPU_TIERS", json.dumps([L4, RTX, H100X8]))
    return ApiStack.start(monkeypatch, tmp_path, unique)


def request(model: str, method: str, **compute: Any) -> dict[str, Any]:
    body = seed_request()
    body["training_config"].update(base_model_id=model, method=method)
    if method == "Full":  # the whole model is the result: there is no adapter to merge
        body["training_config"]["export_config"]["format"] = "adapter"
    if compute:
        body["training_config"]["compute"] = compute
    return body


def test_the_job_shows_the_tier_its_estimate_chose(stack: ApiStack) -> None:
    answer = stack.submit(request("google/gemma-3-12b-it", "LoRA"), caller=OWNER)

    assert answer.status_code == 202, answer.get_json()
    job_id = answer.get_json()["job_id"]
    placement = stack.get(f"/jobs/{job_id}", caller=OWNER).get_json()["placement"]
    assert (placement["tier"], placement["gpu_type"], placement["gpu_count"]) == (
        "rtx",
        "nvidia-rtx-pro-6000",
        1,
    )
    assert 22.4 * 2**30 < placement["estimate_bytes"] <= placement["gpu_memory_bytes"]
    assert set(placement["estimate"]) == {
        "weights",
        "gradients",
        "optimizer",
        "activations",
        "logits",
        "overhead",
    }


def test_a_named_tier_that_cannot_hold_the_job_is_a_422_that_leaves_nothing(
    stack: ApiStack,
) -> None:
    answer = stack.submit(request("google/gemma-3-27b-it", "Full", tier="rtx"), caller=OWNER)

    assert answer.status_code == 422
    body = answer.get_json()
    assert body["error"]["field"] == "training_config.compute.tier", body
    assert "tier h100x8 fits it" in body["error"]["message"]
    assert stack.job_ids() == []
    assert stack.gcs_objects() == {}
    assert stack.stored_secrets() == {}
    assert stack.pull(stack.settings.requests_topic, expected=1, timeout=2) == []


def test_a_gs_model_is_estimated_from_its_own_config(stack: ApiStack) -> None:
    from tuning.model_catalog import CATALOG

    folder = f"gs://{stack.settings.models_bucket}/base_models/my-27b/"
    config = json.dumps(CATALOG["gemma-3-27b"]["config"]).encode()
    stack.upload(folder + "config.json", config)

    auto = stack.submit(request(folder, "LoRA"), caller=OWNER)
    too_small = stack.submit(request(folder, "LoRA", tier="l4"), caller=OWNER)

    assert auto.status_code == 202, auto.get_json()
    job = stack.services.jobs.get(auto.get_json()["job_id"])
    assert job.placement is not None
    assert (job.placement.tier, job.placement.estimated_from) == ("rtx", folder + "config.json")
    assert too_small.status_code == 422
    assert "cannot hold the job" in too_small.get_json()["error"]["message"]


def test_the_tiers_are_listed_smallest_first(stack: ApiStack) -> None:
    answer = stack.get("/tiers", caller=OWNER)

    assert answer.status_code == 200
    tiers = answer.get_json()["tiers"]
    assert [tier["name"] for tier in tiers] == ["l4", "rtx", "h100x8"]
    assert tiers[2] == {
        "name": "h100x8",
        "engine": "vertex",
        "gpu_type": "NVIDIA_H100_80GB",
        "gpu_count": 8,
        "gpu_memory_gib": 79.6,
        "max_concurrent_jobs": 1,
    }
