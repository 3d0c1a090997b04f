"""`GET /jobs/{job_id}/samples` through the status function (against the emulators): the
trainer's samples file and the job's eval scores, owner-scoped like every job route."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.emulator.test_api_stack import ApiStack, seed_request
from tuning.events import CompletedEvent, CompletedPayload
from tuning.jobs import Artifacts, EvalScore, JobStatus, Metrics
from tuning.samples import SampleLine, ScorePair, encode_lines

ALICE, BOB = "alice@example.com", "bob@example.com"
LINES = [
    SampleLine(
        prompt="What colour is apple?",
        reference="red",
        base_answer="dwhl dwhl",
        tuned_answer="red",
        source="eval",
        scored=True,
        scores={"exact_match": ScorePair(base=0.0, tuned=1.0)},
    ),
    SampleLine(prompt="Hi?", base_answer="hm", tuned_answer="hello", source="request"),
]
SCORES = {"exact_match": EvalScore(base=0.0, tuned=0.75, rows=8)}


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> ApiStack:
    return ApiStack.start(monkeypatch, tmp_path, unique, owner_scoping=True)


def trained_job(stack: ApiStack, owner: str) -> str:
    """A completed job of `owner` whose trainer wrote samples and scored the eval rows."""
    job_id = stack.submit(seed_request(), caller=owner).get_json()["job_id"]
    samples = stack.upload(stack.settings.layout.samples_uri(job_id), encode_lines(LINES))
    event = CompletedEvent(
        job_id=job_id,
        attempt=0,
        seq=9,
        timestamp=datetime.now(UTC),
        payload=CompletedPayload(
            artifacts=Artifacts(samples_path=samples),
            metrics=Metrics(eval_loss=0.4, eval_scores=SCORES, step=12),
        ),
    )
    transition = stack.services.jobs.apply_event(event)
    assert transition is not None and transition.after.status is JobStatus.COMPLETED
    return job_id


def test_the_samples_and_the_jobs_eval_scores_are_served_to_its_owner(stack: ApiStack) -> None:
    job_id = trained_job(stack, ALICE)

    answer = stack.get(f"/jobs/{job_id}/samples", caller=ALICE)
    record = stack.get(f"/jobs/{job_id}", caller=ALICE).get_json()

    assert answer.status_code == 200
    body = answer.get_json()
    assert body["job_id"] == job_id
    assert body["samples"] == [line.model_dump(mode="json") for line in LINES]
    assert body["eval_scores"] == {"exact_match": {"base": 0.0, "tuned": 0.75, "rows": 8}}
    assert record["metrics"]["eval_scores"] == body["eval_scores"]
    assert record["artifacts"]["samples_path"] == stack.settings.layout.samples_uri(job_id)


def test_another_owners_samples_are_not_found(stack: ApiStack) -> None:
    job_id = trained_job(stack, ALICE)

    answer = stack.get(f"/jobs/{job_id}/samples", caller=BOB)

    assert answer.status_code == 404
    assert answer.get_json()["error"] == {
        "code": "not_found",
        "message": "job not found",
        "field": "job_id",
    }


def test_an_unknown_job_is_not_found(stack: ApiStack) -> None:
    answers = [
        stack.get("/jobs/no-such-job/samples", caller=ALICE),
        stack.get("/jobs/bad..id/samples", caller=ALICE),
    ]

    assert [answer.status_code for answer in answers] == [404, 404]
    assert {answer.get_json()["error"]["message"] for answer in answers} == {"job not found"}


def test_a_job_without_samples_says_why(stack: ApiStack) -> None:
    job_id = stack.submit(seed_request(), caller=ALICE).get_json()["job_id"]

    answer = stack.get(f"/jobs/{job_id}/samples", caller=ALICE)

    assert answer.status_code == 404
    error = answer.get_json()["error"]
    assert error["field"] == "job_id"
    assert error["message"].startswith("the job has no samples (it is queued;")


def test_deleting_the_job_deletes_its_samples(stack: ApiStack) -> None:
    job_id = trained_job(stack, ALICE)
    uri = stack.settings.layout.samples_uri(job_id)

    deleted = stack.delete(job_id, caller=ALICE)

    assert deleted.status_code == 200
    assert (
        stack.settings.layout.evaluations_prefix(job_id) in deleted.get_json()["deleted_resources"]
    )
    assert not stack.services.storage.exists(uri)
