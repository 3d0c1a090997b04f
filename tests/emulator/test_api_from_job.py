"""`training_config.from_job` at submit: only the caller's own jobs, compatible ones, weights
that exist; the job records its lineage and the status shows it (against the emulators)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.emulator.test_api_stack import ApiStack, seed_request
from tuning.checkpoints import MARKER
from tuning.jobs import Artifacts
from tuning.spec import TrainerType

ALICE, BOB = "alice@example.com", "bob@example.com"


@pytest.fixture(params=[True, False], ids=["owner-scoping", "shared-deployment"])
def stack(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str
) -> ApiStack:
    return ApiStack.start(monkeypatch, tmp_path, unique, owner_scoping=request.param)


def finished_job_of(stack: ApiStack, owner: str) -> str:
    """A completed job with its adapter exported and a checkpoint at step 5."""
    job_id = stack.submit(seed_request(), caller=owner).get_json()["job_id"]
    layout = stack.settings.layout
    stack.upload(f"{layout.adapter_prefix(job_id)}adapter_model.safetensors")
    checkpoint = layout.checkpoint_prefix(job_id, 5)
    stack.upload(f"{checkpoint}adapter_model.safetensors")
    stack.upload(f"{checkpoint}{MARKER}", b'{"step": 5}')
    stack.complete_job(job_id, Artifacts(adapter_path=layout.adapter_prefix(job_id)))
    return job_id


def continuing(parent: str, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(seed_request())
    body["job_name"] = "continued"
    body["training_config"].update(from_job=parent, **changes)
    return body


@pytest.mark.parametrize("reference", ["{job}", "{job}:5"])
def test_a_job_continues_the_callers_own_job_and_shows_its_lineage(
    stack: ApiStack, reference: str
) -> None:
    parent = finished_job_of(stack, ALICE)

    answer = stack.submit(continuing(reference.format(job=parent)), caller=ALICE)

    assert answer.status_code == 202, answer.get_json()
    child = stack.get(f"/jobs/{answer.get_json()['job_id']}", caller=ALICE).get_json()
    step = 5 if reference.endswith(":5") else None
    assert child["lineage"] == {"parent_job_id": parent, "parent_step": step}
    layout = stack.settings.layout
    record = stack.services.jobs.get(child["job_id"])
    assert record.lineage is not None
    expected = layout.checkpoint_prefix(parent, 5) if step else layout.adapter_prefix(parent)
    assert record.lineage.weights == expected


@pytest.mark.parametrize("reference", ["{job}", "{job}:5"])
def test_another_callers_job_is_not_found_and_nothing_is_written(
    stack: ApiStack, reference: str
) -> None:
    alices = finished_job_of(stack, ALICE)
    before = {job.job_id for job in stack.services.jobs.list_jobs(limit=100).jobs}

    answer = stack.submit(continuing(reference.format(job=alices)), caller=BOB)

    assert answer.status_code == 404
    error = answer.get_json()["error"]
    assert error["field"] == "training_config.from_job"
    assert alices in error["message"] and "of yours" in error["message"]
    assert {job.job_id for job in stack.services.jobs.list_jobs(limit=100).jobs} == before


@pytest.mark.parametrize(
    ("reference", "changes", "field"),
    [
        ("{job}", {"base_model_id": "google/gemma-3-4b-it"}, "training_config.base_model_id"),
        (
            "{job}",
            {"method": "Full", "export_config": {"format": "adapter"}},
            "training_config.method",
        ),
        ("{job}:6", {}, "training_config.from_job"),  # no checkpoint at step 6
        ("nobody-job", {}, "training_config.from_job"),
    ],
)
def test_an_incompatible_or_missing_parent_is_refused_naming_the_field(
    stack: ApiStack, reference: str, changes: dict[str, Any], field: str
) -> None:
    parent = finished_job_of(stack, ALICE)

    answer = stack.submit(continuing(reference.format(job=parent), **changes), caller=ALICE)

    assert answer.status_code in (404, 422), answer.get_json()
    assert answer.get_json()["error"]["field"] == field


def test_only_an_sft_job_continues_as_another_trainer_type(stack: ApiStack) -> None:
    parent = finished_job_of(stack, ALICE)
    stack.services.jobs.update(  # make it a DPO job
        parent, lambda job: job.model_copy(update={"trainer_type": TrainerType.DPO})
    )

    answer = stack.submit(continuing(parent), caller=ALICE)  # continued as SFT

    assert answer.status_code == 422
    assert answer.get_json()["error"]["field"] == "training_config.trainer_type"


def test_a_running_job_continues_only_from_a_checkpoint(stack: ApiStack) -> None:
    running = stack.submit(seed_request(), caller=ALICE).get_json()["job_id"]

    answer = stack.submit(continuing(running), caller=ALICE)

    assert answer.status_code == 422
    assert "checkpoints" in answer.get_json()["error"]["message"]
