"""Delivery faults: every request and event arrives two or three times, out of order.

Fifty jobs. Their submits are sent two or three times each with one Idempotency-Key,
shuffled and concurrent, and each job reference is published again once or twice, so
dispatch gets every request two or three times. Then each job's lifecycle events
(one or two task attempts, ending completed or failed) are published two or three
times each, all jobs' events shuffled together. The final records must equal those
of the in-order run: the same events applied once each, in order, to copies of the
same records through the same store.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from bench.stack import Stack
from tests.reliability.support import all_jobs, comparable, train_request, wait_for
from tuning.events import JobEvent
from tuning.gcp.firestore import JobStore
from tuning.jobs import Artifacts, ErrorType, Metrics, Progress, utcnow
from tuning.reporting import EventReporter
from tuning.spec import JobReference

JOBS = 50
rng = random.Random(9)


class Recorder:
    """Collects what an EventReporter would publish: a job's events in their true order."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []

    def publish(self, topic: str, message: JobEvent, **attributes: str) -> str:
        self.events.append(message)
        return str(len(self.events))


def lifecycle(job_id: str, execution: str, number: int) -> list[JobEvent]:
    """A trainer's events in order: one or two attempts, ending completed or failed."""
    recorder = Recorder()
    start, ticks = utcnow(), itertools.count()

    def clock() -> Any:
        return start + timedelta(seconds=next(ticks))

    attempts = 1 + number % 2
    for attempt in range(attempts):
        reporter = EventReporter(
            recorder, "t", job_id=job_id, attempt=attempt, execution=execution, clock=clock
        )
        if attempt:
            reporter.restarted(resumed_from_step=4)
        reporter.preparing()
        reporter.training(total_steps=8)
        for step in range(1 + 4 * attempt, 5 + 4 * attempt):
            reporter.progress_update(Progress(step=step, total_steps=8, loss=2.0 / step))
        reporter.evaluation(Metrics(eval_loss=1.0 / (attempt + 1), step=4 + 4 * attempt))
        if attempt + 1 < attempts:
            continue  # this attempt dies here without a final event
        if number % 5 == 4:
            reporter.failed("the dataset broke", error_type=ErrorType.USER, code="bad_rows")
        else:
            reporter.exporting(["adapter"])
            reporter.completed(Artifacts(adapter_path=f"gs://m/trained_adapters/{job_id}/"))
    return recorder.events


def test_duplicated_shuffled_deliveries_leave_the_in_order_records(start_stack, ledger):
    stack: Stack = start_stack(functions=("submit", "dispatch", "on_job_event"))
    notifications = f"notifications-check-{stack.unique}"
    stack.admin.ensure_pull_subscription(notifications, stack.settings.notifications_topic)

    # Requests: every submit sent 2-3 times with its key, all shuffled and concurrent.
    bodies = {f"key-{n}": train_request(ledger, job_name=f"faults {n}") for n in range(JOBS)}
    sends = [key for key in bodies for _ in range(rng.choice((2, 3)))]
    rng.shuffle(sends)
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda key: _submit(stack, key, bodies[key]), sends))
    ledger.add("requests sent", len(sends))
    job_of_key = {key: job_id for key, (job_id, _) in zip(sends, answers, strict=True)}
    job_ids = sorted(set(job_of_key.values()))
    ledger.add("jobs created", len(job_ids))
    copies = [job_id for job_id in job_ids for _ in range(rng.choice((1, 2)))]
    rng.shuffle(copies)
    for job_id in copies:  # the reference again, as a submit retried after a lost answer would
        stack.publisher.publish(stack.settings.requests_topic, JobReference(job_id=job_id))
    wait_for(
        lambda: len(stack.deliveries("dispatch")) >= len(job_ids) + len(copies),
        timeout=120,
        what="every request delivered",
    )
    launches = Counter(entry["job_id"] for entry in stack.launches() if "job_id" in entry)
    dispatched = all_jobs(stack)

    # Events: the in-order run first, on copies of the dispatched records.
    streams = {
        job_id: lifecycle(job_id, dispatched[job_id].execution or "", number)
        for number, job_id in enumerate(job_ids)
    }
    in_order = JobStore(stack.settings.project_id, f"{stack.settings.jobs_collection}_in_order")
    for job_id, events in streams.items():
        in_order.create(dispatched[job_id])
        for event in events:
            in_order.apply_event(event)
    deliveries = [event for events in streams.values() for event in events]
    deliveries = [event for event in deliveries for _ in range(rng.choice((2, 3)))]
    rng.shuffle(deliveries)
    with ThreadPoolExecutor(max_workers=16) as pool:
        message_ids = set(pool.map(stack.publish_event, deliveries))
    ledger.add("requests sent", len(deliveries) + len(copies))

    def all_applied() -> bool:
        done = {e["message_id"] for e in stack.deliveries("on_job_event") if e["outcome"] == "ok"}
        return message_ids <= done

    wait_for(all_applied, timeout=240, interval=1, what="every event delivered")
    final = all_jobs(stack)
    expected = {job_id: in_order.get(job_id) for job_id in job_ids}
    ended = stack.admin.pull(notifications, max_messages=2 * JOBS, timeout=10)
    duplicates = (
        len(sends) - len(job_ids)
        + len(stack.deliveries("dispatch")) - len(job_ids)
        + len(stack.deliveries("on_job_event")) - sum(map(len, streams.values()))
    )  # fmt: skip
    ledger.add("duplicates delivered", duplicates)
    ledger.add("jobs lost", len(set(job_ids) - set(final)))

    assert sorted(status for _, status in answers) == sorted(
        [202] * len(job_ids) + [200] * (len(sends) - len(job_ids))
    )
    assert set(job_of_key) == set(bodies) and len(job_ids) == JOBS
    assert launches == dict.fromkeys(job_ids, 1)
    for job_id in job_ids:
        assert comparable(final[job_id]) == comparable(expected[job_id]), job_id
    assert Counter(final[job_id].status.value for job_id in job_ids) == {
        "completed": 40,
        "failed": 10,
    }
    assert Counter(attributes["job_id"] for _, attributes in ended) == dict.fromkeys(job_ids, 1)


def _submit(stack: Stack, key: str, body: dict[str, Any]) -> tuple[str, int]:
    answer = stack.request(
        "POST", "submit", "/train", json=body, headers={"Idempotency-Key": key}, caller="f@x.io"
    )
    assert answer.status_code in (200, 202), answer.text
    return answer.json()["job_id"], answer.status_code
