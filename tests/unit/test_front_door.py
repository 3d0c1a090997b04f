"""The local front door decides as Cloud Run's IAM check does, and forwards what Cloud Run does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tuning.identity import caller_identity
from tuning.local.emulators import free_port
from tuning.local.front_door import Admission, Listener, Refusal, admit, serve
from tuning.local.issuer import LocalIssuer

AUDIENCE = "http://127.0.0.1:9"


@pytest.fixture
def issuer(tmp_path: Path) -> LocalIssuer:
    return LocalIssuer.create(tmp_path / "issuer.pem")


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_no_token_is_403_as_cloud_run_answers(issuer: LocalIssuer) -> None:
    decision = admit({}, audience=AUDIENCE, issuer=issuer, invokers=None)

    assert isinstance(decision, Refusal)
    assert decision.status == 403


@pytest.mark.parametrize(
    "make",
    [
        lambda i: "not-a-jwt",
        lambda i: i.mint("a@b.c", audience="http://127.0.0.1:10"),  # another function's URL
        lambda i: i.mint("a@b.c", audience=AUDIENCE, now=0),  # expired in 1970
        lambda i: (
            i.mint("a@b.c", audience=AUDIENCE).rpartition(".")[0] + ".SIGNATURE_REMOVED_BY_GOOGLE"
        ),  # a forged "already checked" token
    ],
)
def test_an_invalid_token_is_401(issuer: LocalIssuer, make) -> None:  # type: ignore[no-untyped-def]
    headers = {"Authorization": bearer(make(issuer))}

    decision = admit(headers, audience=AUDIENCE, issuer=issuer, invokers=None)

    assert isinstance(decision, Refusal)
    assert decision.status == 401


def test_a_token_of_another_issuer_is_401(issuer: LocalIssuer, tmp_path: Path) -> None:
    other = LocalIssuer.create(tmp_path / "other.pem")
    headers = {"Authorization": bearer(other.mint("a@b.c", audience=AUDIENCE))}

    decision = admit(headers, audience=AUDIENCE, issuer=issuer, invokers=None)

    assert isinstance(decision, Refusal) and decision.status == 401


def test_a_caller_who_is_not_an_invoker_is_403(issuer: LocalIssuer) -> None:
    headers = {"Authorization": bearer(issuer.mint("eve@example.com", audience=AUDIENCE))}

    refused = admit(headers, audience=AUDIENCE, issuer=issuer, invokers=frozenset({"a@b.c"}))
    allowed = admit(
        headers, audience=AUDIENCE, issuer=issuer, invokers=frozenset({"eve@example.com"})
    )

    assert isinstance(refused, Refusal) and refused.status == 403
    assert isinstance(allowed, Admission) and allowed.caller == "eve@example.com"


def test_x_serverless_authorization_is_checked_first(issuer: LocalIssuer) -> None:
    """Present: it alone is checked, and Authorization (here garbage) is not looked at."""
    headers = {
        "X-Serverless-Authorization": bearer(issuer.mint("a@b.c", audience=AUDIENCE)),
        "Authorization": "Bearer the-applications-own-token",
    }
    invalid_first = {
        "X-Serverless-Authorization": "Bearer not-a-jwt",
        "Authorization": bearer(issuer.mint("a@b.c", audience=AUDIENCE)),
    }

    admitted = admit(headers, audience=AUDIENCE, issuer=issuer, invokers=None)
    refused = admit(invalid_first, audience=AUDIENCE, issuer=issuer, invokers=None)

    assert isinstance(admitted, Admission)
    assert admitted.header == "X-Serverless-Authorization"
    assert admitted.forwarded_value.endswith(".SIGNATURE_REMOVED_BY_GOOGLE")
    assert isinstance(refused, Refusal) and refused.status == 401


# Through a running front door ------------------------------------------------------


@pytest.fixture
def echo_upstream() -> Iterator[str]:
    """A stand-in function that answers with the headers and body it received."""

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        request = Request(environ)
        body = {
            "headers": dict(request.headers),
            "path": request.full_path,
            "raw": environ.get("RAW_URI"),
            "body": request.get_data(as_text=True),
            "caller": caller_identity(request.headers),
        }
        return Response(json.dumps(body), status=207, mimetype="application/json")(
            environ, start_response
        )

    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_the_checked_token_reaches_the_function_signature_removed(
    issuer: LocalIssuer, echo_upstream: str
) -> None:
    listener = Listener(free_port(), echo_upstream)
    servers = serve([listener], issuer=issuer, invokers=None)
    try:
        token = issuer.mint("alice@example.com", audience=listener.url)
        untouched = "Bearer applications-own-value"
        answer = requests.post(
            f"{listener.url}/jobs/x/cancel?limit=2",
            data="{}",
            headers={"X-Serverless-Authorization": bearer(token), "Authorization": untouched},
            timeout=10,
        )
        anonymous = requests.get(f"{listener.url}/jobs", timeout=10)
    finally:
        for server in servers:
            server.shutdown()

    seen = answer.json()
    assert answer.status_code == 207  # the function's own status comes back
    assert seen["caller"] == "alice@example.com"
    assert seen["headers"]["Authorization"] == untouched
    assert seen["headers"]["X-Serverless-Authorization"].endswith(".SIGNATURE_REMOVED_BY_GOOGLE")
    assert token.rpartition(".")[2] not in json.dumps(seen)  # the signature never passes
    assert seen["path"] == "/jobs/x/cancel?limit=2"
    assert seen["body"] == "{}"
    assert anonymous.status_code == 403


def test_the_path_reaches_the_function_as_the_client_encoded_it(
    issuer: LocalIssuer, echo_upstream: str
) -> None:
    # A job id holding an encoded slash must stay one segment, or another route answers.
    listener = Listener(free_port(), echo_upstream)
    servers = serve([listener], issuer=issuer, invokers=None)
    try:
        token = issuer.mint("alice@example.com", audience=listener.url)
        answer = requests.post(
            f"{listener.url}/jobs/a%2F..%2Fb%20c/cancel?q=%2F",
            headers={"Authorization": bearer(token)},
            timeout=10,
        )
    finally:
        for server in servers:
            server.shutdown()
    assert answer.json()["raw"] == "/jobs/a%2F..%2Fb%20c/cancel?q=%2F"
