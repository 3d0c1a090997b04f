"""The event-driven path: submit -> execution started, and events applied per second.

Latency: from sending `POST /train` to the moment dispatch, pushed the job reference
by the Pub/Sub emulator, claims the job and calls its launcher (one that only records
and returns, see bench/servers/instrument.py). The baseline takes the same hops with
nothing of ours: the four client calls of a submit, made directly, publish a reference
that is pushed to a bare functions-framework app, which claims the job in one
Firestore transaction and notes the time. Submissions go one at a time.

Throughput: progress events for many jobs are published while the subscription only
holds them; then it is switched to push to on_job_event, and the time until every
event was handled gives events per second. The baseline is the same number of raw
Firestore transactions (read the job, write it and a history document, as applying
an event does, with the same documents) on the same emulator, from as many threads
as the function serves requests with, each thread on its own documents.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from bench.report import Benchmark, Comparison, percentile
from bench.stack import Stack
from bench.submit_path import (
    BENCH_CALLER,
    DIRECT_COLLECTION_SUFFIX,
    direct_submit,
    train_request,
)
from tuning.events import ProgressEvent
from tuning.gcp.firestore import to_firestore
from tuning.gcp.pubsub import encode_message, topic_path
from tuning.jobs import Progress, new_job_record, utcnow
from tuning.local.bootstrap import push_endpoint
from tuning.local.functions import FunctionSpec, start_function, stop_function
from tuning.spec import parse_train_request

BARE_CLAIM = FunctionSpec("../bench/servers/bare", "bare_claim", "cloudevent")
BARE = {"cloudevent": FunctionSpec("../bench/servers/bare", "bare_cloud_event", "cloudevent")}
SERVER_THREADS = 8  # functions-framework's default on 2 cores


class Tail:
    """New JSON lines of a file that another process appends to."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with self.path.open() as file:
            file.seek(self.offset)
            text = file.read()
        complete = text[: text.rfind("\n") + 1]
        self.offset += len(complete.encode())
        return [json.loads(line) for line in complete.splitlines() if line]


def wait_for_job(tail: Tail, job_id: str, seen: dict[str, float], timeout: float = 60) -> float:
    """When the job was claimed, as its record line says; polls every few milliseconds."""
    deadline = time.monotonic() + timeout
    while job_id not in seen:
        for entry in tail.read():
            if "job_id" in entry:
                seen[entry["job_id"]] = entry["at"]
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} was not dispatched within {timeout}s")
        time.sleep(0.003)
    return seen[job_id]


def submit_to_started(stack: Stack, count: int) -> tuple[list[float], list[float]]:
    """(ours, baseline) seconds from submit to claimed-and-launched, alternating."""
    record = stack.workdir / "bare-claims.jsonl"
    bare = start_function(
        "bare-claim",
        environ={
            **stack.environ,
            "BARE_COLLECTION": stack.settings.jobs_collection + DIRECT_COLLECTION_SUFFIX,
            "BARE_RECORD_FILE": str(record),
        },
        log_dir=stack.workdir / "logs",
        spec=BARE_CLAIM,
    )
    topic = f"bare-requests-{stack.unique}"
    try:
        stack.admin.ensure_topic(topic)
        stack.admin.ensure_push_subscription(
            f"{topic}-push",
            topic,
            push_endpoint(bare.url, stack.settings.project_id, topic),
            ack_deadline_seconds=60,
        )
        direct = direct_submit(stack, topic=topic)
        launches, claims = Tail(stack.workdir / "launches.jsonl"), Tail(record)
        launched: dict[str, float] = {}
        claimed: dict[str, float] = {}
        ours, baseline = [], []
        for index in range(count + 3):  # the first three warm both paths up
            sent = time.time()
            answer = stack.request(
                "POST",
                "submit",
                "/train",
                json=train_request("hf_x"),
                caller=BENCH_CALLER,
                past_front_door=True,
            )
            ours_seconds = wait_for_job(launches, answer.json()["job_id"], launched) - sent
            sent = time.time()
            job_id, _ = direct()
            baseline_seconds = wait_for_job(claims, job_id, claimed) - sent
            if index >= 3:
                ours.append(ours_seconds)
                baseline.append(baseline_seconds)
        return ours, baseline
    finally:
        stack.admin.delete_subscription(f"{topic}-push")
        stop_function(bare, grace=0)


def held_then_pushed(
    stack: Stack, messages: list[bytes], endpoint: str, handled: Tail
) -> tuple[float, list[dict[str, Any]]]:
    """Publish `messages` while a pull subscription holds them, then switch it to push to
    `endpoint`: messages per second until `handled` lists every one as done, and the
    entries it listed for them."""
    topic = f"bench-held-{secrets.token_hex(4)}"
    subscription = f"{topic}-push"
    stack.admin.ensure_topic(topic)
    stack.admin.ensure_pull_subscription(subscription, topic)
    path = topic_path(stack.settings.project_id, topic)
    futures = [stack.admin.publisher.publish(path, message) for message in messages]
    published = {future.result() for future in futures}
    started = time.time()
    stack.admin.ensure_push_subscription(
        subscription,
        topic,
        push_endpoint(endpoint, stack.settings.project_id, topic),
        ack_deadline_seconds=60,
    )
    done: dict[str, dict[str, Any]] = {}
    last = started
    deadline = time.monotonic() + 300
    try:
        while not published <= done.keys():
            for entry in handled.read():
                if entry.get("outcome", "ok") == "ok" and entry["message_id"] in published:
                    done[entry["message_id"]] = entry
                    last = max(last, entry["end"])
            if time.monotonic() > deadline:
                missing = len(published - done.keys())
                raise TimeoutError(f"{missing} of {len(published)} never handled")
            time.sleep(0.05)
    finally:
        stack.admin.delete_subscription(subscription)
    return len(published) / (last - started), list(done.values())


def concurrency(entries: list[dict[str, Any]]) -> tuple[float, int]:
    """(mean, peak) number of messages being handled at once."""
    edges = sorted([(e["start"], 1) for e in entries] + [(e["end"], -1) for e in entries])
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    span = max(e["end"] for e in entries) - min(e["start"] for e in entries)
    return sum(e["end"] - e["start"] for e in entries) / span, peak


def progress_events(stack: Stack, jobs: int, events_per_job: int) -> list[bytes]:
    """Progress events for new jobs, interleaved as concurrent trainers would publish them."""
    request = parse_train_request(train_request("hf_x"))
    job_ids = [f"bench-events-{stack.unique}-{n}" for n in range(jobs)]
    for job_id in job_ids:
        record = new_job_record(
            request, job_id=job_id, owner=None, config_uri=None, secret_references={}
        )
        stack.services.jobs.create(record)
    return [
        encode_message(
            ProgressEvent(
                job_id=job_id,
                attempt=0,
                seq=step,
                timestamp=utcnow(),
                payload=Progress(step=step, total_steps=events_per_job, loss=1.0 / step),
            )
        )
        for step in range(1, events_per_job + 1)
        for job_id in job_ids
    ]


def noop_pushed_per_second(stack: Stack, messages: list[bytes]) -> float:
    """The emulator's own push rate: the same messages to a bare app that does nothing."""
    record = stack.workdir / "bare-noop.jsonl"
    bare = start_function(
        "bare-noop",
        environ={**stack.environ, "BARE_RECORD_FILE": str(record)},
        log_dir=stack.workdir / "logs",
        spec=BARE["cloudevent"],
    )
    try:
        return held_then_pushed(stack, messages, bare.url, Tail(record))[0]
    finally:
        stop_function(bare, grace=0)


def raw_transactions_per_second(
    stack: Stack, jobs: int, transactions: int, threads: int = SERVER_THREADS
) -> float:
    """Firestore transactions doing what applying an event must (read the job record,
    write it back, write the event to its history), with the same documents our path
    writes, straight from `threads`: the emulator's cost per byte and indexed field
    falls on both sides."""
    from google.cloud import firestore

    client = firestore.Client(project=stack.settings.project_id)
    collection = client.collection(f"{stack.settings.jobs_collection}_raw")
    request = parse_train_request(train_request("hf_x"))
    for n in range(jobs):
        record = new_job_record(
            request, job_id=f"job-{n}", owner=None, config_uri=None, secret_references={}
        )
        collection.document(record.job_id).set(to_firestore(record))

    @firestore.transactional
    def apply(transaction: Any, reference: Any) -> None:
        data = reference.get(transaction=transaction).to_dict() or {}
        event = ProgressEvent(
            job_id=reference.id,
            attempt=0,
            seq=data.get("last_seq", 0) + 1,
            timestamp=utcnow(),
            payload=Progress(step=1, total_steps=10, loss=0.5),
        )
        data.update(last_seq=event.seq, progress=to_firestore(event.payload))
        transaction.set(reference, data)
        history = reference.collection("events").document(event.event_id)
        transaction.set(history, to_firestore(event))

    def work(thread: int) -> None:
        mine = [f"job-{n}" for n in range(thread, jobs, threads)]  # no shared documents
        for count in range(transactions // threads):
            apply(client.transaction(), collection.document(mine[count % len(mine)]))

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return threads * (transactions // threads) / (time.perf_counter() - started)


def run(stack: Stack, submissions: int = 40, jobs: int = 40, events_per_job: int = 10) -> Benchmark:
    ours, baseline = submit_to_started(stack, submissions)
    benchmark = Benchmark("event path")
    for name, fraction in (("p50", 0.5), ("p95", 0.95)):
        benchmark.comparisons.append(
            Comparison(
                name=f"submit -> execution started {name}",
                unit="ms",
                ours=1000 * percentile(ours, fraction),
                baseline=1000 * percentile(baseline, fraction),
                baseline_is="direct calls, push to a bare app, 1 transaction",
                lower_is_better=True,
            )
        )
    events = progress_events(stack, jobs, events_per_job)
    deliveries = Tail(stack.workdir / "deliveries" / "on_job_event.jsonl")
    deliveries.read()  # only what comes from here on
    applied, handled = held_then_pushed(
        stack, events, stack.servers["on_job_event"].url, deliveries
    )
    raw = raw_transactions_per_second(stack, jobs, len(events))
    serial_raw = raw_transactions_per_second(stack, jobs, len(events) // 4, threads=1)
    noop = noop_pushed_per_second(stack, events)
    mean_concurrency, peak_concurrency = concurrency(handled)
    benchmark.comparisons += [
        Comparison(
            name="events applied per second",
            unit="/s",
            ours=applied,
            baseline=raw,
            baseline_is=f"raw Firestore transactions, {SERVER_THREADS} threads",
            lower_is_better=False,
        ),
        Comparison(
            name="events applied per second",
            unit="/s",
            ours=applied,
            baseline=noop,
            baseline_is="the emulator pushing to a bare app that does nothing",
            lower_is_better=False,
        ),
        Comparison(
            name="time to apply one event (mean)",
            unit="ms",
            ours=1000 * sum(e["end"] - e["start"] for e in handled) / len(handled),
            baseline=1000 / serial_raw,
            baseline_is="one raw Firestore transaction, one thread",
            lower_is_better=True,
        ),
    ]
    benchmark.notes = [
        f"the emulator pushed at most {peak_concurrency} events at a time "
        f"({mean_concurrency:.1f} on average), so events/s is about that many over the time "
        "to apply one; Pub/Sub in GCP scales push concurrency with the load"
    ]
    benchmark.details = {"submissions": submissions, "events": len(events), "jobs": jobs}
    return benchmark
