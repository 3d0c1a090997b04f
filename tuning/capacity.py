"""GPU slots: at most `MAX_CONCURRENT_JOBS` jobs run at once, even under concurrent dispatch,
and at most `MAX_CONCURRENT_JOBS_PER_OWNER` of them (when set) for any one caller, counted
over every tier together, so that one team member's batch of jobs cannot take every GPU (nor
that many on each tier).

One capacity document per trainer job (GPU tier), `{jobs_collection}_capacity/{trainer_job}`,
lists the jobs holding a slot (`holders`) and whose each is (`owners`; jobs without an
owner all count as `OWNERLESS`). A job's dispatch
claim and its slot are written in one transaction, so two deliveries can never both take
the last slot. Nobody frees a slot when a job ends: the next claim drops holders whose
job is gone or terminal (a terminal status never changes back, so reading it outside
the transaction is safe). That keeps the capacity document out of the hot path of
`on_job_event`, which would otherwise contend on it from another process.

The per-owner limit spans tiers: a claim with an owner limit also reads the other tiers'
capacity documents in its transaction (it writes only its own tier's). Firestore's
transactions are serializable, so two claims of one owner on two tiers cannot both see
the other tier's slots as they were: one of them is retried and counts the other's slot.
That makes claims on different tiers contend with each other (a handful of documents, one
per tier); without an owner limit a claim reads its own tier's document only, as before.

A paused job gives its slot back the same way: the next claim drops a holder whose job
was paused after it claimed the slot (`paused_at` later than its claim, whether it is
still paused or resumed and waiting for a slot again). A pause is not final, so that
holder is dropped only if its claim time in the transaction is still the one read: a job
resumed and claimed again meanwhile keeps its new slot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from google.cloud import firestore

from tuning.gcp.firestore import JobStore, contended_transaction, to_firestore
from tuning.jobs import JobRecord, JobStatus, utcnow
from tuning.settings import LauncherSettings
from tuning.state import is_continuation
from tuning.tiers import GpuTier

CLAIMED_REASON = "dispatching: starting a trainer execution"
CONTINUING_REASON = "continuing: starting a new trainer execution from the latest checkpoint"
# The one owner every job without an owner counts under for the per-owner limit: jobs
# published without an `owner` attribute would otherwise escape it entirely. One shared
# allowance (not none, not one per job) keeps such a publisher to its share of the GPUs.
# The record keeps owner None (it names nobody); only the capacity document uses this
# key, which no identity can equal (identities have no whitespace: tuning.ids).
OWNERLESS = "(no owner)"
_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"  # this delivery holds the job's claim and a slot: launch it
    AT_CAPACITY = "at_capacity"  # every slot is taken: the job waits, queued
    OWNER_AT_LIMIT = "owner_at_limit"  # its owner's share is taken: the job waits, queued
    IN_PROGRESS = "in_progress"  # another delivery claimed it moments ago
    DISPATCHED = "dispatched"  # it already has an execution
    EXHAUSTED = "exhausted"  # it ran in as many executions as a job may: fail it
    NOT_QUEUED = "not_queued"  # cancelled, failed or done
    MISSING = "missing"  # no such job (never created, or deleted)


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    job: JobRecord | None = None
    in_use: int = 0  # slots held when the claim was decided


@dataclass(frozen=True)
class ClaimAttempt:
    """One delivery's attempt to claim a job, and what it knows about finished holders."""

    job_id: str
    claim_id: str
    now: datetime
    claim_timeout: timedelta  # an older claim is taken over: its dispatcher died
    limit: int
    finished: frozenset[str]  # holders (of any tier read) whose job is deleted or terminal
    # Holders whose job was paused after this claim time (read outside the transaction):
    # dropped only while the claim time is unchanged.
    released: Mapping[str, datetime] = field(default_factory=dict)
    owner_limit: int | None = None  # slots one owner may hold; None: no per-owner limit
    max_executions: int | None = None  # executions one job may run in; None: no bound


@dataclass(frozen=True)
class Slots:
    """What the capacity document holds: when each holder claimed, and whose job it is."""

    holders: dict[str, datetime]
    owners: dict[str, str]

    def without(self, finished: frozenset[str]) -> Slots:
        return Slots(
            {job: at for job, at in self.holders.items() if job not in finished},
            {job: owner for job, owner in self.owners.items() if job not in finished},
        )

    def without_released(self, released: Mapping[str, datetime]) -> Slots:
        """Without the holders paused since their claim, unless they claimed again since."""
        return self.without(
            frozenset(job for job, at in released.items() if self.holders.get(job) == at)
        )

    def held_by(self, owner: str) -> int:
        return sum(1 for job in self.holders if self.owners.get(job) == owner)

    def merged(self, other: Slots) -> Slots:
        """Holders of both (other tiers' slots, for the per-owner count across tiers)."""
        return Slots({**other.holders, **self.holders}, {**other.owners, **self.owners})


def owner_key(job: JobRecord) -> str:
    """Whose share of the slots the job uses: its owner, or the one owner-less share."""
    return job.owner or OWNERLESS


@dataclass(frozen=True)
class Decision:
    """A claim's outcome and the writes it needs (None: nothing to write)."""

    claim: Claim
    job_changes: dict[str, Any] | None = None
    slots: Slots | None = None

    @property
    def writes(self) -> bool:
        return self.job_changes is not None or self.slots is not None


def decide_claim(
    attempt: ClaimAttempt,
    job: JobRecord | None,
    slots: Slots,
    elsewhere: Slots | None = None,
) -> Decision:
    """What a claim does to the job and the slots, as a pure function of what it read.

    `slots` are the job's tier's; `elsewhere` the other tiers' holders, which count towards
    the per-owner limit (never written here). A continuation (`is_continuation`) still holds
    its slot: it is claimed without waiting for capacity, so that a long job is not
    overtaken by the queue between two executions.
    """
    if job is None:
        return Decision(Claim(ClaimOutcome.MISSING))
    continuing = is_continuation(job)
    if job.status is not JobStatus.QUEUED and not continuing:
        return Decision(Claim(ClaimOutcome.NOT_QUEUED, job))
    if job.execution and not continuing:
        return Decision(Claim(ClaimOutcome.DISPATCHED, job))
    claimed_at = job.dispatch_claimed_at
    if continuing and job.handoff and job.handoff.at and claimed_at and claimed_at < job.handoff.at:
        claimed_at = None  # the claim that started the execution now handing off
    if job.dispatch_claim and claimed_at and attempt.now - claimed_at < attempt.claim_timeout:
        return Decision(Claim(ClaimOutcome.IN_PROGRESS, job))
    # Every claim counts, not only continuations: a job paused and resumed after its last
    # allowed execution is queued as new, and would otherwise train on without bound.
    if attempt.max_executions and job.executions >= attempt.max_executions:
        return Decision(Claim(ClaimOutcome.EXHAUSTED, job))
    kept = slots.without(attempt.finished).without_released(attempt.released)
    pruned = None if kept == slots else kept
    if attempt.job_id not in kept.holders and not continuing:
        wait: tuple[ClaimOutcome, str] | None = None
        if len(kept.holders) >= attempt.limit:
            wait = ClaimOutcome.AT_CAPACITY, waiting_reason(len(kept.holders), attempt.limit)
        elif attempt.owner_limit and _owner_holds(attempt, job, kept, elsewhere):
            wait = ClaimOutcome.OWNER_AT_LIMIT, owner_waiting_reason(attempt.owner_limit)
        if wait is not None:
            outcome, reason = wait
            return Decision(
                Claim(outcome, job, in_use=len(kept.holders)),
                job_changes=None if job.status_reason == reason else {"status_reason": reason},
                slots=pruned,
            )
    owners = {**kept.owners, attempt.job_id: owner_key(job)}
    claimed = Slots({**kept.holders, attempt.job_id: attempt.now}, owners)
    changes = {
        "dispatch_claim": attempt.claim_id,
        "dispatch_claimed_at": attempt.now,
        "status_reason": CONTINUING_REASON if continuing else CLAIMED_REASON,
    }
    return Decision(
        Claim(ClaimOutcome.CLAIMED, job, in_use=len(claimed.holders)),
        job_changes=changes,
        slots=claimed,
    )


def _owner_holds(
    attempt: ClaimAttempt, job: JobRecord, kept: Slots, elsewhere: Slots | None
) -> bool:
    """Whether the job's owner holds their whole allowance, on every tier together."""
    assert attempt.owner_limit is not None
    everywhere = kept
    if elsewhere is not None:
        others = elsewhere.without(attempt.finished).without_released(attempt.released)
        everywhere = kept.merged(others.without(frozenset({attempt.job_id})))
    return everywhere.held_by(owner_key(job)) >= attempt.owner_limit


def waiting_reason(in_use: int, limit: int) -> str:
    return f"waiting for a free trainer slot ({in_use} of {limit} in use)"


def owner_waiting_reason(limit: int) -> str:
    return (
        "waiting for one of the owner's running jobs to end "
        f"(at most {limit} at once, on all GPU tiers together)"
    )


def _process_lock(key: str) -> threading.Lock:
    """One lock per capacity document in this process: claims queue here, not in Firestore."""
    with _process_locks_guard:
        return _process_locks.setdefault(key, threading.Lock())


class GpuSlots:
    """The slots of one trainer pool, changed only in transactions with a job's claim."""

    def __init__(
        self,
        jobs: JobStore,
        *,
        pool: str,
        limit: int,
        owner_limit: int | None = None,
        max_executions: int | None = None,
        other_pools: tuple[str, ...] = (),
    ) -> None:
        self.jobs = jobs
        self.limit = limit
        self.owner_limit = owner_limit
        self.max_executions = max_executions
        capacity = jobs.client.collection(f"{jobs.jobs.id}_capacity")
        self.document = capacity.document(pool)
        # The other tiers' documents, read (never written) for the per-owner limit.
        self.others = [capacity.document(other) for other in other_pools if other != pool]
        self._lock = _process_lock(self.document.path)

    @classmethod
    def for_tier(cls, jobs: JobStore, settings: LauncherSettings, tier: GpuTier) -> GpuSlots:
        """The slots of one GPU tier: its own limit, and the per-owner limit over every tier."""
        owner_limit = settings.max_concurrent_jobs_per_owner or None
        others = tuple(other.capacity_pool for other in settings.tiers) if owner_limit else ()
        return cls(
            jobs,
            pool=tier.capacity_pool,
            limit=tier.max_concurrent_jobs,
            owner_limit=owner_limit,
            max_executions=settings.max_job_executions,
            other_pools=others,
        )

    def slots(self) -> Slots:
        """Jobs holding a slot now (terminal ones included until the next claim drops them)."""
        with contended_transaction():
            return _slots_of(self.document.get())

    def holders(self) -> dict[str, datetime]:
        return self.slots().holders

    def claim(
        self, job_id: str, *, claim_id: str, now: datetime, claim_timeout: timedelta
    ) -> Claim:
        """Claim a queued job and a slot for it in one transaction."""
        with self._lock:
            slots = self.slots()
            elsewhere = self._elsewhere() if self.others else None
            holders = {**(elsewhere.holders if elsewhere else {}), **slots.holders}
            attempt = ClaimAttempt(
                job_id=job_id,
                claim_id=claim_id,
                now=now,
                claim_timeout=claim_timeout,
                limit=self.limit,
                **self._ended_holders(holders),
                owner_limit=self.owner_limit,
                max_executions=self.max_executions,
            )
            # Most deliveries change nothing (a duplicate, a job still waiting for a slot):
            # decide those on plain reads. What they read can only have moved on towards
            # "finished" or "claimed" since, so the answer stays right. Anything that
            # writes is decided again on what the transaction reads.
            decision = decide_claim(attempt, self.jobs.find(job_id), slots, elsewhere)
            if not decision.writes:
                return decision.claim
            return cast(
                Claim, self._transact(lambda transaction: self._claim_in(transaction, attempt))
            )

    def _elsewhere(self, transaction: Any = None) -> Slots:
        """The other tiers' holders, in `transaction` when given (which then conflicts with
        any claim that changes them before it commits)."""
        merged = Slots({}, {})
        if transaction is not None:  # errors left to the transaction's own retries
            snapshots = list(self.jobs.client.get_all(self.others, transaction=transaction))
        else:
            with contended_transaction():
                snapshots = list(self.jobs.client.get_all(self.others))
        for snapshot in snapshots:
            merged = merged.merged(_slots_of(snapshot))
        return merged

    def _claim_in(self, transaction: Any, attempt: ClaimAttempt) -> Claim:
        job = _read_job(self.jobs.jobs.document(attempt.job_id), transaction)
        slots = _slots_of(self.document.get(transaction=transaction))
        elsewhere = self._elsewhere(transaction) if self.others else None
        decision = decide_claim(attempt, job, slots, elsewhere)
        if decision.slots is not None:
            self._write_slots(transaction, decision.slots, attempt.now)
        if job is not None and decision.job_changes is not None:
            return replace(
                decision.claim, job=self._write_job(transaction, job, **decision.job_changes)
            )
        return decision.claim

    def release(self, job_id: str, *, claim_id: str, reason: str) -> None:
        """Give the slot back after a failed launch, if the claim is still ours."""
        reference = self.jobs.jobs.document(job_id)

        def undo(transaction: Any) -> None:
            job = _read_job(reference, transaction)
            continuing = job is not None and is_continuation(job)
            if job is not None and (
                job.dispatch_claim != claim_id or (job.execution and not continuing)
            ):
                return  # another delivery took over the claim (and the slot with it)
            slots = _slots_of(self.document.get(transaction=transaction))
            if job is not None:
                self._write_job(
                    transaction,
                    job,
                    dispatch_claim=None,
                    dispatch_claimed_at=None,
                    status_reason=reason[:500],
                )
            if job_id in slots.holders and not continuing:  # a continuation keeps its slot
                self._write_slots(transaction, slots.without(frozenset({job_id})), utcnow())

        with self._lock:
            self._transact(undo)

    def _ended_holders(self, holders: dict[str, datetime]) -> dict[str, Any]:
        """Read outside any transaction: `finished`, the holders whose job is deleted or
        terminal, and `released`, those whose job was paused after they claimed (with the
        claim time read)."""
        if not holders:
            return {"finished": frozenset(), "released": {}}
        references = [self.jobs.jobs.document(job_id) for job_id in holders]
        with contended_transaction():
            snapshots = list(
                self.jobs.client.get_all(references, field_paths=["status", "paused_at"])
            )
        finished = set(holders) - {snapshot.id for snapshot in snapshots if snapshot.exists}
        released = {}
        for snapshot in snapshots:
            data = (snapshot.to_dict() or {}) if snapshot.exists else {}
            status, paused_at = data.get("status"), data.get("paused_at")
            if status is not None and JobStatus(status).is_terminal:
                finished.add(snapshot.id)
            claimed_at = holders.get(snapshot.id)
            if paused_at is not None and claimed_at is not None and paused_at >= claimed_at:
                released[snapshot.id] = claimed_at
        return {"finished": frozenset(finished), "released": released}

    def _write_slots(self, transaction: Any, slots: Slots, now: datetime) -> None:
        transaction.set(
            self.document,
            {
                "holders": slots.holders,
                "owners": slots.owners,
                "limit": self.limit,
                "owner_limit": self.owner_limit,
                "updated_at": now,
            },
        )

    def _write_job(self, transaction: Any, job: JobRecord, **changes: Any) -> JobRecord:
        updated = job.model_copy(update={**changes, "updated_at": utcnow()})
        transaction.set(self.jobs.jobs.document(job.job_id), to_firestore(updated))
        return updated

    def _transact(self, body: Callable[[Any], Any]) -> Any:
        run = firestore.transactional(body)
        with contended_transaction():
            transaction = self.jobs.client.transaction(
                max_attempts=self.jobs.max_transaction_attempts
            )
            return run(transaction)


def _slots_of(snapshot: Any) -> Slots:
    """The document's slots; one written before owners were kept has none (no owner counted)."""
    data = snapshot.to_dict() or {}
    return Slots(dict(data.get("holders", {})), dict(data.get("owners", {})))


def _read_job(reference: Any, transaction: Any) -> JobRecord | None:
    snapshot = reference.get(transaction=transaction)
    return JobRecord.from_document(snapshot.to_dict() or {}) if snapshot.exists else None
