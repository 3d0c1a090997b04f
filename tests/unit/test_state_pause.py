"""Pause and resume in the state machine: the owner's requests, the trainer's pause, what a
paused job takes, and how its GPU slot is given back."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta

import pytest
from pydantic import ValidationError

from tests.unit.test_dispatch_claims import attempt, held
from tests.unit.test_dispatch_claims import job as plain_job
from tests.unit.test_state import (
    T0,
    at,
    common,
    completed,
    evaluation,
    exporting,
    preparing,
    progress,
    queued_job,
    training,
)
from tuning.capacity import ClaimOutcome, decide_claim
from tuning.events import (
    CancelledEvent,
    CancelledPayload,
    EvaluationEvent,
    EvaluationPayload,
    FailedEvent,
    FailedPayload,
    HandoffEvent,
    HandoffPayload,
    JobEvent,
)
from tuning.jobs import (
    AttemptEnd,
    AttemptEnding,
    ErrorType,
    JobError,
    JobRecord,
    JobStatus,
    Metrics,
    Progress,
)
from tuning.state import (
    PAUSING_REASON,
    RESUMED_REASON,
    apply,
    is_continuation,
    is_pausing,
    pause_refusal,
    pauses_at_once,
    resume_refusal,
    resumed,
    with_pause_requested,
)

FIRST = "projects/p/locations/r/jobs/gemma-trainer/executions/first"
SECOND = "projects/p/locations/r/jobs/gemma-trainer/executions/second"


def running(**changes: object) -> JobRecord:
    """A dispatched job whose trainer reports training, at step 40 of 100."""
    job = queued_job(**{"execution": FIRST, "executions": 1, **changes})
    for event in (preparing(), training(), progress(40)):
        job = apply(job, event)
    assert job.status is JobStatus.TRAINING
    return job


def pause_handoff(
    attempt: int = 0,
    *,
    step: int = 41,
    checkpoint_step: int | None = 41,
    reason: AttemptEnding = AttemptEnding.PAUSED,
    source: str = "trainer",
    seq: int = 300,
    **snapshot: object,
) -> HandoffEvent:
    payload = HandoffPayload(reason=reason, step=step, checkpoint_step=checkpoint_step, **snapshot)
    return HandoffEvent(**common(attempt, seq, execution="first", source=source), payload=payload)


def cancelled(seq: int = 600) -> CancelledEvent:
    """A cancel another producer published (reconcile: cancelled outside the service)."""
    return CancelledEvent(**common(0, seq, source="reconcile"))


def owner_cancel(job: JobRecord, seq: int = 900) -> CancelledEvent:
    return CancelledEvent(
        **common(job.attempt, seq, source="user"),
        payload=CancelledPayload(reason="cancelled by alice@example.com"),
    )


# The owner's pause request ----------------------------------------------------------------


def test_a_training_job_is_marked_pausing_and_its_trainer_is_left_to_stop():
    job = running()

    pausing = with_pause_requested(job, now=at(50))

    assert pausing is not None
    assert pausing.status is JobStatus.TRAINING  # still training until its trainer stops
    assert pausing.pause_requested_at == at(50) and pausing.status_reason == PAUSING_REASON
    assert is_pausing(pausing) and not pauses_at_once(pausing)
    assert with_pause_requested(pausing, now=at(60)) is None  # a repeated pause: no write


@pytest.mark.parametrize(
    "job",
    [
        queued_job(),
        queued_job(execution=FIRST, executions=1),
        apply(queued_job(execution=FIRST, executions=1), preparing()),
        running(execution=None),  # training, but no execution is recorded
    ],
    ids=["queued", "dispatched", "preparing", "no-execution"],
)
def test_a_job_not_training_in_an_execution_is_paused_at_once(job):
    assert pauses_at_once(job) and pause_refusal(job) is None
    assert with_pause_requested(job, now=at(50)) is None


def test_a_job_between_two_executions_is_paused_at_once():
    job = apply(running(), pause_handoff(reason=AttemptEnding.DEADLINE))
    assert is_continuation(job)

    assert pauses_at_once(job)


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([exporting()], "has finished training and is exporting"),
        ([completed()], "already completed"),
        ([owner_cancel(queued_job())], "already cancelled"),
    ],
)
def test_an_exporting_or_ended_job_cannot_be_paused(events, message):
    job = running()
    for event in events:
        job = apply(job, event)

    assert message in (pause_refusal(job) or "")
    assert with_pause_requested(job, now=at(700)) is None


# The pause itself -----------------------------------------------------------------------


def test_the_trainers_pause_leaves_the_job_paused_at_its_step_with_no_continuation():
    job = with_pause_requested(running(), now=at(50))
    assert job is not None

    paused = apply(job, pause_handoff(step=41, checkpoint_step=41))

    assert paused.status is JobStatus.PAUSED
    assert not paused.status.is_terminal and paused.finished_at is None
    assert paused.handoff is None and not is_continuation(paused)  # nothing asks dispatch
    assert paused.last_attempt_end == AttemptEnd(
        attempt=0,
        reason=AttemptEnding.PAUSED,
        step=41,
        checkpoint_step=41,
        execution="first",
        at=at(300),
    )
    assert paused.paused_at == at(300) and paused.pause_requested_at == at(50)
    assert paused.status_reason == (
        "paused at step 41; a resume continues it from its checkpoint at step 41"
    )


def test_a_deadline_handoff_of_a_job_asked_to_pause_is_its_pause():
    job = with_pause_requested(running(), now=at(50))
    assert job is not None

    paused = apply(job, pause_handoff(reason=AttemptEnding.DEADLINE))

    assert paused.status is JobStatus.PAUSED and paused.handoff is None
    assert paused.last_attempt_end is not None
    assert paused.last_attempt_end.reason is AttemptEnding.PAUSED


def test_a_paused_job_takes_no_later_event_but_its_owners_cancel():
    paused = apply(running(), pause_handoff())
    late: list[JobEvent] = [
        progress(41),
        evaluation(41),
        exporting(),
        completed(),
        FailedEvent(
            **common(0, 700, source="reconcile"),
            payload=FailedPayload(error=JobError(type=ErrorType.SYSTEM, message="gone")),
        ),
        cancelled(seq=701),
    ]

    assert [apply(paused, event) is paused for event in late] == [True] * len(late)
    ended = apply(paused, owner_cancel(paused))
    assert ended.status is JobStatus.CANCELLED and ended.finished_at == at(900)


def test_a_pause_converges_whatever_order_its_attempts_events_arrive_in():
    """A pause absorbs what comes after it, so it carries the attempt's final snapshot."""
    stats_training = training()
    last_progress = progress(41)
    metrics = Metrics(eval_loss=0.4, step=40)
    pause = pause_handoff(
        progress=last_progress.payload,
        metrics=metrics,
        wandb_url=stats_training.payload.wandb_url,
    )
    events: list[JobEvent] = [
        preparing(),
        stats_training,
        progress(40),
        EvaluationEvent(**common(0, 51), payload=EvaluationPayload(metrics=metrics)),
        last_progress,
        pause,
    ]
    start = queued_job(execution=FIRST, executions=1)
    in_order = start
    for event in events:
        in_order = apply(in_order, event)

    for order in itertools.permutations(events):
        job = start
        for event in order:
            job = apply(job, event)
        assert job == in_order, [event.type.value for event in order]
    assert in_order.progress == last_progress.payload and in_order.metrics == metrics


def test_a_job_paused_before_it_ever_ran_records_no_ended_attempt():
    """Nothing ran: the first execution after the resume starts at attempt 0 again."""
    job = queued_job()
    paused = apply(job, pause_handoff(step=0, checkpoint_step=None, source="user"))

    assert paused.status is JobStatus.PAUSED and paused.last_attempt_end is None
    assert paused.status_reason == (
        "paused at step 0; a resume continues it from its latest complete checkpoint "
        "(or from the start if it has none)"
    )
    again = resumed(paused)
    assert again is not None
    first = apply(again.model_copy(update={"execution": FIRST, "executions": 1}), preparing())
    assert first.status is JobStatus.PREPARING


def test_only_a_pause_may_hand_off_without_a_checkpoint():
    with pytest.raises(ValidationError, match="names its checkpoint_step"):
        HandoffPayload(reason=AttemptEnding.DEADLINE, step=3, checkpoint_step=None)
    assert HandoffPayload(reason=AttemptEnding.PAUSED, step=3).checkpoint_step is None


# Resume --------------------------------------------------------------------------------


def test_resume_queues_the_job_again_without_an_execution():
    paused = apply(with_pause_requested(running(), now=at(50)), pause_handoff())
    paused = paused.model_copy(update={"dispatch_claim": "old", "dispatch_claimed_at": at(1)})

    job = resumed(paused)

    assert job is not None
    assert job.status is JobStatus.QUEUED and job.status_reason == RESUMED_REASON
    assert (job.execution, job.dispatch_claim, job.dispatch_claimed_at) == (None, None, None)
    assert job.pause_requested_at is None  # the next trainer must not pause at once
    assert job.paused_at == at(300) and job.executions == 1  # the next attempt is 1
    assert job.last_attempt_end is not None and job.last_attempt_end.step == 41
    assert job.progress is not None and job.progress.step == 40  # kept until the next attempt
    assert resume_refusal(job) is None  # a repeated resume answers the job as it is
    assert resumed(job) is None


def test_after_a_resume_the_paused_attempts_late_events_are_ignored_and_the_next_counts():
    job = resumed(apply(running(), pause_handoff()))
    assert job is not None

    assert apply(job, progress(42)) is job
    assert apply(job, completed()) is job
    job = job.model_copy(update={"execution": SECOND, "executions": 2})  # dispatch's record
    job = apply(job, preparing(attempt=1, execution="second"))
    assert job.status is JobStatus.PREPARING and job.attempt == 1
    assert job.last_attempt_end is not None
    assert job.last_attempt_end.reason is AttemptEnding.PAUSED  # kept: the attempt before
    job = apply(job, progress(45, attempt=1))
    assert job.status is JobStatus.TRAINING and job.progress is not None


def test_after_a_resume_dispatch_reconcile_and_the_owner_still_have_their_say():
    job = resumed(apply(running(), pause_handoff()))
    assert job is not None
    failure = FailedEvent(
        **common(0, 1, source="dispatch"),
        payload=FailedPayload(error=JobError(type=ErrorType.SYSTEM, message="launch failed")),
    )

    assert apply(job, failure).status is JobStatus.FAILED
    assert apply(job, owner_cancel(job)).status is JobStatus.CANCELLED


@pytest.mark.parametrize(
    ("job", "message"),
    [
        (running(), "is training, not paused"),
        (queued_job(), "is queued, not paused"),
        (with_pause_requested(running(), now=at(50)), "still pausing"),
        (apply(running(), completed()), "already completed"),
        (apply(apply(running(), pause_handoff()), cancelled(seq=901)), None),
    ],
    ids=["training", "queued", "pausing", "completed", "paused-despite-reconciles-cancel"],
)
def test_only_a_paused_job_is_resumed(job, message):
    if message is None:
        assert resume_refusal(job) is None and resumed(job) is not None
        return
    assert message in (resume_refusal(job) or "")
    assert resumed(job) is None


def test_a_resume_racing_a_cancel_ends_cancelled_in_either_order():
    paused = apply(running(), pause_handoff())

    cancel_first = apply(paused, owner_cancel(paused))
    resume_first = resumed(paused)
    assert resume_first is not None

    assert cancel_first.status is JobStatus.CANCELLED
    assert resumed(cancel_first) is None and "already cancelled" in (
        resume_refusal(cancel_first) or ""
    )
    assert apply(resume_first, owner_cancel(resume_first)).status is JobStatus.CANCELLED


# The GPU slot --------------------------------------------------------------------------


def test_a_slot_of_a_job_paused_since_its_claim_is_given_to_the_next():
    claimed_at = T0 - timedelta(hours=1)
    decision = decide_claim(
        replace(attempt(limit=1), released={"job-b": claimed_at}),
        plain_job(),
        held({"job-b": claimed_at}),
    )

    assert decision.claim.outcome is ClaimOutcome.CLAIMED
    assert decision.slots is not None and set(decision.slots.holders) == {"job-a"}


def test_a_job_resumed_and_claimed_again_meanwhile_keeps_its_new_slot():
    """`released` was read before the paused job claimed again: its new claim time differs."""
    decision = decide_claim(
        replace(attempt(limit=1), released={"job-b": T0 - timedelta(hours=1)}),
        plain_job(),
        held({"job-b": T0}),
    )

    assert decision.claim.outcome is ClaimOutcome.AT_CAPACITY


def test_a_resumed_job_waits_for_a_slot_like_any_queued_job():
    """Its own slot from before the pause is stale: it queues, it does not jump the queue."""
    claimed_at = T0 - timedelta(hours=1)
    decision = decide_claim(
        replace(attempt(limit=1), released={"job-a": claimed_at}),
        plain_job(),
        held({"job-a": claimed_at, "job-b": T0}),
    )

    assert decision.claim.outcome is ClaimOutcome.AT_CAPACITY
    assert decision.slots is not None and set(decision.slots.holders) == {"job-b"}


def test_a_paused_job_is_never_claimed():
    paused = plain_job(status=JobStatus.PAUSED, paused_at=T0)

    assert decide_claim(attempt(), paused, held({})).claim.outcome is ClaimOutcome.NOT_QUEUED


def test_progress_of_the_pause_snapshot_is_the_record_s():
    """Absent snapshot fields keep what the record shows (a pause applied by the service)."""
    job = running()

    paused = apply(job, pause_handoff(source="user", checkpoint_step=None))

    assert paused.progress == Progress(step=40, total_steps=100, loss=1 / 41, eta_seconds=60)
