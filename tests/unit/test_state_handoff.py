"""A job longer than one task: how handoffs, continuations and retries show on the record."""

from __future__ import annotations

from tests.unit.test_state import common, preparing, progress, queued_job, training
from tuning.capacity import is_continuation
from tuning.events import HandoffEvent, HandoffPayload, RestartedEvent, RestartedPayload
from tuning.jobs import AttemptEnding, JobRecord, JobStatus
from tuning.state import apply

FIRST = "projects/p/locations/r/jobs/gemma-trainer/executions/first"
SECOND = "projects/p/locations/r/jobs/gemma-trainer/executions/second"


def dispatched(execution: str = FIRST, **changes: object) -> JobRecord:
    return queued_job(execution=execution, executions=1, **changes)


def handoff(attempt: int, step: int, checkpoint_step: int, seq: int = 300) -> HandoffEvent:
    payload = HandoffPayload(
        reason=AttemptEnding.DEADLINE,
        step=step,
        checkpoint_step=checkpoint_step,
        checkpoint=f"gs://m/checkpoints/j/checkpoint-{checkpoint_step}/",
    )
    return HandoffEvent(**common(attempt, seq, execution="first"), payload=payload)


def continued(job: JobRecord, execution: str = SECOND) -> JobRecord:
    """What dispatch's record_execution writes for the next execution."""
    return job.model_copy(
        update={"execution": execution, "executions": job.executions + 1, "handoff": None}
    )


def test_a_handoff_marks_the_job_waiting_for_its_next_execution():
    job = dispatched()
    for event in (preparing(), training(), progress(40), handoff(0, step=41, checkpoint_step=40)):
        job = apply(job, event)

    assert job.status is JobStatus.TRAINING  # still running, as far as its owner is concerned
    assert job.handoff is not None and job.handoff.checkpoint_step == 40
    assert job.last_attempt_end == job.handoff
    assert job.last_attempt_end.reason is AttemptEnding.DEADLINE
    assert job.status_reason == (
        "attempt 0 stopped before its task deadline at step 41; a new execution continues "
        "from the checkpoint at step 40"
    )
    assert is_continuation(job)


def test_the_next_execution_numbers_its_attempts_on_and_shows_where_it_resumed():
    job = dispatched()
    for event in (training(), progress(40), handoff(0, step=41, checkpoint_step=40)):
        job = apply(job, event)
    job = continued(job)
    restarted = RestartedEvent(
        **common(1, 1, execution="second"), payload=RestartedPayload(resumed_from_step=40)
    )

    job = apply(job, restarted)
    job = apply(job, progress(45, attempt=1))

    assert job.attempt == 1
    assert job.execution == SECOND and job.executions == 2
    assert job.resumed_from_step == 40
    assert job.progress is not None and job.progress.step == 45
    assert job.last_attempt_end is not None
    assert job.last_attempt_end.reason is AttemptEnding.DEADLINE  # kept from the handoff
    assert not is_continuation(job)


def test_events_of_the_execution_that_handed_off_change_nothing_afterwards():
    job = dispatched()
    job = apply(job, handoff(0, step=41, checkpoint_step=40))
    job = continued(job)
    late = progress(41)  # attempt 0, still on its way from the first execution
    late = late.model_copy(update={"execution": "first"})

    assert apply(job, late) is job


def test_a_retried_attempt_shows_that_the_one_before_failed():
    job = dispatched()
    for event in (training(), progress(12)):
        job = apply(job, event)

    job = apply(job, preparing(attempt=1, seq=1, execution="first"))

    ended = job.last_attempt_end
    assert ended is not None
    # Its last step is on the record's progress history, not here: which of its events
    # arrived before the retry's first one depends on the delivery order.
    assert (ended.attempt, ended.reason, ended.step) == (0, AttemptEnding.FAILED, None)
    assert ended.execution == FIRST
    assert job.resumed_from_step is None


def test_a_terminal_job_is_not_continued():
    job = dispatched(status=JobStatus.CANCELLED)
    assert apply(job, handoff(0, step=41, checkpoint_step=40)) is job
    assert not is_continuation(job)
