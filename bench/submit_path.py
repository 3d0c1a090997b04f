"""Submit path overhead: `POST /train` through a functions-framework server, against the
irreducible work done directly with the clients in the same process and run.

A submit must store one secret, upload the redacted config to GCS, create the job's
Firestore document and publish the job reference. The baseline does exactly those
four calls with the raw Google clients (and the local secret store, Secret Manager's
stand-in) for a request of the same size; ours is the HTTP round trip to the real
function, which also parses and validates the request, checks for an earlier job
with the same key and logs. The two alternate, request by request.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from bench.report import Benchmark, Comparison, percentile
from bench.stack import Stack
from tuning.gcp.firestore import to_firestore
from tuning.gcp.pubsub import topic_path
from tuning.gcp.secrets import LocalSecretStore
from tuning.jobs import new_job_id, new_job_record
from tuning.spec import JobReference, parse_train_request

WARM_UP = 10
# Who the benchmarks submit as (past the front door, as Cloud Run would deliver the token).
BENCH_CALLER = "bench@example.com"


def train_request(token: str) -> dict[str, Any]:
    """The seed's example request, with one secret (the Hub token)."""
    return {
        "processed_dataset_id": "dataset_abc123",
        "hf_token": token,
        "job_name": "bench submit",
        "training_config": {
            "base_model_id": "google/gemma-3-1b-it",
            "method": "LoRA",
            "hyperparameters": {"learning_rate": 0.0001, "batch_size": 4, "epochs": 3},
            "export_config": {"format": "merged", "destination": "gcs"},
            "eval_config": {"eval_strategy": "epoch"},
        },
    }


DIRECT_COLLECTION_SUFFIX = "_direct"


def direct_submit(
    stack: Stack, topic: str | None = None
) -> Callable[[], tuple[str, dict[str, float]]]:
    """The four client calls a submit cannot avoid: a function that makes them for a new
    job and returns its id and the time of each call. Publishes on `topic` (default: the
    stack's requests topic), into a collection of its own."""
    from google.cloud import firestore, pubsub_v1, storage

    settings = stack.settings
    documents = firestore.Client(project=settings.project_id).collection(
        settings.jobs_collection + DIRECT_COLLECTION_SUFFIX
    )
    bucket = storage.Client(project=settings.project_id).bucket(settings.config_bucket)
    publisher = pubsub_v1.PublisherClient()
    path = topic_path(settings.project_id, topic or settings.requests_topic)
    # Its own file, growing like the server's: the local store rewrites the file each time.
    vault = LocalSecretStore(stack.workdir / "direct-secrets.json", project=settings.project_id)

    def submit() -> tuple[str, dict[str, float]]:
        token = f"hf_{secrets.token_hex(16)}"
        request = parse_train_request(train_request(token))
        job_id = new_job_id(request.processed_dataset_id, request.training_config.base_model_id)
        timings = {}
        start = time.perf_counter()
        reference = vault.put(job_id, "hf_token", token)
        timings["secret"] = time.perf_counter() - start
        config = json.dumps(request.redacted({"hf_token": reference})).encode()
        config_uri = settings.layout.config_uri(job_id)
        start = time.perf_counter()
        bucket.blob(config_uri.split("/", 3)[3]).upload_from_string(
            config, content_type="application/json"
        )
        timings["gcs"] = time.perf_counter() - start
        record = new_job_record(
            request,
            job_id=job_id,
            owner=None,
            config_uri=config_uri,
            secret_references={"hf_token": reference},
        )
        start = time.perf_counter()
        documents.document(job_id).create(to_firestore(record))
        timings["firestore"] = time.perf_counter() - start
        start = time.perf_counter()
        publisher.publish(path, JobReference(job_id=job_id).model_dump_json().encode()).result()
        timings["pubsub"] = time.perf_counter() - start
        timings["total"] = sum(timings.values())
        return job_id, timings

    return submit


def run(stack: Stack, requests: int = 300) -> Benchmark:
    """Alternate one POST /train and one direct submit, `requests` times (after a warm-up)."""
    direct = direct_submit(stack)
    ours: list[float] = []
    baseline: list[dict[str, float]] = []
    for index in range(WARM_UP + requests):
        body = train_request(f"hf_{secrets.token_hex(16)}")
        start = time.perf_counter()
        answer = stack.request(
            "POST", "submit", "/train", json=body, caller=BENCH_CALLER, past_front_door=True
        )
        elapsed = time.perf_counter() - start
        if answer.status_code != 202:
            raise RuntimeError(f"POST /train answered {answer.status_code}: {answer.text[:300]}")
        _, timings = direct()
        if index >= WARM_UP:
            ours.append(elapsed)
            baseline.append(timings)
    totals = [t["total"] for t in baseline]
    benchmark = Benchmark("submit path")
    for name, fraction in (("p50", 0.5), ("p95", 0.95)):
        benchmark.comparisons.append(
            Comparison(
                name=f"POST /train {name}",
                unit="ms",
                ours=1000 * percentile(ours, fraction),
                baseline=1000 * percentile(totals, fraction),
                baseline_is="the 4 client calls, made directly",
                lower_is_better=True,
                target=1.5,
            )
        )
    benchmark.details = {
        "requests": requests,
        "direct_calls_p50_ms": {
            step: round(1000 * percentile([t[step] for t in baseline], 0.5), 2)
            for step in ("secret", "gcs", "firestore", "pubsub")
        },
    }
    return benchmark
