"""Pause and resume through the delete function, against the emulators."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from werkzeug.test import TestResponse

from tests.emulator.test_api_stack import ApiStack, caller_headers
from tuning.events import HandoffEvent, HandoffPayload, JobNotification, ProgressEvent
from tuning.jobs import AttemptEnding, JobStatus, Progress
from tuning.spec import JobReference
from tuning.state import PAUSING_REASON, RESUMED_REASON

ALICE, BOB = "alice@example.com", "bob@example.com"
EXECUTION = "projects/p/locations/r/jobs/trainer/executions/e1"


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> ApiStack:
    stack = ApiStack.start(monkeypatch, tmp_path, unique, owner_scoping=True)
    stack.use_recording_launcher()
    return stack


def post(stack: ApiStack, job_id: str, action: str, caller: str = ALICE) -> TestResponse:
    return stack.clients["delete"].post(f"/jobs/{job_id}/{action}", headers=caller_headers(caller))


def training_job(stack: ApiStack, job_id: str, *, step: int = 7) -> None:
    """A job its trainer reports training at `step` in execution EXECUTION."""
    stack.make_job(job_id, owner=ALICE, status=JobStatus.QUEUED, execution=EXECUTION)
    stack.services.jobs.update(job_id, lambda job: job.model_copy(update={"executions": 1}))
    event = ProgressEvent(
        job_id=job_id,
        attempt=0,
        seq=step,
        timestamp=datetime.now(UTC),
        execution="e1",
        payload=Progress(step=step, total_steps=20),
    )
    assert stack.services.jobs.apply_event(event) is not None
    assert stack.services.jobs.get(job_id).status is JobStatus.TRAINING


def trainer_pauses(stack: ApiStack, job_id: str, *, step: int) -> None:
    """What on_job_event applies when the trainer has checkpointed and stopped."""
    event = HandoffEvent(
        job_id=job_id,
        attempt=0,
        seq=100,
        timestamp=datetime.now(UTC),
        execution="e1",
        payload=HandoffPayload(reason=AttemptEnding.PAUSED, step=step, checkpoint_step=step),
    )
    transition = stack.services.jobs.apply_event(event)
    assert transition is not None and transition.after.status is JobStatus.PAUSED


def test_a_training_job_is_left_to_its_trainer_to_pause_and_a_repeat_changes_nothing(stack):
    training_job(stack, "job1")

    first = post(stack, "job1", "pause")
    again = post(stack, "job1", "pause")

    assert (first.status_code, again.status_code) == (200, 200)
    body = first.get_json()
    assert body["status"] == "training" and body["status_reason"] == PAUSING_REASON
    assert body["pause_requested_at"] is not None
    assert again.get_json()["pause_requested_at"] == body["pause_requested_at"]
    assert stack.launcher.cancelled == []  # the trainer stops itself after a checkpoint
    resume = post(stack, "job1", "resume")
    assert resume.status_code == 409 and "still pausing" in resume.get_json()["error"]["message"]

    trainer_pauses(stack, "job1", step=8)
    shown = stack.get("/jobs/job1", caller=ALICE).get_json()
    assert shown["status"] == "paused"
    assert shown["last_attempt_end"]["reason"] == "paused"
    assert shown["last_attempt_end"]["step"] == 8
    assert shown["status_reason"] == (
        "paused at step 8; a resume continues it from its checkpoint at step 8"
    )


def test_a_job_not_training_yet_is_paused_at_once_its_execution_stopped(stack):
    stack.make_job("job1", owner=ALICE, status=JobStatus.QUEUED, execution=EXECUTION)

    first = post(stack, "job1", "pause")
    again = post(stack, "job1", "pause")

    assert (first.status_code, again.status_code) == (200, 200)
    assert first.get_json()["status"] == again.get_json()["status"] == "paused"
    assert stack.launcher.cancelled == [EXECUTION]  # once: the repeat found it paused
    [(data, attributes)] = stack.pull(stack.settings.notifications_topic, expected=1)
    notice = JobNotification.model_validate(data)
    assert (notice.status, notice.previous_status) == (JobStatus.PAUSED, JobStatus.QUEUED)
    assert attributes["status"] == "paused"
    history = stack.get("/jobs/job1/events", caller=ALICE).get_json()["events"]
    assert [(event["type"], event["source"]) for event in history] == [("handoff", "user")]
    assert history[0]["payload"]["reason"] == "paused"


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.EXPORTING])
def test_a_completed_or_exporting_job_cannot_be_paused(stack, status):
    stack.make_job("job1", owner=ALICE, status=status, execution=EXECUTION)

    answer = post(stack, "job1", "pause")

    assert answer.status_code == 409
    assert answer.get_json()["error"]["field"] == "job_id"
    assert stack.services.jobs.get("job1").status is status
    assert stack.services.jobs.get("job1").pause_requested_at is None
    assert stack.launcher.cancelled == []


def test_resume_queues_the_job_for_dispatch_once_and_a_repeat_answers_it_as_it_is(stack):
    training_job(stack, "job1")
    post(stack, "job1", "pause")
    trainer_pauses(stack, "job1", step=8)

    first = post(stack, "job1", "resume")
    again = post(stack, "job1", "resume")

    assert (first.status_code, again.status_code) == (200, 200)
    body = first.get_json()
    assert body["status"] == "queued" and body["status_reason"] == RESUMED_REASON
    assert body["execution"] is None and body["pause_requested_at"] is None
    assert body["executions"] == 1  # the next execution numbers its attempts from 1
    assert again.get_json()["status"] == "queued"
    requests = stack.pull(stack.settings.requests_topic, expected=2, timeout=3)
    assert [JobReference.model_validate(data).job_id for data, _ in requests] == ["job1"]


def test_only_a_paused_job_can_be_resumed(stack):
    training_job(stack, "running")
    stack.make_job("done", owner=ALICE, status=JobStatus.COMPLETED)

    answers = [post(stack, "running", "resume"), post(stack, "done", "resume")]

    assert [answer.status_code for answer in answers] == [409, 409]
    assert "not paused" in answers[0].get_json()["error"]["message"]
    assert "already completed" in answers[1].get_json()["error"]["message"]
    assert stack.pull(stack.settings.requests_topic, expected=1, timeout=1) == []


def test_another_callers_paused_job_is_404_and_untouched(stack):
    stack.make_job("job1", owner=ALICE, status=JobStatus.QUEUED)
    post(stack, "job1", "pause")

    answers = [post(stack, "job1", "resume", caller=BOB), post(stack, "job1", "pause", caller=BOB)]

    assert [answer.status_code for answer in answers] == [404, 404]
    assert stack.services.jobs.get("job1").status is JobStatus.PAUSED


def test_a_paused_job_can_be_cancelled_and_deleted(stack):
    stack.make_job("job1", owner=ALICE, status=JobStatus.QUEUED, execution=EXECUTION)
    stack.make_job("job2", owner=ALICE, status=JobStatus.QUEUED, execution=EXECUTION)
    post(stack, "job1", "pause")
    post(stack, "job2", "pause")
    stopped = list(stack.launcher.cancelled)

    cancel = stack.cancel("job1", caller=ALICE)
    delete = stack.delete("job2", caller=ALICE)

    assert cancel.status_code == 200 and cancel.get_json()["status"] == "cancelled"
    assert delete.status_code == 200 and stack.job_ids() == ["job1"]
    assert stack.launcher.cancelled == stopped  # their executions ended when they paused
    assert post(stack, "job1", "resume").status_code == 409


def race(stack: ApiStack, job_id: str) -> dict[str, int]:
    """Cancel and resume the job at the same moment; what each answered."""
    start = threading.Barrier(2)
    answers: dict[str, int] = {}

    def act(action: str) -> None:
        start.wait()
        if action == "cancel":
            answers[action] = stack.cancel(job_id, caller=ALICE).status_code
        else:
            answers[action] = post(stack, job_id, action).status_code

    threads = [threading.Thread(target=act, args=(action,)) for action in ("cancel", "resume")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def test_a_resume_racing_a_cancel_ends_cancelled(stack):
    """Whichever transaction goes first, the job ends cancelled: cancel applies to a paused
    job and to a resumed one alike; a resume after the cancel is a 409."""
    for job_id in (f"race{n}" for n in range(6)):
        stack.make_job(job_id, owner=ALICE, status=JobStatus.QUEUED)
        assert post(stack, job_id, "pause").get_json()["status"] == "paused"

        answers = race(stack, job_id)

        assert answers["cancel"] == 200
        assert answers["resume"] in (200, 409)
        assert stack.services.jobs.get(job_id).status is JobStatus.CANCELLED
