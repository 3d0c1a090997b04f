"""tuning.identity: the caller comes only from a token Google's front end checked."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tuning.errors import UnauthenticatedError
from tuning.identity import (
    GoogleIdTokenVerifier,
    caller_identity,
    presented_token,
    unverified_claims,
)
from tuning.local.issuer import LocalIssuer

AUDIENCE = "https://submit-abc-uc.a.run.app"


def checked(claims: dict[str, Any]) -> str:
    """A token as Cloud Run hands it on after checking it: its signature removed."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.SIGNATURE_REMOVED_BY_GOOGLE"


@pytest.mark.parametrize(
    ("claims", "identity"),
    [
        ({"email": "alice@example.com", "sub": "1"}, "alice@example.com"),
        ({"sub": "1234567890"}, "1234567890"),
    ],
)
def test_the_caller_comes_from_the_checked_tokens_claims(
    claims: dict[str, Any], identity: str
) -> None:
    assert caller_identity({"Authorization": f"Bearer {checked(claims)}"}) == identity


@pytest.mark.parametrize(
    "claims", [{"email": "has space@example.com"}, {"aud": "x"}, {"email": 42}, {"sub": "x" * 400}]
)
def test_a_checked_token_naming_no_valid_caller_is_refused(claims: dict[str, Any]) -> None:
    with pytest.raises(UnauthenticatedError):
        caller_identity({"Authorization": f"Bearer {checked(claims)}"})


def test_no_token_names_nobody() -> None:
    assert caller_identity({}) is None
    assert presented_token({"X-Other": "Bearer x"}) is None


@pytest.mark.parametrize("value", ["", "Basic dXNlcjpwdw==", "Bearer", "Bearer  "])
@pytest.mark.parametrize("header", ["Authorization", "X-Serverless-Authorization"])
def test_a_header_that_is_not_a_bearer_token_is_refused(header: str, value: str) -> None:
    with pytest.raises(UnauthenticatedError, match=header):
        caller_identity({header: value})


def test_x_serverless_authorization_wins_over_authorization() -> None:
    """Cloud Run checks X-Serverless-Authorization and passes Authorization on untouched."""
    forged = checked({"email": "victim@example.com"})  # anyone can write this themselves
    headers = {
        "X-Serverless-Authorization": f"Bearer {checked({'email': 'mallory@example.com'})}",
        "Authorization": f"Bearer {forged}",
    }

    assert caller_identity(headers) == "mallory@example.com"


def test_only_x_serverless_authorization_is_enough() -> None:
    headers = {"X-Serverless-Authorization": f"Bearer {checked({'email': 'a@b.c'})}"}

    assert caller_identity(headers) == "a@b.c"


def test_a_token_that_still_carries_a_signature_is_refused_without_a_verifier(
    tmp_path: Path,
) -> None:
    signed = LocalIssuer.create(tmp_path / "key.pem").mint("alice@example.com", audience=AUDIENCE)

    with pytest.raises(UnauthenticatedError, match="not checked by Cloud Run"):
        caller_identity({"Authorization": f"Bearer {signed}"})
    with pytest.raises(UnauthenticatedError):
        caller_identity({"Authorization": "Bearer not-a-jwt"})


def test_unverified_claims_reads_the_payload_only() -> None:
    assert unverified_claims(checked({"email": "a@b.c"})) == {"email": "a@b.c"}
    assert unverified_claims("not a token") == {}
    assert unverified_claims("a.W10.c") == {}  # a JSON list, not claims


# A token Cloud Run did not check, verified against Google's certificates -----------


class CertsRequest:
    """google-auth's transport, answering the certificates URL with our own key."""

    def __init__(self, certs: dict[str, str]) -> None:
        self.certs = certs
        self.urls: list[str] = []

    def __call__(self, url: str, method: str = "GET", **kwargs: Any) -> Any:
        self.urls.append(url)
        body = json.dumps(self.certs).encode()
        return type("Answer", (), {"status": 200, "data": body, "headers": {}})()


@pytest.fixture
def google_like(tmp_path: Path) -> tuple[LocalIssuer, CertsRequest]:
    issuer = LocalIssuer.create(tmp_path / "google.pem")
    return issuer, CertsRequest({"local-1": issuer.public_key_pem().decode()})


def test_a_google_signed_token_for_our_audience_is_verified(
    google_like: tuple[LocalIssuer, CertsRequest],
) -> None:
    issuer, request = google_like
    verifier = GoogleIdTokenVerifier([AUDIENCE], request=request, certs_url="https://certs")
    token = issuer.mint("alice@example.com", audience=AUDIENCE, iss="https://accounts.google.com")

    assert caller_identity({"Authorization": f"Bearer {token}"}, verifier=verifier) == (
        "alice@example.com"
    )
    assert request.urls == ["https://certs"]


@pytest.mark.parametrize(
    ("audience", "issuer_claim", "age"),
    [
        ("https://other-function.a.run.app", "https://accounts.google.com", 0),  # not for us
        (AUDIENCE, "https://evil.example.com", 0),  # not Google's
        (AUDIENCE, "https://accounts.google.com", 7200),  # expired an hour ago
    ],
)
def test_a_token_for_another_audience_issuer_or_time_is_refused(
    google_like: tuple[LocalIssuer, CertsRequest], audience: str, issuer_claim: str, age: int
) -> None:
    issuer, request = google_like
    verifier = GoogleIdTokenVerifier([AUDIENCE], request=request, certs_url="https://certs")
    token = issuer.mint(
        "alice@example.com", audience=audience, iss=issuer_claim, now=time.time() - age
    )

    with pytest.raises(UnauthenticatedError):
        caller_identity({"Authorization": f"Bearer {token}"}, verifier=verifier)


def test_a_token_signed_by_another_key_is_refused(
    google_like: tuple[LocalIssuer, CertsRequest], tmp_path: Path
) -> None:
    _, request = google_like
    verifier = GoogleIdTokenVerifier([AUDIENCE], request=request, certs_url="https://certs")
    other = LocalIssuer.create(tmp_path / "other.pem")
    token = other.mint("alice@example.com", audience=AUDIENCE, iss="https://accounts.google.com")

    with pytest.raises(UnauthenticatedError):
        caller_identity({"Authorization": f"Bearer {token}"}, verifier=verifier)


def test_with_a_verifier_a_signature_removed_token_is_refused(
    google_like: tuple[LocalIssuer, CertsRequest],
) -> None:
    """Verifying itself means no Google front end removed signatures: anyone typed that one."""
    _, request = google_like
    verifier = GoogleIdTokenVerifier([AUDIENCE], request=request, certs_url="https://certs")
    forged = checked({"email": "alice@example.com", "aud": AUDIENCE})

    with pytest.raises(UnauthenticatedError):
        caller_identity({"Authorization": f"Bearer {forged}"}, verifier=verifier)
    # There X-Serverless-Authorization is a front's own header: it names nobody.
    assert (
        caller_identity({"X-Serverless-Authorization": f"Bearer {forged}"}, verifier=verifier)
        is None
    )


def test_with_a_verifier_the_caller_is_in_authorization_beside_a_proxys_token(
    google_like: tuple[LocalIssuer, CertsRequest],
) -> None:
    """A proxy (cloud-run-proxy, IAP) sends its own token in X-Serverless-Authorization."""
    issuer, request = google_like
    verifier = GoogleIdTokenVerifier([AUDIENCE], request=request, certs_url="https://certs")
    google = "https://accounts.google.com"
    proxy = issuer.mint("proxy@p.iam.gserviceaccount.com", audience=AUDIENCE, iss=google)
    alice = issuer.mint("alice@example.com", audience=AUDIENCE, iss=google)
    bob = issuer.mint("bob@example.com", audience=AUDIENCE, iss=google)

    callers = [
        caller_identity(
            {"X-Serverless-Authorization": f"Bearer {proxy}", "Authorization": f"Bearer {user}"},
            verifier=verifier,
        )
        for user in (alice, bob)
    ]

    assert callers == ["alice@example.com", "bob@example.com"]
    assert request.urls == ["https://certs"]  # the certificates are fetched once, then reused


def test_iaps_service_agent_is_never_a_caller() -> None:
    """Behind IAP every user's request would reach us as IAP's agent: one owner for all."""
    agent = checked({"email": "service-123@gcp-sa-iap.iam.gserviceaccount.com"})

    with pytest.raises(UnauthenticatedError, match="service agent"):
        caller_identity({"X-Serverless-Authorization": f"Bearer {agent}"})


def test_an_unverified_email_names_nobody() -> None:
    token = checked({"email": "alice@example.com", "email_verified": False, "sub": "9"})

    with pytest.raises(UnauthenticatedError, match="unverified email"):
        caller_identity({"Authorization": f"Bearer {token}"})
