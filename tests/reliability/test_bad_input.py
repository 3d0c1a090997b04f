"""Bad input: generated HTTP requests never get a 5xx; malformed messages never loop.

HTTP: schemathesis generates at least 1,000 requests per function from the API's own
OpenAPI document, valid and invalid ones alike, against the real servers; half of the
job routes' requests name seeded jobs so that they get past the 404.

Pub/Sub: at least 200 malformed messages to each consumer through its real push
subscription: random bytes, broken JSON, valid JSON of the wrong shape and huge
payloads. Each must be acknowledged (or dead-lettered), no server may restart, and
the jobs already there must be exactly as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from bench.stack import Stack
from tests.reliability.conftest import Ledger
from tests.reliability.support import seed_job, wait_for
from tuning.api.routes import operations_of
from tuning.dispatching import parse_request_message
from tuning.errors import TuningError
from tuning.events import parse_event
from tuning.local.bootstrap import DeliveryPolicy

REQUESTS_PER_FUNCTION = 1000
HEALTH_EXAMPLES = 20
MALFORMED_PER_CONSUMER = 200
# Beyond no 5xx: every answer is one the OpenAPI document describes (status, type, body).
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]
# Dead-lettered after 5 failed deliveries: a message that keeps failing shows within seconds.
FEW_ATTEMPTS = DeliveryPolicy(ack_deadline_seconds=30, max_delivery_attempts=5)
rng = random.Random(5)
# What gunicorn logs (at its error level) when a worker crashes, hangs or is replaced.
CRASH_SIGNS = ("WORKER TIMEOUT", "was sent SIG", "Worker exiting", "Booting worker")


@pytest.fixture(scope="module")
def api(start_stack: Any) -> Stack:
    return start_stack(functions=("submit", "status", "delete"))


@pytest.fixture(scope="module")
def consumers(start_stack: Any) -> Stack:
    return start_stack(
        functions=("dispatch", "on_job_event"),
        dispatch_policy=FEW_ATTEMPTS,
        events_policy=FEW_ATTEMPTS,
    )


# HTTP ----------------------------------------------------------------------------------


def remember_secrets(ledger: Ledger, case: Case, status: int) -> None:
    """Secrets of an accepted generated request join the scan, when they cannot occur by
    chance (long, varied): a stored one must be nowhere but in the secret store."""
    body = case.body if isinstance(case.body, dict) else {}
    wandb = (body.get("training_config") or {}).get("wandb_config") or {}
    for value in (body.get("hf_token"), wandb.get("api_key") if isinstance(wandb, dict) else None):
        if status == 202 and isinstance(value, str) and len(value) >= 16 and len(set(value)) >= 10:
            ledger.remember(value)


@pytest.mark.parametrize("function", ["submit", "status", "delete"])
def test_generated_requests_never_get_a_server_error(api: Stack, ledger: Ledger, function: str):
    seeded = [
        seed_job(api, f"seeded-{function}-{status}-{api.unique}", owner=None, status=status).job_id
        for status in ("completed", "training", "queued")
    ]
    # Through the front door, as a caller with a valid token: the fuzz reaches the function.
    auth = {"Authorization": f"Bearer {api.token('fuzz@example.com', function)}"}
    schema = schemathesis.openapi.from_url(api.url(function, "/openapi.json"), headers=auth)
    served = {(op.method, op.path) for op in operations_of(function)} - {("GET", "/openapi.json")}
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if (result.ok().method.upper(), result.ok().path) in served
    ]
    operations.sort(key=lambda op: op.method.upper() == "DELETE")  # the seeded jobs go last
    statuses: Counter[int] = Counter()
    departures: set[str] = set()
    budget = (REQUESTS_PER_FUNCTION - HEALTH_EXAMPLES) // (len(operations) - 1) + 1
    for operation in operations:
        modes = [operation.as_strategy(mode) for mode in GenerationMode]
        if "{job_id}" in operation.path:
            modes += [operation.as_strategy(path_parameters={"job_id": job}) for job in seeded]
        examples = HEALTH_EXAMPLES if operation.path == "/health" else budget

        @given(case=st.one_of(modes))
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Case) -> None:
            response = case.call(base_url=api.url(function, ""), headers=auth)
            statuses[response.status_code] += 1
            remember_secrets(ledger, case, response.status_code)
            case.validate_response(response, checks=[not_a_server_error])
            try:
                case.validate_response(response, checks=CONFORMANCE)
            except FailureGroup as failures:
                title = str(failures.exceptions[0]).strip().splitlines()[0]
                departures.add(
                    f"{function}: {case.method.upper()} {case.path} answered "
                    f"{response.status_code}: {title}"
                )

        check()
    sent = sum(statuses.values())
    ledger.add("requests sent", sent)
    ledger.add("malformed inputs tried", sum(n for code, n in statuses.items() if code >= 400))
    ledger.add("jobs created", statuses[202])

    assert sent >= REQUESTS_PER_FUNCTION, statuses
    assert not [code for code in statuses if code >= 500], statuses
    assert not departures, sorted(departures)


# Pub/Sub ---------------------------------------------------------------------------------


def valid_request() -> dict[str, Any]:
    return {
        "processed_dataset_id": "dataset_abc123",
        "training_config": {"base_model_id": "google/gemma-3-1b-it", "method": "LoRA"},
    }


def valid_event(job_id: str) -> dict[str, Any]:
    return {
        "type": "progress",
        "job_id": job_id,
        "attempt": 0,
        "seq": 3,
        "timestamp": "2026-01-01T00:00:00Z",
        "payload": {"step": 3, "total_steps": 10, "loss": 1.5},
    }


WRONG_VALUES: list[Any] = [
    None, True, -1, 0, 2**70, 1e308, "", "x" * 5000, "../../etc/passwd", "a/b", "\x00\n",
    [], [1, "2"], {}, {"nested": {"deeper": [None]}}, "2026-13-45T99:99:99Z", "NaN",
]  # fmt: skip


def mutate(value: Any, depth: int = 0) -> Any:
    """The document with one random change somewhere: a key dropped, a value of the wrong
    type, an unknown key, or the whole thing wrapped."""
    if isinstance(value, dict) and value and depth < 3 and rng.random() < 0.6:
        key = rng.choice(sorted(value))
        changed = dict(value)
        choice = rng.random()
        if choice < 0.25:
            del changed[key]
        elif choice < 0.35:
            changed[f"unknown_{rng.randrange(100)}"] = rng.choice(WRONG_VALUES)
        else:
            changed[key] = mutate(value[key], depth + 1)
        return changed
    if rng.random() < 0.1:
        return [value]
    return rng.choice(WRONG_VALUES)


def malformed(valid: Callable[[], dict[str, Any]], is_valid: Callable[[bytes], bool]) -> list:
    """MALFORMED_PER_CONSUMER messages the consumer can never apply, of four kinds; whatever
    would parse (a BOM or UTF-16 is still JSON to Python) is left out."""
    text = json.dumps(valid()).encode()
    random_bytes = [rng.randbytes(rng.randint(0, 3000)) for _ in range(50)]
    broken = [text[: rng.randrange(1, len(text))] for _ in range(20)]
    broken += [bytes(b ^ 0xFF if rng.random() < 0.05 else b for b in text) for _ in range(10)]
    broken += [
        b"", b" ", b"\xef\xbb\xbf" + text, text + b"}}", b"\xff\xfe" + text, b"{'a': 1}",
        text.decode().encode("utf-16"), b'{"job_id": NaN}', b"null", b"\x00" * 64, b"-",
        b'"\\ud800"', b"1" * 5000, b"{]", b"tru", b"[1,]", b'{"a" 1}',
        b'{"kind": "job_reference", "job_id": "\\u0000"}',
    ]  # fmt: skip
    huge = [
        rng.randbytes(1_000_000),
        json.dumps("x" * 4_000_000).encode(),
        json.dumps({**valid(), "job_id": "y" * 3_000_000}).encode(),
        json.dumps([[0] * 1000] * 700).encode(),
    ]
    messages = [m for m in random_bytes + broken + huge if not is_valid(m)]
    while len(messages) < MALFORMED_PER_CONSUMER:  # valid JSON of the wrong shape
        candidate = json.dumps(mutate(valid())).encode()
        if not is_valid(candidate):
            messages.append(candidate)
    rng.shuffle(messages)
    return messages


def parses(parser: Callable[[bytes], Any]) -> Callable[[bytes], bool]:
    def is_valid(data: bytes) -> bool:
        try:
            parser(data)
        except (TuningError, ValueError, RecursionError):
            return False
        return True

    return is_valid


def test_malformed_messages_are_acknowledged_and_corrupt_nothing(consumers: Stack, ledger):
    stack = consumers
    seeded = {
        status: seed_job(stack, f"seeded-{status}-{stack.unique}", owner=None, status=status)
        for status in ("completed", "training", "queued")
    }
    before = {job.job_id: stack.services.jobs.get(job.job_id) for job in seeded.values()}
    targets = list(before)
    plans = {
        "dispatch": (
            stack.settings.requests_topic,
            malformed(valid_request, parses(parse_request_message)),
        ),
        "on_job_event": (
            stack.settings.events_topic,
            malformed(lambda: valid_event(rng.choice(targets)), parses(parse_event)),
        ),
    }
    sent: dict[str, dict[str, str]] = {}  # function -> message id -> digest
    for function, (topic, messages) in plans.items():
        # Pub/Sub refuses a message with neither data nor attributes: every one gets one.
        sent[function] = {
            stack.publisher.publish(topic, message, probe=str(n), owner="\x00" * (n % 3)): (
                _digest(message)
            )
            for n, message in enumerate(messages)
        }
    ledger.add("malformed inputs tried", sum(map(len, sent.values())))
    ledger.add("requests sent", sum(map(len, sent.values())))

    dead = {"dispatch": set(), "on_job_event": set()}

    def settled() -> bool:
        assert stack.resources is not None
        for function, subscription in (
            ("dispatch", stack.resources.requests_dead_letters),
            ("on_job_event", stack.resources.events_dead_letters),
        ):
            pulled = stack.admin.pull(subscription, max_messages=100, timeout=0.5)
            dead[function] |= {_digest(data) for data, _ in pulled}
        return all(
            _acknowledged(stack, function) | {i for i, d in ids.items() if d in dead[function]}
            >= set(ids)
            for function, ids in sent.items()
        )

    wait_for(settled, timeout=180, interval=1, what="every message acknowledged or dead-lettered")
    after = {job_id: stack.services.jobs.get(job_id) for job_id in before}
    failures = {
        function: Counter(e["outcome"] for e in stack.deliveries(function) if e["outcome"] != "ok")
        for function in sent
    }

    assert after == before  # not even updated_at moved
    assert failures == {"dispatch": Counter(), "on_job_event": Counter()}, failures
    assert dead == {"dispatch": set(), "on_job_event": set()}
    assert stack.launches() == []  # nothing malformed was ever launched
    for server in stack.servers.values():  # no worker died or hung: no crash loop
        os.kill(server.pid, 0)
        assert not [sign for sign in CRASH_SIGNS if sign in server.log()], server.log()[-2000:]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _acknowledged(stack: Stack, function: str) -> set[str]:
    return {e["message_id"] for e in stack.deliveries(function) if e["outcome"] == "ok"}


# Nesting deeper than Python's recursion limit: json.loads raises RecursionError, which is
# not a ValueError. dispatch lets it escape, so Pub/Sub redelivers the message until it is
# dead-lettered instead of acknowledging it (tuning/dispatching.py: parse_request_message
# and reject_message catch ValueError only). Strict: this fails once the bug is fixed, so
# that the mark is removed.
DEEP = [b"[" * 100_000, b'{"a":' * 50_000]


@pytest.mark.parametrize("function", ["dispatch", "on_job_event"])
def test_deeply_nested_json_is_acknowledged(consumers: Stack, ledger: Ledger, function: str):
    stack = consumers
    topic = {
        "dispatch": stack.settings.requests_topic,
        "on_job_event": stack.settings.events_topic,
    }[function]
    ids = {stack.publisher.publish(topic, message, probe="deep") for message in DEEP}
    ledger.add("malformed inputs tried", len(ids))
    ledger.add("requests sent", len(ids))

    def delivered() -> list[dict[str, Any]]:
        return [e for e in stack.deliveries(function) if e["message_id"] in ids]

    wait_for(lambda: {e["message_id"] for e in delivered()} == ids, timeout=60, what="delivery")

    assert [e["outcome"] for e in delivered()] == ["ok"] * len(ids)
