"""Function cold start: process start to first 200, each function against a bare app.

Each run starts `python -m functions_framework` for one function, as Cloud Run
would start an instance, and polls every 10 ms until the function answers 200:
GET /health for an HTTP function; for a CloudEvent function, a Pub/Sub push that it
acknowledges without touching a backend (an empty message). The baseline is a bare
functions-framework app (bench/servers/bare) that imports the three Google client
libraries the functions use, answering the same kind of request. Runs alternate
between all of them, several rounds, and the median of each is compared.

Import-time work is what this measures. The HTTP functions import the Google
clients on first use, so their first real request pays for that; dispatch,
on_job_event and reconcile import Firestore up front.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from bench.report import Benchmark, Comparison, median
from bench.stack import REPO, Stack
from tuning.local.emulators import HOST, free_port
from tuning.local.functions import FUNCTIONS, FunctionSpec

BARE = {
    "http": FunctionSpec("../bench/servers/bare", "bare_http", "http"),
    "cloudevent": FunctionSpec("../bench/servers/bare", "bare_cloud_event", "cloudevent"),
}
EMPTY_PUSH = {
    "subscription": "projects/p/subscriptions/s",
    "message": {"data": "", "messageId": "cold-start", "publishTime": "2026-01-01T00:00:00Z"},
}


def seconds_to_first_200(spec: FunctionSpec, environ: dict[str, str], log: Path) -> float:
    """Start the function's server and time it until it answers 200 to its probe."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    source = REPO / "functions" / spec.folder / "main.py"
    command = [
        *(sys.executable, "-m", "functions_framework", f"--target={spec.target}"),
        *(f"--source={source}", f"--signature-type={spec.signature_type}"),
        *(f"--host={HOST}", f"--port={port}"),
    ]
    if spec.signature_type == "http":
        probe = lambda: requests.get(f"{url}/health", timeout=5)  # noqa: E731
    else:
        path = f"{url}/projects/p/topics/t"
        probe = lambda: requests.post(path, json=EMPTY_PUSH, timeout=5)  # noqa: E731
    with log.open("ab") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            env={**environ, "PYTHONUNBUFFERED": "1"},
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if probe().status_code == 200:
                    return time.perf_counter() - started
            if process.poll() is not None or time.perf_counter() - started > 60:
                raise RuntimeError(f"{spec.target} did not answer 200; see {log}")
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run(stack: Stack, rounds: int = 5) -> Benchmark:
    candidates = {name: spec for name, spec in FUNCTIONS.items()}
    candidates |= {f"bare ({kind})": spec for kind, spec in BARE.items()}
    times: dict[str, list[float]] = {name: [] for name in candidates}
    log = stack.workdir / "logs" / "cold-start.log"
    for _ in range(rounds):
        for name, spec in candidates.items():
            times[name].append(seconds_to_first_200(spec, stack.environ, log))
    benchmark = Benchmark("cold start")
    for name, spec in FUNCTIONS.items():
        bare = f"bare ({spec.signature_type})"
        benchmark.comparisons.append(
            Comparison(
                name=f"{name} to first 200 (median)",
                unit="ms",
                ours=1000 * median(times[name]),
                baseline=1000 * median(times[bare]),
                baseline_is=f"bare {spec.signature_type} app importing the clients",
                lower_is_better=True,
                target=1.2,
            )
        )
    benchmark.details = {
        "rounds": rounds,
        "seconds": {name: [round(t, 3) for t in values] for name, values in times.items()},
    }
    return benchmark
