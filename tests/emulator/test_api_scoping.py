"""Owner scoping: with OWNER_SCOPING on, callers reach only their own jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
from werkzeug.test import TestResponse

from tests.emulator.test_api_stack import ApiStack, caller_headers, fake_id_token, seed_request
from tuning.checkpoints import MARKER
from tuning.jobs import Artifacts

ALICE, BOB = "alice@example.com", "bob@example.com"
SAMPLES = b'{"prompt": "p", "tuned_answer": "t", "source": "eval"}\n'


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> ApiStack:
    return ApiStack.start(monkeypatch, tmp_path, unique, owner_scoping=True)


def every_job_route(stack: ApiStack, job_id: str, headers: dict[str, str]) -> list[TestResponse]:
    status, delete = stack.clients["status"], stack.clients["delete"]
    return [
        status.get(f"/jobs/{job_id}", headers=headers),
        status.get(f"/jobs/{job_id}/events", headers=headers),
        status.get(f"/jobs/download/{job_id}", headers=headers),
        status.get(f"/jobs/{job_id}/checkpoints", headers=headers),
        status.get(f"/jobs/{job_id}/samples", headers=headers),
        status.get(f"/jobs/download/{job_id}", query_string={"checkpoint": 1}, headers=headers),
        delete.post(f"/jobs/{job_id}/cancel", headers=headers),
        delete.post(f"/jobs/{job_id}/pause", headers=headers),
        delete.post(f"/jobs/{job_id}/resume", headers=headers),
        delete.delete(f"/jobs/{job_id}", headers=headers),
    ]


def completed_job_of(stack: ApiStack, owner: str) -> str:
    job_id = stack.submit(seed_request(), caller=owner).get_json()["job_id"]
    gguf = stack.upload(stack.settings.layout.gguf_uri(job_id, "q8_0"))
    checkpoint = stack.settings.layout.checkpoint_prefix(job_id, 1)
    stack.upload(f"{checkpoint}adapter_model.safetensors")
    stack.upload(f"{checkpoint}{MARKER}", b'{"step": 1}')
    stack.upload(stack.settings.layout.samples_uri(job_id), SAMPLES)
    stack.complete_job(job_id, Artifacts(gguf_path=gguf))
    return job_id


def test_others_jobs_are_404_on_every_route_and_stay_untouched(stack: ApiStack) -> None:
    alices = completed_job_of(stack, ALICE)
    bobs = completed_job_of(stack, BOB)

    answers = every_job_route(stack, alices, caller_headers(BOB))
    listed = stack.get("/jobs", caller=BOB).get_json()["jobs"]

    assert [answer.status_code for answer in answers] == [404] * 10
    assert [job["job_id"] for job in listed] == [bobs]
    assert stack.get(f"/jobs/{alices}", caller=ALICE).get_json()["status"] == "completed"
    assert stack.get(f"/jobs/download/{alices}", caller=ALICE).status_code == 200
    own = stack.get(f"/jobs/{alices}/checkpoints", caller=ALICE).get_json()["checkpoints"]
    assert [checkpoint["step"] for checkpoint in own] == [1]
    assert stack.get(f"/jobs/download/{alices}", checkpoint=1, caller=ALICE).status_code == 200
    assert stack.get(f"/jobs/{alices}/samples", caller=ALICE).status_code == 200


def test_the_id_token_names_the_caller(stack: ApiStack) -> None:
    alices = completed_job_of(stack, ALICE)
    headers = {"Authorization": f"Bearer {fake_id_token(email=ALICE, sub='42')}"}

    answer = stack.clients["status"].get(f"/jobs/{alices}", headers=headers)
    listed = stack.clients["status"].get("/jobs", headers=headers)

    assert answer.status_code == 200
    assert [job["job_id"] for job in listed.get_json()["jobs"]] == [alices]


def test_without_an_identity_every_route_is_401(stack: ApiStack) -> None:
    alices = completed_job_of(stack, ALICE)
    malformed = {"Authorization": "Bearer not-a-jwt"}  # no signature removed: nobody checked it

    answers = [
        *every_job_route(stack, alices, {}),
        *every_job_route(stack, alices, malformed),
        stack.clients["status"].get("/jobs"),
        stack.clients["submit"].post("/train", json=seed_request()),
    ]

    assert {answer.status_code for answer in answers} == {401}
    assert {answer.get_json()["error"]["code"] for answer in answers} == {"unauthenticated"}
    assert stack.services.jobs.get(alices).status.value == "completed"


def test_a_token_cloud_run_did_not_check_names_nobody(stack: ApiStack) -> None:
    """Both headers: Cloud Run checked X-Serverless-Authorization and passed Authorization on."""
    alices = completed_job_of(stack, ALICE)
    forged = fake_id_token(email=ALICE)  # what Bob could write into Authorization himself
    bobs_checked = fake_id_token(email=BOB)
    headers = {
        "X-Serverless-Authorization": f"Bearer {bobs_checked}",
        "Authorization": f"Bearer {forged}",
    }

    answers = every_job_route(stack, alices, headers)

    assert [answer.status_code for answer in answers] == [404] * 10
    assert stack.services.jobs.get(alices).status.value == "completed"


def test_only_x_serverless_authorization_names_the_caller(stack: ApiStack) -> None:
    alices = completed_job_of(stack, ALICE)
    headers = {"X-Serverless-Authorization": f"Bearer {fake_id_token(email=ALICE)}"}

    answer = stack.clients["status"].get(f"/jobs/{alices}", headers=headers)

    assert answer.status_code == 200
    assert answer.get_json()["job_id"] == alices
