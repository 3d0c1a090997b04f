"""Cloud Run's IAM check in front of the local HTTP functions.

In GCP nobody reaches a function's container except through Google's front end, which
refuses a request without a valid ID token for the function's URL from a principal
holding roles/run.invoker, and hands the container the checked token with its signature
replaced by `SIGNATURE_REMOVED_BY_GOOGLE` (tuning/identity.py cites the docs). This is
that front end for the local stack: one listener per function, each with its own URL
(the audience its tokens must name), checking tokens of `tuning.local.issuer`:

- no token in either header: 403, as Cloud Run answers an unauthenticated request
  ("The request was not authenticated. Either allow unauthenticated invocations or set
  the proper Authorization header", logged with status 403);
- a token that is malformed, expired, badly signed or for another audience: 401;
- a valid token whose caller is not an invoker (when invokers are listed): 403;
- `X-Serverless-Authorization` is checked when present and `Authorization` is then
  passed on untouched; otherwise `Authorization` is checked. The checked header is
  forwarded with its signature removed, so the function reads identity exactly as it
  does behind Cloud Run.

    python -m tuning.local.front_door --issuer-key .local/issuer-key.pem \\
        --route 8101=http://127.0.0.1:8001 --route 8102=http://127.0.0.1:8002
"""

from __future__ import annotations

import argparse
import html
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from tuning.identity import SIGNATURE_REMOVED, TOKEN_HEADERS, HeaderSource
from tuning.local.emulators import HOST, free_port, stop_process_group
from tuning.local.functions import answers_http
from tuning.local.issuer import LocalIssuer

# Headers that describe one connection, not the message (RFC 9110 7.6.1); never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # Cloud Run's request size limit (HTTP/1)


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


@dataclass(frozen=True)
class Admission:
    header: str  # the header that was checked
    forwarded_value: str  # its value with the signature removed
    caller: str


def admit(
    headers: HeaderSource,
    *,
    audience: str,
    issuer: LocalIssuer,
    invokers: frozenset[str] | None,
) -> Admission | Refusal:
    """Cloud Run's decision for one request: let it through (and how) or refuse it."""
    header = next((name for name in TOKEN_HEADERS if headers.get(name) is not None), None)
    if header is None:
        return Refusal(
            403,
            "The request was not authenticated. Either allow unauthenticated invocations "
            "or set the proper Authorization header.",
        )
    scheme, _, token = headers[header].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return Refusal(401, f"The request was not authorized to invoke this service ({header}).")
    try:
        claims = issuer.verify(token, audience=audience)
    except ValueError:
        return Refusal(401, "The request was not authorized to invoke this service.")
    caller = str(claims.get("email") or claims.get("sub") or "")
    if invokers is not None and caller not in invokers:
        return Refusal(403, "Your client does not have permission to get URL from this server.")
    header_part, _, _signature = token.rpartition(".")
    return Admission(header, f"Bearer {header_part}.{SIGNATURE_REMOVED}", caller)


class FrontDoor:
    """The WSGI app in front of one function."""

    def __init__(
        self,
        upstream: str,
        *,
        audience: str,
        issuer: LocalIssuer,
        invokers: Iterable[str] | None = None,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.audience = audience
        self.issuer = issuer
        self.invokers = frozenset(invokers) if invokers is not None else None
        self.pool = pool or urllib3.PoolManager(maxsize=16)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, request: Request) -> Response:
        decision = admit(
            request.headers, audience=self.audience, issuer=self.issuer, invokers=self.invokers
        )
        if isinstance(decision, Refusal):
            return _error_page(decision)
        if request.content_length and request.content_length > MAX_REQUEST_BYTES:
            return Response("Error: request too large\n", status=413, mimetype="text/plain")
        headers = {
            key: value for key, value in request.headers.items() if key.lower() not in HOP_BY_HOP
        }
        headers[decision.header] = decision.forwarded_value
        # One connection per request: reusing a kept-alive one races the function's server
        # closing it when idle (gunicorn: after 2 s), and the loser would be a 503 that
        # Google's front end never gives for a healthy instance.
        headers["Connection"] = "close"
        url = self.upstream + _target_as_sent(request)
        try:
            answer = self.pool.request(
                request.method,
                url,
                body=request.get_data(),
                headers=headers,
                redirect=False,
                retries=False,
                timeout=urllib3.Timeout(connect=30, read=300),
            )
        except urllib3.exceptions.HTTPError as error:
            print(f"front door: {request.method} {url} failed upstream: {error!r}", flush=True)
            return Response("Error: Service Unavailable\n", status=503, mimetype="text/plain")
        response = Response(answer.data, status=answer.status)
        for key, value in answer.headers.items():
            if key.lower() not in HOP_BY_HOP:
                response.headers[key] = value
        return response


def _target_as_sent(request: Request) -> str:
    """The request target exactly as the client wrote it (path still percent-encoded).

    `request.path` is decoded: forwarding it would turn a job id holding `%2F` into extra
    path segments and route the request to another handler than the one it names.
    """
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw and raw.startswith("/"):
        return str(raw)
    return request.full_path if request.query_string else request.path


def _error_page(refusal: Refusal) -> Response:
    """An HTML page, as Google's front end answers (never the function's JSON)."""
    title = {401: "401 Unauthorized", 403: "403 Forbidden"}.get(refusal.status, "Error")
    page = (
        f"<html><head><title>{title}</title></head>"
        f"<body><h1>Error: {title.split(' ', 1)[1]}</h1><p>{html.escape(refusal.message)}</p>"
        "</body></html>\n"
    )
    return Response(page, status=refusal.status, mimetype="text/html")


@dataclass(frozen=True)
class Listener:
    port: int
    upstream: str

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def serve(
    listeners: Sequence[Listener], *, issuer: LocalIssuer, invokers: Iterable[str] | None
) -> list[BaseWSGIServer]:
    """Start one threaded server per listener; returns them running (stop with shutdown())."""
    invoker_list = list(invokers) if invokers is not None else None
    servers = []
    for listener in listeners:
        app = FrontDoor(
            listener.upstream, audience=listener.url, issuer=issuer, invokers=invoker_list
        )
        server = make_server(HOST, listener.port, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    return servers


@dataclass(frozen=True)
class FrontDoorProcess:
    """The front door running as its own process group (as the stack runs everything)."""

    pid: int
    routes: dict[str, Listener]  # function name -> its listener
    log_path: Path

    def url(self, function: str) -> str:
        return self.routes[function].url

    def stop(self) -> None:
        stop_process_group(self.pid, grace=2.0)


def start_front_door(
    upstreams: Mapping[str, str],
    *,
    issuer_key: Path,
    log_dir: Path,
    invokers: Iterable[str] | None = None,
    ports: Mapping[str, int] | None = None,
    timeout: float = 30.0,
) -> FrontDoorProcess:
    """A listener per function (name -> upstream URL); returns once every one answers."""
    routes = {
        name: Listener((ports or {}).get(name) or free_port(), upstream)
        for name, upstream in upstreams.items()
    }
    command = [sys.executable, "-m", "tuning.local.front_door", "--issuer-key", str(issuer_key)]
    for listener in routes.values():
        command += ["--route", f"{listener.port}={listener.upstream}"]
    for invoker in invokers or ():
        command += ["--invoker", invoker]
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "front-door.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    door = FrontDoorProcess(process.pid, routes, log_path)
    deadline = time.monotonic() + timeout
    while not all(answers_http(listener.url) for listener in routes.values()):
        if process.poll() is not None or time.monotonic() > deadline:
            door.stop()
            raise RuntimeError(f"the front door did not start:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    return door


def parse_route(value: str) -> Listener:
    port, sep, upstream = value.partition("=")
    if not sep or not port.isdigit() or not upstream.startswith("http"):
        raise argparse.ArgumentTypeError(f"expected PORT=UPSTREAM_URL, got {value!r}")
    return Listener(int(port), upstream)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--issuer-key", required=True, help="the local issuer's key (PEM)")
    parser.add_argument("--route", type=parse_route, action="append", required=True)
    parser.add_argument(
        "--invoker",
        action="append",
        help="a caller allowed to invoke (roles/run.invoker); none given: every caller",
    )
    args = parser.parse_args(argv)
    servers = serve(args.route, issuer=LocalIssuer(args.issuer_key), invokers=args.invoker)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    print("front door up: " + ", ".join(f"{r.url} -> {r.upstream}" for r in args.route), flush=True)
    stopped.wait()
    for server in servers:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
