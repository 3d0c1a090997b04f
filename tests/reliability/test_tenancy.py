"""Tenancy: two callers through the front door, and no way from one's jobs to the other's.

Alice and Bob each own a queued job (submitted through the real submit function, with
a stored Hub token), a training one and a completed one with a GGUF file. Everything a
caller can send is tried across owners, on every channel:

- HTTP, through the local front door (Cloud Run's IAM check): every route that takes a
  job id (from the route table, so a new route is covered without editing this), with
  the intruder's own token in `Authorization`, in `X-Serverless-Authorization`, and the
  two-header forgery (their real token in `X-Serverless-Authorization`, a hand-made one
  naming the owner in `Authorization`): 404 saying nothing of the job. A forged token
  alone, or a token for another function: 401; no token: 403; a token nobody checked
  reaching the function itself: 401. Listings, filters and foreign page tokens.
- What a request names: a base model in the other owner's outputs, a secret reference
  to the other owner's per-job secret or to a secret shared with the other owner only:
  422 naming the field, on `POST /train` and as published requests (acknowledged and
  rejected, no job), plus a published reference naming the other owner's job.

Every attempt counts in the ledger (`cross-tenant attempts`, and `cross-tenant
succeeded` for each that was not refused as documented). Afterwards every record, object
and secret is exactly as before. The owner, calling with `X-Serverless-Authorization`
alone, is served.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from typing import Any

from bench.stack import Stack
from tests.reliability.conftest import Ledger
from tests.reliability.support import seed_job, train_request, wait_for
from tuning.api.routes import OPERATIONS

ALICE, BOB = "alice@example.com", "bob@example.com"
CALLERS = (ALICE, BOB)
JOB_ROUTES = [operation for operation in OPERATIONS if "{job_id}" in operation.path]


def hand_made_token(caller: str) -> str:
    """What anyone can write: a token claiming `caller`, 'checked' by nobody."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    claims = {"email": caller, "sub": caller, "aud": "x", "iss": "https://accounts.google.com"}
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.SIGNATURE_REMOVED_BY_GOOGLE"


class Attempts:
    """Cross-tenant attempts and their outcomes, for the ledger and the assertion."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.leaks: list[str] = []

    def expect(
        self, what: str, status: int, expected: int, text: str = "", owner: str = ""
    ) -> None:
        self.ledger.add("cross-tenant attempts")
        self.ledger.add("requests sent")
        if status != expected or (owner and owner in text) or "seeded" in text:
            self.ledger.add("cross-tenant succeeded")
            self.leaks.append(f"{what}: {status} (expected {expected}) {text[:200]}")


def test_no_caller_reaches_another_callers_jobs_on_any_route_or_channel(
    start_stack: Any, ledger: Ledger
) -> None:
    stack: Stack = start_stack(
        functions=("submit", "status", "delete", "dispatch", "on_job_event"), OWNER_SCOPING="true"
    )
    attempts = Attempts(ledger)
    jobs = {caller: _jobs_of(stack, caller, ledger) for caller in CALLERS}
    shared_with_alice = stack.services.secrets.create_user_secret(
        f"team-alice-{stack.unique}", ledger.token("hf_"), owners=[ALICE]
    )
    # Dispatch takes each submitted job (its own publish) before anything is compared.
    submitted = [ids[0] for ids in jobs.values()]
    wait_for(
        lambda: all(stack.services.jobs.get(job_id).execution for job_id in submitted),
        timeout=120,
        what="the submitted jobs to be dispatched",
    )
    # A job of Alice's that dispatch would launch if a reference to it were obeyed.
    alices_waiting = seed_job(stack, f"alice-waiting-{stack.unique}", owner=ALICE, status="queued")
    jobs[ALICE].append(alices_waiting.job_id)
    before = _snapshot(stack)

    # Every route with a job id, the other caller, every way of presenting a token.
    for operation, (owner, intruder) in itertools.product(
        JOB_ROUTES, itertools.permutations(CALLERS, 2)
    ):
        for job_id in jobs[owner]:
            path = operation.path.replace("{job_id}", job_id)
            own = stack.token(intruder, operation.function)
            for label, headers, expected in (
                ("Authorization", {"Authorization": f"Bearer {own}"}, 404),
                (
                    "X-Serverless-Authorization",
                    {"X-Serverless-Authorization": f"Bearer {own}"},
                    404,
                ),
                (
                    "two-header forgery",
                    {
                        "X-Serverless-Authorization": f"Bearer {own}",
                        "Authorization": f"Bearer {hand_made_token(owner)}",
                    },
                    404,
                ),
                ("hand-made token", {"Authorization": f"Bearer {hand_made_token(owner)}"}, 401),
                (
                    "another function's token",
                    {"Authorization": f"Bearer {stack.token(owner, 'submit')}"}
                    if operation.function != "submit"
                    else {"Authorization": f"Bearer {stack.token(owner, 'status')}"},
                    401,
                ),
                ("no token", {}, 403),
            ):
                answer = stack.request(operation.method, operation.function, path, headers=headers)
                attempts.expect(
                    f"{intruder} {label} {operation.method} {path}",
                    answer.status_code,
                    expected,
                    answer.text,
                    owner,
                )
            # Past the front door (only Cloud Run can get there), a token nobody checked.
            signed = stack.token(owner, operation.function)
            direct = stack.session.request(
                operation.method,
                stack.direct_url(operation.function, path),
                headers={"Authorization": f"Bearer {signed}"},
                timeout=60,
            )
            attempts.expect(f"unchecked token {path}", direct.status_code, 401, direct.text, owner)

    # Listings: small pages, every status filter, and the other caller's page tokens.
    tokens: dict[str, str] = {}
    for caller in CALLERS:
        seen = _list_all(stack, caller, ledger, tokens)
        if seen != set(jobs[caller]):
            attempts.leaks.append(f"{caller} listed {sorted(seen)}")
        for status in ("queued", "training", "completed"):
            listed = _list(stack, caller, ledger, {"status": status, "limit": 100})[0]
            if not listed <= set(jobs[caller]):
                attempts.leaks.append(f"{caller} listed {sorted(listed)} for status {status}")
    for caller, (owner, token) in itertools.product(CALLERS, tokens.items()):
        if owner != caller:
            ledger.add("cross-tenant attempts")
            listed = _list(stack, caller, ledger, {"limit": 100, "page_token": token})[0]
            if not listed <= set(jobs[caller]):
                ledger.add("cross-tenant succeeded")
                attempts.leaks.append(f"{caller} listed {sorted(listed)} with {owner}'s token")

    # What a request names: Bob names Alice's outputs and secrets, by HTTP and by Pub/Sub.
    alices_done = jobs[ALICE][2]
    alices_queued = jobs[ALICE][0]
    alices_secret = stack.services.jobs.get(alices_queued).secret_references["hf_token"]
    layout = stack.settings.layout
    naming = {
        "training_config.base_model_id": [
            {"training_config": {"base_model_id": layout.merged_prefix(alices_done)}},
            {"training_config": {"base_model_id": layout.adapter_prefix(alices_done)}},
            {"training_config": {"base_model_id": layout.checkpoint_prefix(alices_done, 1)}},
        ],
        "hf_token_secret": [
            {"hf_token": None, "hf_token_secret": alices_secret},
            {"hf_token": None, "hf_token_secret": shared_with_alice},
        ],
        "training_config.wandb_config.api_key_secret": [
            {
                "training_config": {
                    "wandb_config": {"api_key": None, "api_key_secret": alices_secret}
                }
            },
        ],
    }
    published: list[str] = []
    for field, changes in naming.items():
        for change in changes:
            body = _merged(train_request(ledger), change)
            answer = stack.request("POST", "submit", "/train", json=body, caller=BOB)
            error = answer.json().get("error", {}) if answer.status_code == 422 else {}
            attempts.expect(f"submit naming {change}", answer.status_code, 422, answer.text)
            if error.get("field") != field:
                attempts.leaks.append(f"submit naming {change}: field {error.get('field')}")
            published.append(
                stack.publisher.publish(
                    stack.settings.requests_topic, _by_reference(body), owner=BOB
                )
            )
    # Continuing Alice's job, from its final model or a checkpoint: as if it did not exist.
    for parent in (alices_done, f"{alices_done}:1"):
        body = _merged(train_request(ledger), {"training_config": {"from_job": parent}})
        answer = stack.request("POST", "submit", "/train", json=body, caller=BOB)
        attempts.expect(f"submit from_job {parent}", answer.status_code, 404, answer.text)
        if (
            answer.status_code == 404
            and answer.json()["error"]["field"] != "training_config.from_job"
        ):
            attempts.leaks.append(f"submit from_job {parent}: {answer.text}")
        published.append(
            stack.publisher.publish(stack.settings.requests_topic, _by_reference(body), owner=BOB)
        )
    # A published reference to Alice's waiting job, by a publisher acting for Bob.
    reference = {"kind": "job_reference", "job_id": alices_waiting.job_id}
    published.append(stack.publisher.publish(stack.settings.requests_topic, reference, owner=BOB))
    wait_for(
        lambda: {entry["message_id"] for entry in stack.deliveries("dispatch")} >= set(published),
        timeout=120,
        what="dispatch to settle every published attempt",
    )
    for message_id in published:
        ledger.add("cross-tenant attempts")
        delivered = [e for e in stack.deliveries("dispatch") if e["message_id"] == message_id]
        if any(entry["outcome"] != "ok" for entry in delivered):
            # A message that can never succeed is acknowledged; redelivery would be a loop.
            attempts.leaks.append(f"published {message_id} not acknowledged: {delivered}")

    # The owner, with X-Serverless-Authorization alone, is served as the owner.
    own = stack.token(ALICE, "status")
    served = stack.request(
        "GET",
        "status",
        f"/jobs/{alices_done}",
        headers={"X-Serverless-Authorization": f"Bearer {own}"},
    )

    after = _snapshot(stack)
    # The control: what was refused to Bob is Alice's to use.
    body = _merged(train_request(ledger), {"hf_token": None, "hf_token_secret": shared_with_alice})
    alices_use = stack.request("POST", "submit", "/train", json=body, caller=ALICE)

    assert attempts.leaks == [], "\n".join(attempts.leaks)
    changed = {
        job_id
        for job_id in before["records"].keys() | after["records"].keys()
        if before["records"].get(job_id) != after["records"].get(job_id)
    }
    assert changed == set()  # no record of anyone changed
    assert after == before  # nor any object or secret
    assert served.status_code == 200 and served.json()["job_id"] == alices_done
    assert alices_use.status_code == 202, alices_use.text


def _jobs_of(stack: Stack, caller: str, ledger: Ledger) -> list[str]:
    """A queued job (through submit, storing a Hub token), a training and a completed one."""
    body = train_request(ledger)
    key = {"Idempotency-Key": "one-key-for-all"}
    answer = stack.request("POST", "submit", "/train", json=body, caller=caller, headers=key)
    assert answer.status_code == 202, answer.text
    ids = [answer.json()["job_id"]]
    for status in ("training", "completed"):
        job_id = f"{caller.split('@')[0]}-{status}-{stack.unique}"
        ids.append(seed_job(stack, job_id, owner=caller, status=status).job_id)
    ledger.add("requests sent")
    ledger.add("jobs created", len(ids))
    return ids


def _by_reference(body: dict[str, Any]) -> dict[str, Any]:
    """The request as a publisher may send it: without secret values, which dispatch refuses
    on the bus (a failed job of their own, not the refusal for what the request names)."""
    published = _merged(body, {"hf_token": None})
    if "api_key" in (published["training_config"].get("wandb_config") or {}):
        published = _merged(published, {"training_config": {"wandb_config": None}})
    return published


def _merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in change.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _list(
    stack: Stack, caller: str, ledger: Ledger, query: dict[str, Any]
) -> tuple[set[str], str | None]:
    answer = stack.request("GET", "status", "/jobs", caller=caller, params=query)
    ledger.add("requests sent")
    if answer.status_code != 200:  # a foreign page token may be refused; never obeyed
        assert answer.status_code in (400, 422), answer.text
        return set(), None
    body = answer.json()
    return {job["job_id"] for job in body["jobs"]}, body.get("next_page_token")


def _list_all(stack: Stack, caller: str, ledger: Ledger, tokens: dict[str, str]) -> set[str]:
    """Every job the caller can list, a page of one at a time; keeps a page token of theirs."""
    seen: set[str] = set()
    token = None
    while True:
        query = {"limit": 1, **({"page_token": token} if token else {})}
        page, token = _list(stack, caller, ledger, query)
        seen |= page
        if token is None:
            return seen
        tokens.setdefault(caller, token)


def _snapshot(stack: Stack) -> dict[str, Any]:
    """Every job record, every object (name and content hash) and the secret store's file."""
    storage, settings = stack.services.storage, stack.settings
    objects = {}
    for bucket in (settings.config_bucket, settings.data_bucket, settings.models_bucket):
        for uri in storage.list(f"gs://{bucket}/"):
            objects[uri] = hashlib.sha256(storage.download_bytes(uri)).hexdigest()
    records = {}
    page_token = None
    while True:
        page = stack.services.jobs.list_jobs(limit=100, page_token=page_token)
        records.update((job.job_id, job.model_dump(exclude={"updated_at"})) for job in page.jobs)
        page_token = page.next_page_token
        if page_token is None:
            break
    secrets_file = stack.workdir / "secrets.json"
    secrets = secrets_file.read_text() if secrets_file.is_file() else ""
    return {"records": records, "objects": objects, "secrets": secrets}
