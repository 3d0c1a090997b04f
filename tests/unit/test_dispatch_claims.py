"""How a dispatch claim decides, as a pure function of the job and the slot holders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tuning.capacity import (
    CLAIMED_REASON,
    ClaimAttempt,
    ClaimOutcome,
    decide_claim,
    waiting_reason,
)
from tuning.jobs import JobRecord, JobStatus

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


def attempt(*, limit: int = 2, finished: frozenset[str] = frozenset()) -> ClaimAttempt:
    return ClaimAttempt(
        job_id="job-a",
        claim_id="claim-2",
        now=NOW,
        claim_timeout=timedelta(seconds=30),
        limit=limit,
        finished=finished,
    )


def test_a_queued_job_with_a_free_slot_is_claimed_with_the_slot():
    decision = decide_claim(attempt(), job(), {"job-b": EARLIER})

    assert decision.claim.outcome is ClaimOutcome.CLAIMED
    assert decision.holders == {"job-b": EARLIER, "job-a": NOW}
    assert decision.job_changes == {
        "dispatch_claim": "claim-2",
        "dispatch_claimed_at": NOW,
        "status_reason": CLAIMED_REASON,
    }


def test_at_capacity_the_job_waits_and_says_why_once():
    full = {"job-b": EARLIER, "job-c": EARLIER}

    first = decide_claim(attempt(), job(), full)
    again = decide_claim(attempt(), job(status_reason=waiting_reason(2, 2)), full)

    assert first.claim.outcome is ClaimOutcome.AT_CAPACITY
    assert first.job_changes == {"status_reason": "waiting for a free trainer slot (2 of 2 in use)"}
    assert first.holders is None
    assert again.claim.outcome is ClaimOutcome.AT_CAPACITY
    assert not again.writes  # nothing changed: the redelivery writes nothing


def test_slots_of_finished_jobs_are_freed_by_the_next_claim():
    decision = decide_claim(
        attempt(finished=frozenset({"job-b"})), job(), {"job-b": EARLIER, "job-c": EARLIER}
    )

    assert decision.claim.outcome is ClaimOutcome.CLAIMED
    assert decision.holders == {"job-c": EARLIER, "job-a": NOW}


def test_a_job_keeps_its_own_slot_when_its_stale_claim_is_taken_over():
    stale = job(dispatch_claim="claim-1", dispatch_claimed_at=NOW - timedelta(minutes=5))

    decision = decide_claim(attempt(limit=1), stale, {"job-a": NOW - timedelta(minutes=5)})

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
    decision = decide_claim(attempt(), record, {})

    assert decision.claim.outcome is outcome
    assert not decision.writes
