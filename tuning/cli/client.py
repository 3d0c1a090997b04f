"""An HTTP client for the three API functions, local or deployed.

Endpoints come from the environment (`TUNING_SUBMIT_URL`, `TUNING_STATUS_URL`,
`TUNING_DELETE_URL`, as `.local/stack.env` exports them) or from a YAML config
file. The functions are private: every request carries an ID token for the
function's URL. For deployed functions it is a Google ID token (service-account
credentials, else `gcloud auth print-identity-token`); for the local stack the
local issuer (`TUNING_LOCAL_ISSUER_KEY`, exported by `.local/stack.env`) mints one
for the caller named by `--as EMAIL`, `TUNING_CALLER` or `caller:` in the config
file (default: `$USER@localhost`), which the local front door checks as Cloud
Run's IAM does.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import urllib3

DEFAULT_CONFIG = Path("~/.config/gemma-tuning/config.yaml")
TIMEOUT_SECONDS = 30


@dataclass
class RetryPolicy:
    """How a repeatable request is sent again after a transient connection error.

    A server that drops a connection (a restart, an idle keep-alive closed as the next request
    arrives, a machine too busy to accept in time) is answered by trying again after 0.5, 1,
    2 and 4 s (with jitter), about 8 s in all; a request that got an HTTP answer is never
    repeated, nor one whose connection was refused or whose answer timed out.
    """

    tries: int = 5
    first_delay: float = 0.5
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def again(self, attempt: int, error: requests.RequestException) -> bool:
        """Whether to send again after `error` on try `attempt` (0-based); sleeps first."""
        if not transient(error) or attempt + 1 >= self.tries:
            return False
        self.sleep(self.first_delay * 2**attempt * random.uniform(0.8, 1.2))
        return True


def transient(error: requests.RequestException) -> bool:
    """A connection dropped or not accepted in time; not a refusal (nothing listens: the stack
    is down, said at once) and not a read timeout (the request may be running still)."""
    if not isinstance(error, requests.ConnectionError):
        return False
    reason = getattr(error.args[0] if error.args else None, "reason", None)
    return not isinstance(reason, urllib3.exceptions.NewConnectionError)


class ClientError(Exception):
    """A request the CLI could not complete; the message is for a person."""

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body

    def as_dict(self) -> dict[str, Any]:
        """The error for `--json`: the message, and the API's status, code and field if any."""
        api = self.body.get("error") if isinstance(self.body, dict) else None
        api = api if isinstance(api, dict) else {}
        found = {"status": self.status, "code": api.get("code"), "field": api.get("field")}
        extra = {"details": api["details"]} if api.get("details") else {}
        return {"message": str(self), **{k: v for k, v in found.items() if v is not None}, **extra}


ENDPOINT_NAMES = ("submit", "status", "delete")


@dataclass(frozen=True)
class Endpoints:
    """The API's URLs; a command needs only those it calls (`tuning list`: status alone)."""

    urls: Mapping[str, str]  # name ("submit", "status", "delete") -> URL, those configured
    caller: str | None = None  # whom the local issuer's tokens name
    local_issuer_key: Path | None = None  # the local stack's issuer; None: Google ID tokens

    def url(self, name: str) -> str:
        if not self.urls.get(name):
            raise ClientError(
                f"no {name} endpoint: set TUNING_{name.upper()}_URL (e.g. `source "
                f".local/stack.env` after `make up`) or {name}_url in {DEFAULT_CONFIG}"
            )
        return self.urls[name]

    @property
    def submit_url(self) -> str:
        return self.url("submit")

    @property
    def status_url(self) -> str:
        return self.url("status")

    @property
    def delete_url(self) -> str:
        return self.url("delete")

    @classmethod
    def from_environment(
        cls, config_path: Path | None = None, *, caller: str | None = None
    ) -> Endpoints:
        values = _config_file(config_path)
        urls = {}
        for name in ENDPOINT_NAMES:
            url = os.environ.get(f"TUNING_{name.upper()}_URL") or values.get(f"{name}_url")
            if url:
                urls[name] = str(url).rstrip("/")
        local = bool(urls) and all(_is_loopback(url) for url in urls.values())
        issuer_key = os.environ.get("TUNING_LOCAL_ISSUER_KEY") or values.get("issuer_key")
        if local and not issuer_key:
            raise ClientError(
                "the local stack's endpoints need its issuer to mint tokens: set "
                "TUNING_LOCAL_ISSUER_KEY (`source .local/stack.env` after `make up`)"
            )
        if not local:
            return cls(urls)
        caller = caller or os.environ.get("TUNING_CALLER") or values.get("caller")
        return cls(
            urls,
            caller=caller or f"{os.environ.get('USER') or 'local-user'}@localhost",
            local_issuer_key=Path(str(issuer_key)).expanduser(),
        )


def _config_file(path: Path | None) -> dict[str, Any]:
    chosen = (path or Path(os.environ.get("TUNING_CONFIG", DEFAULT_CONFIG))).expanduser()
    if not chosen.is_file():
        return {}
    import yaml

    data = yaml.safe_load(chosen.read_text()) or {}
    if not isinstance(data, dict):
        raise ClientError(f"{chosen} must hold a mapping (submit_url: ..., status_url: ...)")
    return data


def _is_loopback(url: str) -> bool:
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    return host in {"127.0.0.1", "localhost", "[::1]"}


def id_token_for(audience: str) -> str:
    """A Google ID token for `audience`: service-account credentials, else the gcloud user."""
    import google.auth.exceptions
    import google.auth.transport.requests
    import google.oauth2.id_token

    try:
        token = google.oauth2.id_token.fetch_id_token(
            google.auth.transport.requests.Request(), audience
        )
        return str(token)
    except google.auth.exceptions.DefaultCredentialsError:
        pass  # user credentials cannot mint ID tokens for an audience; ask gcloud
    try:
        result = subprocess.run(
            ["gcloud", "auth", "print-identity-token"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as error:
        raise ClientError(
            "cannot get an ID token: run `gcloud auth login` or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service account key"
        ) from error
    return result.stdout.strip()


class ApiClient:
    """One method per API route; errors become `ClientError` with the API's message."""

    def __init__(
        self,
        endpoints: Endpoints,
        session: requests.Session | None = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.session = session or requests.Session()
        self.retry = retry or RetryPolicy()
        self._issuer: Any = None  # the local issuer, loaded at the first request

    def _request(self, method: str, base: str, path: str, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", None) or {})
        url = f"{base}{path}"
        # Only a request that cannot do anything twice is sent again: a GET, or a POST that
        # carries its idempotency key (the API answers a repeat with the same job).
        repeatable = method == "GET" or "Idempotency-Key" in headers
        for attempt in itertools.count():
            headers["Authorization"] = f"Bearer {self._id_token(base)}"
            try:
                response = self.session.request(
                    method, url, headers=headers, timeout=TIMEOUT_SECONDS, **kwargs
                )
            except requests.RequestException as error:
                if repeatable and self.retry.again(attempt, error):
                    continue
                raise ClientError(
                    f"cannot reach {url}: {error.__class__.__name__}"
                    + (f" (after {attempt + 1} tries)" if repeatable and attempt else "")
                ) from error
            return _decode(response)
        raise AssertionError("unreachable")

    def _id_token(self, audience: str) -> str:
        if self.endpoints.local_issuer_key is None:
            return id_token_for(audience)
        from tuning.local.issuer import LocalIssuer

        if self._issuer is None:
            try:
                self._issuer = LocalIssuer(self.endpoints.local_issuer_key)
            except OSError as error:
                raise ClientError(
                    f"cannot read the local issuer's key {self.endpoints.local_issuer_key}: "
                    f"{error.strerror}; is the local stack up (`make up`)?"
                ) from None
        return self._issuer.mint(self.endpoints.caller or "local-user", audience=audience)

    def submit(self, request: dict[str, Any], idempotency_key: str | None = None) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._request(
            "POST", self.endpoints.submit_url, "/train", json=request, headers=headers
        )

    def estimate(self, request: dict[str, Any]) -> Any:
        """POST /train:estimate: the request validated and priced, nothing created."""
        return self._request("POST", self.endpoints.submit_url, "/train:estimate", json=request)

    def list_jobs(
        self, status: str | None = None, limit: int = 20, page_token: str | None = None
    ) -> Any:
        params = {"limit": limit, "status": status, "page_token": page_token}
        return self._request("GET", self.endpoints.status_url, "/jobs", params=_present(params))

    def get_job(self, job_id: str) -> Any:
        return self._request("GET", self.endpoints.status_url, f"/jobs/{job_id}")

    def events(self, job_id: str, limit: int = 100, page_token: str | None = None) -> Any:
        params = _present({"limit": limit, "page_token": page_token})
        return self._request(
            "GET", self.endpoints.status_url, f"/jobs/{job_id}/events", params=params
        )

    def all_events(self, job_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        token = None
        while True:
            page = self.events(job_id, limit=500, page_token=token)
            events.extend(page["events"])
            token = page.get("next_page_token")
            if not token:
                return events

    def checkpoints(self, job_id: str, limit: int = 20, page_token: str | None = None) -> Any:
        params = _present({"limit": limit, "page_token": page_token})
        return self._request(
            "GET", self.endpoints.status_url, f"/jobs/{job_id}/checkpoints", params=params
        )

    def samples(self, job_id: str) -> Any:
        return self._request("GET", self.endpoints.status_url, f"/jobs/{job_id}/samples")

    def download_link(
        self,
        job_id: str,
        artifact: str | None = None,
        *,
        checkpoint: int | None = None,
        quantization: str | None = None,
    ) -> Any:
        params = _present(
            {"artifact": artifact, "checkpoint": checkpoint, "quantization": quantization}
        )
        return self._request(
            "GET", self.endpoints.status_url, f"/jobs/download/{job_id}", params=params
        )

    def cancel(self, job_id: str) -> Any:
        return self._request("POST", self.endpoints.delete_url, f"/jobs/{job_id}/cancel")

    def pause(self, job_id: str) -> Any:
        return self._request("POST", self.endpoints.delete_url, f"/jobs/{job_id}/pause")

    def resume(self, job_id: str) -> Any:
        return self._request("POST", self.endpoints.delete_url, f"/jobs/{job_id}/resume")

    def delete(self, job_id: str) -> Any:
        return self._request("DELETE", self.endpoints.delete_url, f"/jobs/{job_id}")


def _present(params: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}


def _decode(response: requests.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code < 400:
        return body
    error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
    message = error.get("message") or response.text[:300] or response.reason
    field = f" (field: {error['field']})" if error.get("field") else ""
    raise ClientError(
        f"{response.status_code}: {message}{field}", status=response.status_code, body=body
    )
