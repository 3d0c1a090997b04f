"""Load: 200 concurrent submissions become 200 distinct jobs, each dispatched exactly once.

All 200 POST /train requests are released at once (a barrier) against the real submit
server; the Pub/Sub emulator pushes the job references to the real dispatch server,
whose launcher only records (bench/servers/instrument.py), so the figures are ours.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from bench.stack import Stack
from tests.reliability.conftest import Ledger
from tests.reliability.support import all_jobs, redeliveries, train_request, wait_for
from tuning.dispatching import STARTED
from tuning.jobs import JobStatus

SUBMISSIONS = 200
CALLERS = [f"load-{n}@example.com" for n in range(5)]


def test_concurrent_submissions_become_distinct_jobs_each_dispatched_once(
    start_stack: Any, ledger: Ledger
) -> None:
    stack: Stack = start_stack(functions=("submit", "dispatch", "on_job_event"))
    bodies = [train_request(ledger, job_name=f"load {n}") for n in range(SUBMISSIONS)]
    barrier = threading.Barrier(SUBMISSIONS)
    tokens = [stack.token(caller, "submit") for caller in CALLERS]

    def submit(number: int) -> requests.Response:
        session = requests.Session()
        barrier.wait()  # all at once
        return session.post(
            stack.url("submit", "/train"),
            json=bodies[number],
            headers={"Authorization": f"Bearer {tokens[number % len(CALLERS)]}"},
            timeout=300,
        )

    with ThreadPoolExecutor(max_workers=SUBMISSIONS) as pool:
        answers = list(pool.map(submit, range(SUBMISSIONS)))
    ledger.add("requests sent", SUBMISSIONS)
    submitted = [answer.json()["job_id"] for answer in answers if answer.status_code == 202]
    ledger.add("jobs created", len(set(submitted)))

    def all_launched() -> list[dict[str, str]] | None:
        launches = [entry for entry in stack.launches() if "job_id" in entry]
        return launches if {entry["job_id"] for entry in launches} >= set(submitted) else None

    wait_for(all_launched, timeout=240, interval=1, what="every job launched")
    # Give a duplicate launch the time to show (a redelivery comes about a second later).
    wait_for(lambda: not _pending_deliveries(stack), timeout=60, what="deliveries to settle")
    launches = stack.launches()
    launched = Counter(entry["job_id"] for entry in launches if "job_id" in entry)
    records = all_jobs(stack)
    lost = [job_id for job_id in submitted if job_id not in records]
    ledger.add("jobs lost", len(lost))
    ledger.add("duplicates delivered", redeliveries(stack.deliveries("dispatch")))

    assert Counter(answer.status_code for answer in answers) == {202: SUBMISSIONS}
    assert len(set(submitted)) == SUBMISSIONS
    assert lost == []
    assert set(launched) == set(submitted)
    assert set(launched.values()) == {1}, launched.most_common(3)
    assert [entry for entry in launches if "cancelled" in entry] == []
    executions = {e["job_id"]: e["execution"] for e in launches if "job_id" in e}
    for job_id in submitted:
        job = records[job_id]
        assert job.status is JobStatus.QUEUED and job.status_reason == STARTED
        assert job.execution == executions[job_id]
    assert {records[job_id].owner for job_id in submitted} == set(CALLERS)


def _pending_deliveries(stack: Stack) -> bool:
    """True while some delivery to dispatch failed without a later success for its message."""
    outcomes: dict[str, str] = {}
    for entry in stack.deliveries("dispatch"):
        outcomes[entry["message_id"]] = entry["outcome"]
    return any(outcome != "ok" for outcome in outcomes.values())
