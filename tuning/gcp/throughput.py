"""The deployment's measured training throughput, per tier, base model, method and trainer type.

`{jobs collection}_throughput/{key hash}` holds one key's aggregate: the key's fields, how many
completed jobs were measured (`jobs`) and the sum of their tokens a second; the mean is the
one over the other. A job's measurement is written with Firestore increments inside the
transaction that makes the job `completed` (`JobStore.apply_event(in_transaction=...)`), so
it is counted exactly once: a redelivered `completed` event changes nothing and writes
nothing, a retried transaction drops its buffered writes, and concurrent completions never
read-modify-write the aggregate (https://firebase.google.com/docs/firestore/manage-data/add-data#increment_a_numeric_value).

Only aggregates are kept: no job id, owner or timestamp of a job.
"""

from __future__ import annotations

import logging

from google.cloud import firestore

from tuning.gcp.firestore import Transition, transient_google_errors
from tuning.gcp.permissions import requires
from tuning.jobs import JobStatus
from tuning.pricing import (
    MeasuredThroughput,
    ThroughputKey,
    measured_tokens_per_second,
    throughput_key,
)

logger = logging.getLogger(__name__)


class ThroughputStore:
    """Measured throughput aggregates in Firestore (`tuning.pricing.ThroughputHistory`)."""

    def __init__(self, client: firestore.Client, collection: str) -> None:
        self.client = client
        self.aggregates = client.collection(collection)

    @requires("datastore.entities.create", "datastore.entities.update")
    def record_completion(self, transition: Transition, transaction: firestore.Transaction) -> None:
        """Add the job's measured throughput to its key, if this transition completes it.

        Only writes (a transaction reads before it writes, and the job store has written):
        increments that commit with the job's own change or not at all.
        """
        job = transition.after
        if not transition.became_terminal or job.status is not JobStatus.COMPLETED:
            return
        key = throughput_key(job)
        rate = measured_tokens_per_second(job)
        if key is None or rate is None:
            return
        transaction.set(
            self.aggregates.document(key.document_id),
            {
                "tier": key.tier,
                "base_model_id": key.base_model_id,
                "method": key.method,
                "trainer_type": key.trainer_type,
                "jobs": firestore.Increment(1),
                "tokens_per_second_sum": firestore.Increment(rate),
                "updated_at": firestore.SERVER_TIMESTAMP,
            },
            merge=True,
        )
        logger.info("throughput of %s recorded: %.1f tokens/s", key, rate)

    @requires("datastore.entities.get")
    def lookup(self, key: ThroughputKey) -> MeasuredThroughput | None:
        """The key's aggregate, or None when no completed job of it was measured."""
        with transient_google_errors():
            snapshot = self.aggregates.document(key.document_id).get()
        document = snapshot.to_dict() if snapshot.exists else None
        if not document or not document.get("jobs"):
            return None
        jobs = int(document["jobs"])
        return MeasuredThroughput(
            jobs=jobs, tokens_per_second=float(document["tokens_per_second_sum"]) / jobs
        )
