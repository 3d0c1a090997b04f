"""Isolation: with owner scoping on, no caller reaches another caller's job, on any route.

Three callers each own a queued job (submitted through the real submit function), a
training one and a completed one with a GGUF file. Every route of the API that takes
a job id (taken from the route table, so a new route is covered without editing this)
is called by every other caller for every job, with the identity in the local header
and in an ID token: each answer must be 404 and say nothing of the job; without an
identity every route answers 401. Listings
(paged, filtered, and with another caller's page token) hold only the caller's jobs;
a caller reusing another's idempotency key gets a job of its own. Afterwards every
job and its files are exactly as before.
"""

from __future__ import annotations

import itertools
from typing import Any

from bench.stack import Stack
from tests.emulator.test_api_stack import fake_id_token
from tests.reliability.conftest import Ledger
from tests.reliability.support import seed_job, train_request
from tuning.api.routes import OPERATIONS

CALLERS = ("alice@example.com", "bob@example.com", "carol@example.com")
JOB_ROUTES = [operation for operation in OPERATIONS if "{job_id}" in operation.path]


def identities(caller: str) -> list[dict[str, str]]:
    """The two ways a caller is named: the local stack's header, and an IAM-checked token."""
    return [
        {"X-Tuning-Caller": caller},
        {"Authorization": f"Bearer {fake_id_token(email=caller, sub=caller)}"},
    ]


def test_no_caller_reaches_another_callers_job_on_any_route(start_stack: Any, ledger: Ledger):
    stack: Stack = start_stack(functions=("submit", "status", "delete"), OWNER_SCOPING="true")
    jobs: dict[str, list[str]] = {caller: [] for caller in CALLERS}
    for caller in CALLERS:
        body = train_request(ledger)
        key = {"Idempotency-Key": "one-key-for-all"}
        answer = stack.request("POST", "submit", "/train", json=body, caller=caller, headers=key)
        assert answer.status_code == 202, answer.text
        jobs[caller].append(answer.json()["job_id"])
        for status in ("training", "completed"):
            job_id = f"{caller.split('@')[0]}-{status}-{stack.unique}"
            jobs[caller].append(seed_job(stack, job_id, owner=caller, status=status).job_id)
    ledger.add("requests sent", len(CALLERS))
    ledger.add("jobs created", sum(map(len, jobs.values())))
    before = _snapshot(stack, jobs)
    leaks: list[str] = []

    # Every route with a job id, every other caller, both kinds of identity.
    for operation, (owner, intruder) in itertools.product(
        JOB_ROUTES, itertools.permutations(CALLERS, 2)
    ):
        for job_id, headers in itertools.product(jobs[owner], identities(intruder)):
            path = operation.path.replace("{job_id}", job_id)
            answer = stack.request(operation.method, operation.function, path, headers=headers)
            ledger.add("requests sent")
            # A 404 that names nothing of the job: not its owner, not its name.
            if answer.status_code != 404 or owner in answer.text or "seeded" in answer.text:
                leaks.append(f"{intruder} {operation.method} {path}: {answer.status_code}")

    # Nobody named: every route refuses (401), whatever the job.
    for operation, job_id in itertools.product(JOB_ROUTES, itertools.chain(*jobs.values())):
        path = operation.path.replace("{job_id}", job_id)
        answer = stack.request(operation.method, operation.function, path)
        ledger.add("requests sent")
        if answer.status_code != 401:
            leaks.append(f"anonymous {operation.method} {path}: {answer.status_code}")
    for function, method, path in (("status", "GET", "/jobs"), ("submit", "POST", "/train")):
        answer = stack.request(method, function, path, json=train_request(ledger))
        ledger.add("requests sent")
        if answer.status_code != 401:
            leaks.append(f"anonymous {method} {path}: {answer.status_code}")

    # Listings: small pages, every status filter, and other callers' page tokens.
    tokens: dict[str, str] = {}
    for caller in CALLERS:
        seen = _list_all(stack, caller, ledger, tokens)
        if seen != set(jobs[caller]):
            leaks.append(f"{caller} listed {sorted(seen)}")
        for status in ("queued", "training", "completed"):
            listed = _list(stack, caller, ledger, {"status": status, "limit": 100})[0]
            if not listed <= set(jobs[caller]):
                leaks.append(f"{caller} listed {sorted(listed)} for status {status}")
    for caller, (owner, token) in itertools.product(CALLERS, tokens.items()):
        if owner != caller:
            listed = _list(stack, caller, ledger, {"limit": 100, "page_token": token})[0]
            if not listed <= set(jobs[caller]):
                leaks.append(f"{caller} listed {sorted(listed)} with {owner}'s page token")

    after = _snapshot(stack, jobs)
    submitted = [ids[0] for ids in jobs.values()]

    assert leaks == []
    assert after == before
    assert len(set(submitted)) == len(CALLERS)  # one key, three callers: three jobs


def _list(
    stack: Stack, caller: str, ledger: Ledger, query: dict[str, Any]
) -> tuple[set[str], str | None]:
    answer = stack.request("GET", "status", "/jobs", caller=caller, params=query)
    ledger.add("requests sent")
    if answer.status_code != 200:  # a foreign page token may be refused; never obeyed
        assert answer.status_code == 422, answer.text
        return set(), None
    body = answer.json()
    return {job["job_id"] for job in body["jobs"]}, body.get("next_page_token")


def _list_all(stack: Stack, caller: str, ledger: Ledger, tokens: dict[str, str]) -> set[str]:
    """Every job the caller can list, a page of one at a time; keeps a page token of its."""
    seen: set[str] = set()
    token = None
    while True:
        query = {"limit": 1, **({"page_token": token} if token else {})}
        page, token = _list(stack, caller, ledger, query)
        seen |= page
        if token is None:
            return seen
        tokens.setdefault(caller, token)


def _snapshot(stack: Stack, jobs: dict[str, list[str]]) -> dict[str, Any]:
    """Each job's record and the objects under its prefixes."""
    storage, layout = stack.services.storage, stack.settings.layout
    state: dict[str, Any] = {}
    for job_id in itertools.chain(*jobs.values()):
        gguf = layout.gguf_uri(job_id, "q8_0")
        state[job_id] = (
            stack.services.jobs.get(job_id),
            storage.exists(gguf),
            storage.exists(layout.config_uri(job_id)),
        )
    return state
