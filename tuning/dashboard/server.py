"""The dashboard's web server: pages, static files and a guarded proxy to the API.

Every API call of the page goes to `/api/...` here and is forwarded to the configured function
(submit, status or delete) by `tuning.cli.client.ApiClient`, which adds the user's ID token as
the CLI does (a Google ID token, or on the local stack its issuer's, checked by the front
door). Only the routes in `ROUTES` are forwarded, with only their known query parameters; the
page never sees a token, only the API's answers.

The server binds 127.0.0.1 only, and every request must also get past `Guard`, because any
web page the user opens can make the browser send requests to 127.0.0.1:

- **Host** must be 127.0.0.1:PORT or localhost:PORT, on every route: a DNS-rebinding page
  (evil.example resolved to 127.0.0.1) sends `Host: evil.example` and is refused.
- **A per-run secret, never in a cookie.** `tuning dashboard` makes a random token and prints
  `http://127.0.0.1:PORT/#token=...`. The fragment is never sent to a server; the page's
  script keeps the token in `sessionStorage` (this origin's, port included) and sends it only
  in an `X-Dashboard-Token` header on the proxy routes. A cookie would not do: browsers do
  not keep cookies apart by port, so it would reach any other service on 127.0.0.1 the
  browser visits, which could replay it (review finding). Pages and static files carry no
  secret and need none.
- **The proxy routes** (`/api/...`) need that header. A custom header makes a cross-origin
  `fetch` send a CORS preflight, which is refused (no CORS headers are ever sent), and a
  plain form or `<img>` cannot set one. `Origin`, when sent, and always on POST/DELETE, must
  be this server's own; `Sec-Fetch-Site`, when sent, must be `same-origin`.
- Pages are not to be framed (`frame-ancestors 'none'`), scripts come from this server only
  (CSP), and no referrer leaves it.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import json
import logging
import queue
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.exceptions import HTTPException, NotFound, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from tuning.cli.client import ApiClient, ClientError, Endpoints
from tuning.dashboard import assets, jobfile

HOST = "127.0.0.1"
TOKEN_HEADER = "X-Dashboard-Token"
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
STATIC = Path(__file__).with_name("static")
STATIC_FILES = {"app.js": "text/javascript", "app.css": "text/css"}
VENDOR_FILES = {"uPlot.iife.min.js": "text/javascript", "uPlot.min.css": "text/css"}
MAX_SUBMIT_BYTES = 1024 * 1024  # the API's own body limit
STATUSES: tuple[str, ...] = (
    *("queued", "validating", "preparing", "training", "exporting", "paused"),
)
STATUSES += ("completed", "failed", "cancelled")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class ProxyClient(ApiClient):
    """The CLI's client, one request shape for every forwarded route."""

    def forward(
        self,
        method: str,
        endpoint: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        kwargs: dict[str, Any] = {"params": dict(params or {}), "headers": dict(headers or {})}
        if body is not None:
            kwargs["json"] = body
        return self._request(method, self.endpoints.url(endpoint), path, **kwargs)


@dataclass(frozen=True)
class Route:
    """One forwarded route: which function serves it, its path, and the query it may carry."""

    method: str
    endpoint: str  # submit, status or delete
    path: str  # with {job_id}
    params: Mapping[str, type] = field(default_factory=dict)


# The dashboard's path (below /api) -> the API route it forwards to.
ROUTES: dict[str, Route] = {
    "list": Route("GET", "status", "/jobs", {"limit": int, "status": str, "page_token": str}),
    "get": Route("GET", "status", "/jobs/{job_id}"),
    "events": Route("GET", "status", "/jobs/{job_id}/events", {"limit": int, "page_token": str}),
    "checkpoints": Route(
        "GET", "status", "/jobs/{job_id}/checkpoints", {"limit": int, "page_token": str}
    ),
    "samples": Route("GET", "status", "/jobs/{job_id}/samples"),
    "download": Route(
        "GET",
        "status",
        "/jobs/download/{job_id}",
        {"artifact": str, "quantization": str, "checkpoint": int},
    ),
    "cancel": Route("POST", "delete", "/jobs/{job_id}/cancel"),
    "pause": Route("POST", "delete", "/jobs/{job_id}/pause"),
    "resume": Route("POST", "delete", "/jobs/{job_id}/resume"),
    "delete": Route("DELETE", "delete", "/jobs/{job_id}"),
}

URLS = Map(
    [
        Rule("/", endpoint="page:list", methods=["GET"]),
        Rule("/jobs/<job_id>", endpoint="page:job", methods=["GET"]),
        Rule("/compare", endpoint="page:compare", methods=["GET"]),
        Rule("/submit", endpoint="page:submit", methods=["GET"]),
        Rule("/static/<name>", endpoint="static", methods=["GET"]),
        Rule("/api/jobs", endpoint="api:list", methods=["GET"]),
        Rule("/api/train", endpoint="api:submit", methods=["POST"]),
        Rule("/api/train:estimate", endpoint="api:estimate", methods=["POST"]),
        Rule("/api/jobs/<job_id>", endpoint="api:get", methods=["GET"]),
        Rule("/api/jobs/<job_id>", endpoint="api:delete", methods=["DELETE"]),
        Rule("/api/jobs/<job_id>/events", endpoint="api:events", methods=["GET"]),
        Rule("/api/jobs/<job_id>/checkpoints", endpoint="api:checkpoints", methods=["GET"]),
        Rule("/api/jobs/<job_id>/samples", endpoint="api:samples", methods=["GET"]),
        Rule("/api/download/<job_id>", endpoint="api:download", methods=["GET"]),
        Rule("/api/jobs/<job_id>/cancel", endpoint="api:cancel", methods=["POST"]),
        Rule("/api/jobs/<job_id>/pause", endpoint="api:pause", methods=["POST"]),
        Rule("/api/jobs/<job_id>/resume", endpoint="api:resume", methods=["POST"]),
    ],
    strict_slashes=False,
)


def json_response(body: Any, status: int = 200) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def refusal(status: int, code: str, message: str) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status)


class Guard:
    """Who may use this server: the checks of the module docstring, one method per surface."""

    def __init__(self, token: str, port: int) -> None:
        self.token = token
        self.port = port

    def allowed_hosts(self) -> set[str]:
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}

    def own_origins(self) -> set[str]:
        return {f"http://{host}" for host in self.allowed_hosts()}

    def matches(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token.encode())

    def check_host(self, request: Request) -> Response | None:
        if request.host not in self.allowed_hosts():
            return refusal(
                403, "wrong_host", f"this dashboard answers only http://127.0.0.1:{self.port}"
            )
        return None

    def check_api(self, request: Request) -> Response | None:
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if fetch_site is not None and fetch_site != "same-origin":
            return refusal(403, "cross_site", f"refused a {fetch_site} request")
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"http://{request.host}":
            return refusal(403, "foreign_origin", f"refused a request from {origin}")
        if origin is None and request.method not in {"GET", "HEAD"}:
            return refusal(403, "no_origin", f"a {request.method} needs this page's Origin")
        if not self.matches(request.headers.get(TOKEN_HEADER)):
            return refusal(
                403,
                "no_token",
                f"the {TOKEN_HEADER} header is missing or wrong: open the URL `tuning "
                "dashboard` printed (it carries this run's token)",
            )
        return None


class Dashboard:
    """The WSGI app. `client_factory` makes one ProxyClient per server thread."""

    def __init__(
        self,
        client_factory: Callable[[], ProxyClient],
        *,
        token: str,
        port: int,
        assets_root: Path | None = None,
    ) -> None:
        self.client_factory = client_factory
        self.guard = Guard(token, port)
        self.assets_root = assets_root
        self._idle: queue.SimpleQueue[ProxyClient] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dashboard-detail")

    @contextlib.contextmanager
    def client(self) -> Iterator[ProxyClient]:
        """A client of its own for one request (werkzeug serves each in a new thread; a
        requests session is not to be shared by threads), kept for the next one."""
        try:
            client = self._idle.get_nowait()
        except queue.Empty:
            client = self.client_factory()
        try:
            yield client
        finally:
            self._idle.put(client)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self.respond(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response(environ, start_response)

    def respond(self, request: Request) -> Response:
        refused = self.guard.check_host(request)
        if refused is not None:
            return refused
        adapter = URLS.bind_to_environ(request.environ)
        try:
            endpoint, values = adapter.match()
        except HTTPException as error:
            return refusal(error.code or 404, "not_found", error.description or "no such page")
        kind, _, name = str(endpoint).partition(":")
        if kind == "page":
            return self.page(name, values.get("job_id"))
        if kind == "static":
            return self.static(values["name"])
        refused = self.guard.check_api(request)
        if refused is not None:
            return refused
        if name in {"submit", "estimate"}:
            return self.submit(request, dry_run=name == "estimate")
        return self.proxy(name, request, values.get("job_id"))

    def page(self, name: str, job_id: str | None) -> Response:
        if job_id is not None and not JOB_ID.fullmatch(job_id):
            return refusal(404, "not_found", "no such job")
        titles = {"list": "Jobs", "job": job_id or "", "compare": "Compare", "submit": "Submit"}
        text = PAGE.format(
            title=html.escape(titles[name]),
            page=html.escape(name),
            job_id=html.escape(job_id or ""),
            statuses=html.escape(",".join(STATUSES)),
        )
        response = Response(text, mimetype="text/html")
        response.headers["Cache-Control"] = "no-store"
        return response

    def static(self, name: str) -> Response:
        if name in STATIC_FILES:
            path, mimetype = STATIC / name, STATIC_FILES[name]
        elif name in VENDOR_FILES:
            try:
                path = assets.served_file(name, self.assets_root)
            except assets.AssetError as error:
                return refusal(500, "assets_missing", str(error))
            mimetype = VENDOR_FILES[name]
        else:
            raise NotFound()
        return Response(path.read_bytes(), mimetype=mimetype)

    def proxy(self, name: str, request: Request, job_id: str | None) -> Response:
        route = ROUTES[name]
        if job_id is not None and not JOB_ID.fullmatch(job_id):
            return refusal(404, "not_found", "no such job")
        params: dict[str, Any] = {}
        for key, kind in dict(route.params).items():
            value = request.args.get(key)
            if value in (None, ""):
                continue
            if kind is int:
                if not value.isdigit():
                    return refusal(400, "invalid_argument", f"{key} must be a whole number")
                params[key] = int(value)
            else:
                params[key] = value
        if name == "list" and params.get("status") not in (None, *STATUSES):
            return refusal(400, "invalid_argument", f"no status {params['status']!r}")
        path = route.path.format(job_id=job_id)
        try:
            with self.client() as client:
                answer = client.forward(route.method, route.endpoint, path, params=params)
        except ClientError as error:
            return upstream_error(error)
        if name == "list" and isinstance(answer, dict):
            answer["jobs"] = self.with_details(answer.get("jobs") or [])
        return json_response(answer)

    def with_details(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each listed job with its record's `detail` (progress, method, tier, owner), which the
        list route does not carry; a job whose record cannot be read keeps its summary."""

        def detail(job: dict[str, Any]) -> dict[str, Any]:
            try:
                with self.client() as client:
                    record = client.forward("GET", "status", f"/jobs/{job['job_id']}")
            except (ClientError, KeyError):
                return job
            return {**job, "detail": record}

        return list(self._pool.map(detail, jobs))

    def submit(self, request: Request, *, dry_run: bool = False) -> Response:
        """The job text parsed and sent to POST /train, or to POST /train:estimate (the dry
        run: nothing is created, no idempotency key is needed)."""
        if (request.content_length or 0) > MAX_SUBMIT_BYTES:
            return refusal(413, "too_large", "a job file is at most 1 MiB")
        try:
            body = request.get_json(silent=True)
        except RequestEntityTooLarge:
            return refusal(413, "too_large", "a job file is at most 1 MiB")
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return refusal(400, "invalid_argument", 'send {"text": "<the job as YAML or JSON>"}')
        text = body["text"]
        try:
            job = jobfile.parse(text)
        except jobfile.JobFileError as error:
            return json_response({"error": error.as_dict()}, 400)
        key = body.get("idempotency_key")
        headers = {"Idempotency-Key": key} if isinstance(key, str) and key and not dry_run else {}
        path = "/train:estimate" if dry_run else "/train"
        try:
            with self.client() as client:
                answer = client.forward("POST", "submit", path, body=job, headers=headers)
        except ClientError as error:
            return upstream_error(error, text)
        return json_response(answer)


def upstream_error(error: ClientError, text: str | None = None) -> Response:
    """The API's own error answer, passed on (with the lines of the fields it names, for a
    submitted text); 502 when the API could not be reached."""
    body = error.body if isinstance(error.body, dict) else {}
    detail = body.get("error")
    if error.status is None or not isinstance(detail, dict):
        code = "unreachable" if error.status is None else "upstream"
        return refusal(502 if error.status is None else error.status, code, str(error))
    if text is not None:
        detail = dict(detail)
        if detail.get("field"):
            detail["line"] = jobfile.field_line(text, str(detail["field"]))
        if isinstance(detail.get("details"), list):
            detail["details"] = [
                {**problem, "line": jobfile.field_line(text, str(problem.get("field") or ""))}
                if isinstance(problem, dict)
                else problem
                for problem in detail["details"]
            ]
        body = {**body, "error": detail}
    return json_response(body, error.status)


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - tuning dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/uPlot.min.css">
<link rel="stylesheet" href="/static/app.css">
</head>
<body data-page="{page}" data-job-id="{job_id}" data-statuses="{statuses}">
<header class="top">
  <a class="brand" href="/">Gemma tuning</a>
  <nav><a href="/">Jobs</a> <a href="/compare">Compare</a> <a href="/submit">Submit</a></nav>
</header>
<main id="main"><p class="muted">Loading...</p></main>
<script src="/static/uPlot.iife.min.js"></script>
<script src="/static/app.js"></script>
</body>
</html>
"""


@dataclass
class Running:
    """A started dashboard: its URL (with the login token) and how to stop it."""

    server: BaseWSGIServer
    app: Dashboard
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def login_url(self) -> str:
        """The page with this run's token in the fragment, which no request carries."""
        return f"{self.base_url}/#token={self.app.guard.token}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start(endpoints: Endpoints, *, port: int = 0, assets_root: Path | None = None) -> Running:
    """Serve the dashboard on 127.0.0.1:`port` (0: any free port) in a background thread."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # request lines carry the token
    token = secrets.token_urlsafe(32)
    app = Dashboard(lambda: ProxyClient(endpoints), token=token, port=port, assets_root=assets_root)
    server = make_server(HOST, port, app, threaded=True)
    app.guard.port = int(server.server_port)
    thread = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
    thread.start()
    return Running(server, app, thread)
