"""Who calls an HTTP function: read only from a token Google's front end checked.

What Cloud Run (and so a Cloud Functions gen2 function) does with the two headers that
can carry an ID token, before a request reaches the container:

- `X-Serverless-Authorization: Bearer <token>`: when a request carries it, Cloud Run
  checks this header (signature, expiry, audience, the invoker role) and passes
  `Authorization` on untouched, so that an application can keep its own use of it
  ("Authenticating service-to-service", https://cloud.google.com/run/docs/authenticating/service-to-service,
  and GoogleCloudPlatform/cloud-run-proxy#25: "If X-Serverless-Authorization and
  Authorization are both present, Cloud Run will use X-Serverless-Authorization").
- `Authorization: Bearer <token>`: checked when `X-Serverless-Authorization` is absent.
- The checked token reaches the container with its signature replaced by
  `SIGNATURE_REMOVED_BY_GOOGLE`; a token that still carries a signature was not checked
  (it is the untouched `Authorization` beside an `X-Serverless-Authorization`, or the
  service allows unauthenticated calls).

So the caller is read from `X-Serverless-Authorization` when present, else from
`Authorization`. Claims of a token whose signature Google removed are taken as they are
(only Cloud Run's front end can have let that request through, since the container is
not reachable otherwise). A token that still carries a signature is refused. A
deployment that disables Cloud Run's invoker check and fronts the functions some other
way sets `ID_TOKEN_AUDIENCES`: then every token is verified here against Google's
certificates and those audiences, and a "signature removed" token is refused (nobody
removed it), while deciding who may call at all is that front's job. Locally,
`tuning.local.front_door` plays Cloud Run's part.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from tuning.errors import TransientError, UnauthenticatedError
from tuning.ids import is_identity

if TYPE_CHECKING:
    from werkzeug.datastructures import Headers

HeaderSource: TypeAlias = "Mapping[str, str] | Headers"

SERVERLESS_AUTHORIZATION = "X-Serverless-Authorization"
AUTHORIZATION = "Authorization"
# What Cloud Run writes in place of the signature of a token it checked.
SIGNATURE_REMOVED = "SIGNATURE_REMOVED_BY_GOOGLE"
# Google's ID-token signing certificates (PEM), as google.oauth2.id_token uses them.
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
TOKEN_HEADERS = (SERVERLESS_AUTHORIZATION, AUTHORIZATION)  # the order Cloud Run checks them
# Service agents that call Cloud Run on behalf of many users ("Enabling IAP for Cloud Run":
# IAP invokes the service as service-PROJECT_NUMBER@gcp-sa-iap.iam.gserviceaccount.com).
FRONT_AGENT_DOMAINS = ("@gcp-sa-iap.iam.gserviceaccount.com",)
# How long Google's signing certificates are reused (they rotate over days; Google's
# certificate responses carry a Cache-Control max-age of hours).
CERTS_CACHE_SECONDS = 300.0


@dataclass(frozen=True)
class PresentedToken:
    """The bearer token the front end looked at, and the header it came in."""

    header: str
    token: str

    @property
    def checked_by_front_end(self) -> bool:
        return self.token.rpartition(".")[2] == SIGNATURE_REMOVED


class TokenVerifier(Protocol):
    def verify(self, token: str) -> Mapping[str, Any]:
        """The claims of a valid token; UnauthenticatedError otherwise."""
        ...


def presented_token(headers: HeaderSource) -> PresentedToken | None:
    """The token Cloud Run checks: X-Serverless-Authorization when present, else Authorization."""
    for header in TOKEN_HEADERS:
        value = headers.get(header)
        if value is None:
            continue
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError(f"{header} must be 'Bearer <Google ID token>'")
        return PresentedToken(header, token.strip())
    return None


def caller_identity(headers: HeaderSource, *, verifier: TokenVerifier | None = None) -> str | None:
    """The caller's email (or subject); None when the request carries no token at all."""
    if verifier is not None:
        # No Cloud Run IAM check here: X-Serverless-Authorization, if any, is a front's own
        # token (IAP and proxies put theirs there), so the caller's is in Authorization.
        presented = (
            presented_token({AUTHORIZATION: headers[AUTHORIZATION]})
            if headers.get(AUTHORIZATION) is not None
            else None
        )
    else:
        presented = presented_token(headers)
    if presented is None:
        return None
    if verifier is not None:
        # A deployment that verifies tokens itself has no Google front end removing
        # signatures: a "signature removed" token there is one anybody could have typed.
        claims: Mapping[str, Any] = verifier.verify(presented.token)
    elif presented.checked_by_front_end:
        claims = unverified_claims(presented.token)
    else:
        raise UnauthenticatedError(
            f"the token in {presented.header} was not checked by Cloud Run's IAM and this "
            "deployment verifies no tokens itself: call the function's URL with an ID token "
            "for it (Authorization or X-Serverless-Authorization)"
        )
    if claims.get("email") and claims.get("email_verified") is False:
        raise UnauthenticatedError(f"the token in {presented.header} has an unverified email")
    identity = claims.get("email") or claims.get("sub")
    if not is_identity(identity):
        raise UnauthenticatedError(f"the token in {presented.header} names no caller")
    if str(identity).endswith(FRONT_AGENT_DOMAINS):
        # IAP calls Cloud Run as its service agent: every user would become this one owner.
        raise UnauthenticatedError(
            f"the token in {presented.header} names {identity}, a front's service agent, not a "
            "caller: a function behind IAP must read IAP's own assertion, which this one does not"
        )
    return str(identity)


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT whose signature the front end checked and removed; {} if malformed."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, binascii.Error, RecursionError):
        return {}
    return claims if isinstance(claims, dict) else {}


class GoogleIdTokenVerifier:
    """Checks a Google-signed ID token itself: signature, expiry, issuer and audience."""

    def __init__(
        self,
        audiences: Sequence[str],
        *,
        request: Any = None,
        certs_url: str = GOOGLE_CERTS_URL,
    ) -> None:
        if not audiences:
            raise ValueError("a verifier needs at least one audience")
        self.audiences = list(audiences)
        self.certs_url = certs_url
        self._request = request
        self._cached: tuple[float, dict[str, str]] | None = None
        self._lock = threading.Lock()

    def _certs(self) -> dict[str, str]:
        """Google's certificates, fetched at most every CERTS_CACHE_SECONDS."""
        import google.auth.exceptions
        import google.auth.transport.requests

        with self._lock:
            if (
                self._cached is not None
                and time.monotonic() - self._cached[0] < CERTS_CACHE_SECONDS
            ):
                return self._cached[1]
            request = self._request or google.auth.transport.requests.Request()
            answer = request(self.certs_url, method="GET")
            if answer.status != 200:
                raise google.auth.exceptions.TransportError(
                    f"{self.certs_url} answered {answer.status}"
                )
            certs = json.loads(answer.data.decode("utf-8"))
            self._cached = (time.monotonic(), certs)
            return dict(certs)

    def verify(self, token: str) -> Mapping[str, Any]:
        import google.auth.exceptions
        import google.auth.jwt

        try:
            claims = google.auth.jwt.decode(token, certs=self._certs(), audience=self.audiences)
        except google.auth.exceptions.TransportError as error:
            raise TransientError(f"cannot fetch Google's certificates: {error}") from None
        except (ValueError, google.auth.exceptions.GoogleAuthError) as error:
            # The reason (expired, wrong audience, bad signature) helps the caller; it holds
            # no secret, only what the caller sent.
            raise UnauthenticatedError(f"the ID token is not valid here: {error}") from None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise UnauthenticatedError("the ID token was not issued by Google")
        return claims
