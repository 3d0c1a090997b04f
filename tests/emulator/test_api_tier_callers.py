"""Tiers the operator keeps for some callers (`allowed_callers`, review finding F3): submit
refuses them to others with a 422 that names only the caller's tiers, GET /tiers lists only
those, and a published request is placed for its `owner` attribute by the same rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.emulator.event_core_fixtures import start_core
from tests.emulator.test_api_stack import ApiStack
from tests.emulator.test_api_tiers import request
from tests.unit.test_tiers import H100X8, L4
from tuning.dispatching import DispatchOutcome, dispatch_message

CAROL = "carol@example.com"
ANN = "ann@example.com"
TIERS = [L4, {**H100X8, "allowed_callers": [CAROL]}]


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> ApiStack:
    monkeypatch.setenv("GPU_TIERS", json.dumps(TIERS))
    return ApiStack.start(monkeypatch, tmp_path, unique)


def test_a_tier_kept_for_others_is_a_422_naming_only_the_callers_tiers(stack: ApiStack) -> None:
    refused = stack.submit(request("google/gemma-3-1b-it", "LoRA", tier="h100x8"), caller=ANN)
    accepted = stack.submit(request("google/gemma-3-1b-it", "LoRA", tier="h100x8"), caller=CAROL)

    assert refused.status_code == 422
    error = refused.get_json()["error"]
    assert error["field"] == "training_config.compute.tier"
    assert error["message"] == "no tier 'h100x8' here: use auto or one of l4"
    assert accepted.status_code == 202, accepted.get_json()
    assert stack.job_ids() == [accepted.get_json()["job_id"]]


def test_auto_never_places_a_job_on_a_tier_kept_for_others(stack: ApiStack) -> None:
    # Gemma 3 12B Full needs the 8 x H100 tier: Carol's job goes there, Ann's fits nowhere.
    anns = stack.submit(request("google/gemma-3-12b-it", "Full"), caller=ANN)
    carols = stack.submit(request("google/gemma-3-12b-it", "Full"), caller=CAROL)

    assert anns.status_code == 422
    assert "h100" not in anns.get_json()["error"]["message"].lower()
    assert carols.status_code == 202, carols.get_json()
    job = stack.services.jobs.get(carols.get_json()["job_id"])
    assert job.placement is not None and job.placement.tier == "h100x8"


def test_the_tiers_listed_are_the_callers(stack: ApiStack) -> None:
    anns = stack.get("/tiers", caller=ANN).get_json()["tiers"]
    carols = stack.get("/tiers", caller=CAROL).get_json()["tiers"]

    assert [tier["name"] for tier in anns] == ["l4"]
    assert [tier["name"] for tier in carols] == ["l4", "h100x8"]


def test_a_published_request_is_placed_for_its_owner(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str
) -> None:
    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(tmp_path / "secrets.json"))
    core = start_core(unique, GPU_TIERS=json.dumps(TIERS))
    published = {
        "processed_dataset_id": "dataset_abc123",
        "training_config": {
            "base_model_id": "google/gemma-3-1b-it",
            "method": "LoRA",
            "compute": {"tier": "h100x8"},
        },
    }
    body = json.dumps(published).encode()

    def deliver(message_id: str, **attributes: str) -> DispatchOutcome:
        return dispatch_message(
            data=body, message_id=message_id, attributes=attributes, services=core.services
        ).outcome

    assert deliver("m-ann", owner=ANN) is DispatchOutcome.REJECTED
    assert deliver("m-nobody") is DispatchOutcome.REJECTED  # naming nobody is not Carol
    assert core.services.jobs.list_jobs(limit=10).jobs == []
    assert deliver("m-carol", owner=CAROL) is DispatchOutcome.LAUNCHED
    (job,) = core.services.jobs.list_jobs(limit=10).jobs
    assert (job.owner, job.placement.tier if job.placement else None) == (CAROL, "h100x8")
