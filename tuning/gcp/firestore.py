"""The Firestore job store: job records, their transitions and their event history.

`training_jobs/{job_id}` holds the `JobRecord`; `training_jobs/{job_id}/events/{event_id}`
holds every applied lifecycle event (state changes, messages, metric points),
keyed by event id so a redelivered event is written once. Transitions go
through `tuning.state.apply` inside a transaction, so concurrent deliveries
cannot lose each other's updates.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from google.api_core import exceptions as google_errors
from google.cloud import firestore
from google.protobuf import message as protobuf_message
from pydantic import BaseModel, ValidationError

from tuning.errors import InvalidRequestError, NotFoundError, TransientError, TuningError
from tuning.events import JOB_EVENT, JobEvent
from tuning.gcp.errors import google_api_errors
from tuning.gcp.permissions import requires
from tuning.jobs import JobRecord, JobStatus, utcnow
from tuning.state import apply

EVENTS = "events"
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class JobPage:
    jobs: list[JobRecord]
    next_page_token: str | None


@dataclass(frozen=True)
class EventPage:
    events: list[dict[str, Any]]
    next_page_token: str | None


@dataclass(frozen=True)
class Transition:
    """The record before and after one applied event (equal when nothing changed)."""

    before: JobRecord
    after: JobRecord

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def became_terminal(self) -> bool:
        return self.after.status.is_terminal and not self.before.status.is_terminal

    @property
    def became_paused(self) -> bool:
        return self.after.status is JobStatus.PAUSED and self.before.status is not JobStatus.PAUSED


def to_firestore(model: BaseModel) -> dict[str, Any]:
    """A model as Firestore data: datetimes stay timestamps (they sort), enums become text."""
    return _plain(model.model_dump(mode="python"))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Enum):
        return value.value
    return value


def transient_google_errors() -> AbstractContextManager[None]:
    return google_api_errors("Firestore", "the jobs collection")


@contextmanager
def contended_transaction() -> Iterator[None]:
    """A transaction that kept losing to others is contention, which a retry can beat."""
    try:
        with transient_google_errors():
            yield
    except ValueError as error:
        # The client gives up on a contended transaction with a bare ValueError.
        if not str(error).startswith("Failed to commit transaction"):
            raise
        raise TransientError(f"job document contended: {error}") from error


class UnwritableError(TuningError):
    """Firestore refuses this write for what it holds: retrying the same write cannot help."""


# What a write is refused with for its content, not for the service's state. The client
# encodes before sending: an integer beyond 64 bits or an empty field name is a ValueError,
# an over-deep value a protobuf error. The service answers InvalidArgument (a document
# over 1 MiB, a reserved name, a name over 1,500 bytes) and, for a request over its 4 MiB
# message limit, ResourceExhausted ("429 ... exceeds maximum size"), which the client retries
# for a minute until RetryError; a ResourceExhausted for quota stays transient.
_REFUSED = (
    google_errors.InvalidArgument,
    protobuf_message.Error,
    ValueError,
    TypeError,
    OverflowError,
    RecursionError,
)
_TOO_LARGE = "exceeds maximum size"


@contextmanager
def refused_writes() -> Iterator[None]:
    """Raise UnwritableError for a write refused for its content (wrap the transaction).

    A contended transaction and other transient errors (TransientError) and a record that
    no longer parses (pydantic's ValidationError: our bug, not the event's) pass through.
    """
    try:
        yield
    except ValidationError:
        raise
    except TransientError as error:
        cause = error.__cause__
        last = cause.cause if isinstance(cause, google_errors.RetryError) else cause
        if isinstance(last, google_errors.ResourceExhausted) and _TOO_LARGE in str(last):
            raise UnwritableError(f"Firestore refused the write: {_brief(last)}") from error
        raise
    except _REFUSED as error:
        raise UnwritableError(f"Firestore refused the write: {_brief(error)}") from error


def _brief(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:300]}"


class JobStore:
    """Job records in Firestore, read and changed only through this class."""

    def __init__(
        self,
        project: str,
        collection: str = "training_jobs",
        client: firestore.Client | None = None,
        max_transaction_attempts: int = 20,
    ) -> None:
        self.client = client or firestore.Client(project=project)
        self.jobs = self.client.collection(collection)
        self.max_transaction_attempts = max_transaction_attempts
        # Transactions on one document from the same process queue here instead of
        # contending in Firestore: the emulator locks pessimistically (two concurrent
        # transactions on a document wait out a ~4 s lock timeout), and in production
        # it saves the retries. Striped so that memory stays bounded.
        self._document_locks = [threading.Lock() for _ in range(64)]

    def _lock_for(self, job_id: str) -> threading.Lock:
        return self._document_locks[zlib.crc32(job_id.encode()) % len(self._document_locks)]

    # Records -----------------------------------------------------------------

    @requires("datastore.entities.create", "datastore.entities.get")
    def create(self, job: JobRecord) -> tuple[JobRecord, bool]:
        """Create the record unless it exists; returns (stored record, created?)."""
        reference = self.jobs.document(job.job_id)
        with transient_google_errors():
            try:
                reference.create(to_firestore(job))
                return job, True
            except google_errors.Conflict:
                return self.get(job.job_id), False

    @requires("datastore.entities.get")
    def find(self, job_id: str) -> JobRecord | None:
        with transient_google_errors():
            snapshot = self.jobs.document(job_id).get()
        return JobRecord.from_document(snapshot.to_dict() or {}) if snapshot.exists else None

    @requires("datastore.entities.get")
    def get(self, job_id: str) -> JobRecord:
        job = self.find(job_id)
        if job is None:
            raise NotFoundError(f"job {job_id} not found", field="job_id")
        return job

    @requires("datastore.databases.get", "datastore.entities.get", "datastore.entities.update")
    def update(
        self,
        job_id: str,
        change: Callable[[JobRecord], JobRecord | None],
        *,
        before_commit: Callable[[Transition], object] | None = None,
    ) -> Transition | None:
        """Apply `change` to the record in a transaction; None when the job does not exist.

        `change` may run more than once (the transaction retries on contention),
        so it must be a pure function of the record it is given. Returning None
        or an equal record writes nothing. `before_commit` sees a transition that changes
        the record before it is committed; if it raises, nothing is written.
        """
        reference = self.jobs.document(job_id)

        @firestore.transactional
        def run(transaction: firestore.Transaction) -> Transition | None:
            snapshot = reference.get(transaction=transaction)
            if not snapshot.exists:
                return None
            before = JobRecord.from_document(snapshot.to_dict() or {})
            after = change(before) or before
            if after != before:
                after = after.model_copy(update={"updated_at": utcnow()})
                transaction.set(reference, to_firestore(after))
            transition = Transition(before=before, after=after)
            if before_commit is not None and transition.changed:
                before_commit(transition)
            return transition

        with self._lock_for(job_id), contended_transaction():
            return run(self.client.transaction(max_attempts=self.max_transaction_attempts))

    @requires(
        "datastore.databases.get",
        "datastore.entities.get",
        "datastore.entities.create",
        "datastore.entities.update",
    )
    def apply_event(
        self,
        event: JobEvent,
        *,
        before_commit: Callable[[Transition], object] | None = None,
        in_transaction: Callable[[Transition, firestore.Transaction], object] | None = None,
    ) -> Transition | None:
        """Apply a lifecycle event and record it in the job's history, atomically.

        Returns None when the job does not exist (it was deleted: the event is
        dropped). A duplicate changes nothing and is written to history once.
        `before_commit` sees the transition before it is committed; if it raises,
        nothing is written (it may run more than once when the transaction retries).
        `in_transaction` may add writes (never reads: the record is written) that commit
        with the event or not at all (tuning/gcp/throughput.py).
        """
        reference = self.jobs.document(event.job_id)
        history = reference.collection(EVENTS).document(event.event_id)

        @firestore.transactional
        def run(transaction: firestore.Transaction) -> Transition | None:
            snapshot = reference.get(transaction=transaction)
            if not snapshot.exists:
                return None
            before = JobRecord.from_document(snapshot.to_dict() or {})
            after = apply(before, event)
            if after != before:
                after = after.model_copy(update={"updated_at": utcnow()})
                transaction.set(reference, to_firestore(after))
            transaction.set(history, to_firestore(event))
            transition = Transition(before=before, after=after)
            if in_transaction is not None:
                in_transaction(transition, transaction)
            if before_commit is not None:
                before_commit(transition)
            return transition

        with self._lock_for(event.job_id), refused_writes(), contended_transaction():
            return run(self.client.transaction(max_attempts=self.max_transaction_attempts))

    @requires("datastore.entities.list", "datastore.entities.get")
    def list_jobs(
        self,
        *,
        owner: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        page_token: str | None = None,
    ) -> JobPage:
        """Jobs newest first, optionally one owner's and one status's, a page at a time."""
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        query: Any = self.jobs
        if owner is not None:
            query = query.where(filter=firestore.FieldFilter("owner", "==", owner))
        if status is not None:
            query = query.where(filter=firestore.FieldFilter("status", "==", status.value))
        query = query.order_by("created_at", direction=firestore.Query.DESCENDING).order_by(
            "job_id", direction=firestore.Query.DESCENDING
        )
        if page_token:
            created_at, job_id = _decode_cursor(page_token)
            query = query.start_after({"created_at": created_at, "job_id": job_id})
        with transient_google_errors():
            documents = list(query.limit(limit + 1).stream())
        jobs = [JobRecord.from_document(document.to_dict() or {}) for document in documents[:limit]]
        next_token = None
        if len(documents) > limit:
            next_token = _encode_cursor(jobs[-1].created_at, jobs[-1].job_id)
        return JobPage(jobs=jobs, next_page_token=next_token)

    @requires("datastore.entities.list")
    def count(self, statuses: Iterable[JobStatus]) -> int:
        """How many jobs are in any of `statuses` (an aggregation, no documents read)."""
        query = self.jobs.where(
            filter=firestore.FieldFilter("status", "in", [status.value for status in statuses])
        )
        with transient_google_errors():
            aggregation: Any = query.count()  # the client's stubs mistype this call
            result = aggregation.get()
        return int(result[0][0].value)

    @requires("datastore.entities.get", "datastore.entities.list", "datastore.entities.delete")
    def delete(self, job_id: str) -> bool:
        """Delete the record and its history; False when there was nothing to delete."""
        reference = self.jobs.document(job_id)
        with transient_google_errors():
            deleted_history = self._delete_history(reference)
            existed = reference.get().exists
            reference.delete()
        return existed or deleted_history > 0

    def _delete_history(self, reference: Any) -> int:
        deleted = 0
        while True:
            documents = list(reference.collection(EVENTS).limit(300).stream())
            if not documents:
                return deleted
            batch = self.client.batch()
            for document in documents:
                batch.delete(document.reference)
            batch.commit()
            deleted += len(documents)

    # History -----------------------------------------------------------------

    @requires("datastore.entities.list", "datastore.entities.get")
    def list_events(
        self, job_id: str, *, limit: int = 100, page_token: str | None = None
    ) -> EventPage:
        """The job's applied events in time order, as JSON-ready dicts, a page at a time."""
        limit = max(1, min(limit, 1000))
        query = (
            self.jobs.document(job_id).collection(EVENTS).order_by("timestamp").order_by("event_id")
        )
        if page_token:
            timestamp, event_id = _decode_cursor(page_token)
            query = query.start_after({"timestamp": timestamp, "event_id": event_id})
        with transient_google_errors():
            documents = list(query.limit(limit + 1).stream())
        events = [
            JOB_EVENT.dump_python(JOB_EVENT.validate_python(document.to_dict()), mode="json")
            for document in documents[:limit]
        ]
        next_token = None
        if len(documents) > limit:
            last = documents[limit - 1].to_dict()
            next_token = _encode_cursor(last["timestamp"], last["event_id"])
        return EventPage(events=events, next_page_token=next_token)


def _encode_cursor(timestamp: datetime, name: str) -> str:
    raw = json.dumps([timestamp.isoformat(), name]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class PageTokenError(InvalidRequestError):
    """A page token this API did not issue: a bad parameter value, 400 as AIP-158 has it.

    https://google.aip.dev/158 ("invalid page token": INVALID_ARGUMENT).
    """

    http_status = 400


# A cursor's name: a job id or an event id (Firestore document ids, so never '/'), bounded
# as the event model bounds event ids.
_CURSOR_NAME = re.compile(r"^[!-.0-~]{1,300}$")


def _decode_cursor(token: str) -> tuple[datetime, str]:
    """The cursor `_encode_cursor` wrote, or PageTokenError for anything else.

    A forged token must fail here, not in the Firestore client: a date beyond year 9999 in
    UTC raised OverflowError there, and anything else would be sent to Firestore as a query.
    """
    try:
        padded = token + "=" * (-len(token) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not (isinstance(decoded, list) and len(decoded) == 2):
            raise ValueError("a cursor is [timestamp, name]")
        timestamp, name = decoded
        if not isinstance(timestamp, str) or not isinstance(name, str):
            raise ValueError("a cursor holds two strings")
        moment = datetime.fromisoformat(timestamp)
        if moment.tzinfo is None or _CURSOR_NAME.fullmatch(name) is None:
            raise ValueError("a cursor's time has a zone and its name is a document id")
        return moment.astimezone(UTC), name
    except (ValueError, TypeError, OverflowError, RecursionError, binascii.Error) as error:
        raise PageTokenError(
            "page_token is not a token this API issued: pass `next_page_token` from the "
            "previous page unchanged, or leave it out for the first page",
            field="page_token",
        ) from error
