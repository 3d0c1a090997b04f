"""How a dispatch claim decides, as a pure function of the job and the slot holders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tuning.capacity import (
    CLAIMED_REASON,
    CONTINUING_REASON,
    OWNERLESS,
    ClaimAttempt,
    ClaimOutcome,
    Slots,
    decide_claim,
    owner_waiting_reason,
    waiting_reason,
)
from tuning.jobs import AttemptEnd, AttemptEnding, JobRecord, JobStatus

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=1)
RECENTLY = NOW - timedelta(seconds=5)  # within the 30 s claim timeout


def job(job_id: str = "job-a", **fields: Any) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        job_name=job_id,
        base_model_id="google/gemma-3-1b-it",
        processed_dataset_id="ds1",
        created_at=EARLIER,
        updated_at=EARLIER,
        **fields,
    )


def attempt(
    *, limit: int = 2, finished: frozenset[str] = frozenset(), owner_limit: int | None = None
) -> ClaimAttempt:
    return ClaimAttempt(
        job_id="job-a",
        claim_id="claim-2",
        now=NOW,
        claim_timeout=timedelta(seconds=30),
        limit=limit,
        finished=finished,
        owner_limit=owner_limit,
    )


def held(holders: dict[str, datetime], owners: dict[str, str] | None = None) -> Slots:
    return Slots(holders, owners or {})


def test_a_queued_job_with_a_free_slot_is_claimed_with_the_slot():
    decision = decide_claim(attempt(), job(owner="ann"), held({"job-b": EARLIER}))

    assert decision.claim.outcome is ClaimOutcome.CLAIMED
    assert decision.slots == held({"job-b": EARLIER, "job-a": NOW}, {"job-a": "ann"})
    assert decision.job_changes == {
        "dispatch_claim": "claim-2",
        "dispatch_claimed_at": NOW,
        "status_reason": CLAIMED_REASON,
    }


def test_at_capacity_the_job_waits_and_says_why_once():
    full = held({"job-b": EARLIER, "job-c": EARLIER})

    first = decide_claim(attempt(), job(), full)
    again = decide_claim(attempt(), job(status_reason=waiting_reason(2, 2)), full)

    assert first.claim.outcome is ClaimOutcome.AT_CAPACITY
    assert first.job_changes == {"status_reason": "waiting for a free trainer slot (2 of 2 in use)"}
    assert first.slots is None
    assert again.claim.outcome is ClaimOutcome.AT_CAPACITY
    assert not again.writes  # nothing changed: the redelivery writes nothing


def test_slots_of_finished_jobs_are_freed_by_the_next_claim():
    decision = decide_claim(
        attempt(finished=frozenset({"job-b"})),
        job(),
        held({"job-b": EARLIER, "job-c": EARLIER}, {"job-b": "ann", "job-c": "bob"}),
    )

    assert decision.claim.outcome is ClaimOutcome.CLAIMED
    assert decision.slots == held(
        {"job-c": EARLIER, "job-a": NOW}, {"job-c": "bob", "job-a": OWNERLESS}
    )


def test_a_job_keeps_its_own_slot_when_its_stale_claim_is_taken_over():
    stale = job(dispatch_claim="claim-1", dispatch_claimed_at=NOW - timedelta(minutes=5))

    decision = decide_claim(attempt(limit=1), stale, held({"job-a": NOW - timedelta(minutes=5)}))

    assert decision.claim.outcome is ClaimOutcome.CLAIMED
    assert decision.job_changes is not None
    assert decision.job_changes["dispatch_claim"] == "claim-2"


@pytest.mark.parametrize(
    ("record", "outcome"),
    [
        (None, ClaimOutcome.MISSING),
        (job(status=JobStatus.CANCELLED), ClaimOutcome.NOT_QUEUED),
        (job(status=JobStatus.TRAINING), ClaimOutcome.NOT_QUEUED),
        (job(execution="local-000000000001"), ClaimOutcome.DISPATCHED),
        (job(dispatch_claim="claim-1", dispatch_claimed_at=RECENTLY), ClaimOutcome.IN_PROGRESS),
    ],
)
def test_jobs_that_must_not_be_launched_again_write_nothing(record, outcome):
    decision = decide_claim(attempt(), record, held({}))

    assert decision.claim.outcome is outcome
    assert not decision.writes


def test_an_owner_at_their_limit_waits_while_others_get_free_slots():
    ann_runs_two = held({"job-b": EARLIER, "job-c": EARLIER}, {"job-b": "ann", "job-c": "ann"})

    anns = decide_claim(attempt(limit=4, owner_limit=2), job(owner="ann"), ann_runs_two)
    bobs = decide_claim(attempt(limit=4, owner_limit=2), job(owner="bob"), ann_runs_two)

    assert anns.claim.outcome is ClaimOutcome.OWNER_AT_LIMIT
    assert anns.job_changes == {"status_reason": owner_waiting_reason(2)}
    assert anns.slots is None
    assert bobs.claim.outcome is ClaimOutcome.CLAIMED


def test_an_owner_limit_counts_only_jobs_still_running():
    slots = held({"job-b": EARLIER, "job-c": EARLIER}, {"job-b": "ann", "job-c": "ann"})

    freed = decide_claim(
        attempt(limit=4, owner_limit=2, finished=frozenset({"job-b"})), job(owner="ann"), slots
    )

    assert freed.claim.outcome is ClaimOutcome.CLAIMED
    assert freed.slots == held({"job-c": EARLIER, "job-a": NOW}, {"job-c": "ann", "job-a": "ann"})


def test_ownerless_jobs_share_one_owner_allowance():
    one_ownerless = held({"job-b": EARLIER}, {"job-b": OWNERLESS})

    ownerless = decide_claim(attempt(limit=4, owner_limit=1), job(), one_ownerless)
    owned = decide_claim(attempt(limit=4, owner_limit=1), job(owner="ann"), one_ownerless)

    assert ownerless.claim.outcome is ClaimOutcome.OWNER_AT_LIMIT  # no escaping the limit
    assert owned.claim.outcome is ClaimOutcome.CLAIMED
    assert owned.slots == held(
        {"job-b": EARLIER, "job-a": NOW}, {"job-b": OWNERLESS, "job-a": "ann"}
    )


def handed_off(**fields: Any) -> JobRecord:
    """A job whose attempt checkpointed at its task deadline, waiting for its next execution."""
    ended = AttemptEnd(
        attempt=0, reason=AttemptEnding.DEADLINE, step=9, checkpoint_step=9, execution="x1", at=NOW
    )
    values: dict[str, Any] = {
        "owner": "ann",
        "status": JobStatus.TRAINING,
        "execution": "projects/p/locations/r/jobs/t/executions/x1",
        "executions": 1,
        "handoff": ended,
        # The claim that started its first execution, made before the handoff.
        "dispatch_claim": "claim-1",
        "dispatch_claimed_at": NOW - timedelta(seconds=10),
    }
    return job(**{**values, **fields})


def test_a_continuation_keeps_its_slot_even_when_every_slot_is_taken():
    full = held({"job-a": EARLIER, "job-b": EARLIER}, {"job-a": "ann", "job-b": "bob"})

    decision = decide_claim(attempt(limit=2, owner_limit=1), handed_off(), full)

    assert decision.claim.outcome is ClaimOutcome.CLAIMED
    assert decision.job_changes is not None
    assert decision.job_changes["status_reason"] == CONTINUING_REASON
    assert decision.slots is not None and set(decision.slots.holders) == {"job-a", "job-b"}


def test_a_continuation_being_dispatched_is_not_claimed_twice():
    claimed = handed_off(dispatch_claim="claim-3", dispatch_claimed_at=RECENTLY + timedelta(5))

    assert decide_claim(attempt(), claimed, held({})).claim.outcome is ClaimOutcome.IN_PROGRESS


def test_a_job_past_its_last_execution_is_not_continued():
    at_bound = ClaimAttempt(**{**vars(attempt()), "max_executions": 1})

    decision = decide_claim(at_bound, handed_off(), held({"job-a": EARLIER}))

    assert decision.claim.outcome is ClaimOutcome.EXHAUSTED
    assert not decision.writes


def test_a_job_resumed_after_its_last_execution_is_not_started_again():
    """Review finding F4: a pause and a resume must not lift TRAINER_MAX_EXECUTIONS."""
    at_bound = ClaimAttempt(**{**vars(attempt()), "max_executions": 1})
    resumed = job(status=JobStatus.QUEUED, executions=1)  # resume cleared its execution

    decision = decide_claim(at_bound, resumed, held({}))

    assert decision.claim.outcome is ClaimOutcome.EXHAUSTED
    assert not decision.writes
    fresh = decide_claim(at_bound, job(status=JobStatus.QUEUED), held({}))
    assert fresh.claim.outcome is ClaimOutcome.CLAIMED


def test_a_running_job_without_a_handoff_is_not_dispatched_again():
    running = handed_off(handoff=None)

    assert decide_claim(attempt(), running, held({})).claim.outcome is ClaimOutcome.NOT_QUEUED


def test_an_owner_limit_counts_the_owners_slots_on_every_tier():
    """Review finding F3: one owner may not hold the limit on each tier."""
    this_tier = held({"job-b": EARLIER}, {"job-b": "bob"})
    other_tiers = held({"job-h": EARLIER}, {"job-h": "ann"})

    anns = decide_claim(attempt(limit=4, owner_limit=1), job(owner="ann"), this_tier, other_tiers)
    bobs = decide_claim(attempt(limit=4, owner_limit=2), job(owner="bob"), this_tier, other_tiers)

    assert anns.claim.outcome is ClaimOutcome.OWNER_AT_LIMIT
    assert anns.job_changes == {"status_reason": owner_waiting_reason(1)}
    assert bobs.claim.outcome is ClaimOutcome.CLAIMED
    # Only this tier's slots are written; the other tiers' are only counted.
    assert bobs.slots == held({"job-b": EARLIER, "job-a": NOW}, {"job-b": "bob", "job-a": "bob"})


def test_an_owners_finished_jobs_on_other_tiers_no_longer_count():
    other_tiers = held({"job-h": EARLIER}, {"job-h": "ann"})

    freed = decide_claim(
        attempt(limit=4, owner_limit=1, finished=frozenset({"job-h"})),
        job(owner="ann"),
        held({}),
        other_tiers,
    )

    assert freed.claim.outcome is ClaimOutcome.CLAIMED
    assert freed.slots == held({"job-a": NOW}, {"job-a": "ann"})
