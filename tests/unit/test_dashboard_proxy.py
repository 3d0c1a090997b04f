"""The dashboard's server without a browser: who gets through its guard, what it forwards where
(with the CLI's tokens), what it passes back, and how its chart library is fetched."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.test import Client, TestResponse

from tuning.cli.client import Endpoints, RetryPolicy
from tuning.dashboard import assets
from tuning.dashboard.server import TOKEN_HEADER, Dashboard, ProxyClient
from tuning.local.issuer import LocalIssuer

PORT = 8765
ORIGIN = f"http://127.0.0.1:{PORT}"
TOKEN = "per-run-secret"
URLS = {
    "submit": "http://127.0.0.1:9101",
    "status": "http://127.0.0.1:9102",
    "delete": "http://127.0.0.1:9103",
}


class FakeSession:
    """Stands in for requests.Session: records each request, answers from `answers`."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}
        self.fail: Exception | None = None

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        self.sent.append({"method": method, "url": url, **kwargs})
        if self.fail is not None:
            raise self.fail
        path = "/" + url.split("/", 3)[3]
        status, body = self.answers.get((method, path), (200, {"ok": path}))
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(body).encode()
        response.headers["Content-Type"] = "application/json"
        return response


@pytest.fixture
def issuer(tmp_path: Path) -> LocalIssuer:
    return LocalIssuer.create(tmp_path / "issuer.pem")


@pytest.fixture
def session() -> FakeSession:
    return FakeSession()


@pytest.fixture
def client(issuer: LocalIssuer, session: FakeSession, tmp_path: Path) -> Client:
    endpoints = Endpoints(URLS, caller="alice@example.com", local_issuer_key=issuer.key_path)

    def make() -> ProxyClient:
        return ProxyClient(endpoints, session=session, retry=RetryPolicy(tries=1))  # type: ignore[arg-type]

    app = Dashboard(make, token=TOKEN, port=PORT, assets_root=tmp_path / "assets")
    return Client(app)


def api(
    client: Client, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
) -> TestResponse:
    """A request as the dashboard's own page sends it, `headers` laid over."""
    sent = {"Host": f"127.0.0.1:{PORT}", TOKEN_HEADER: TOKEN, "Sec-Fetch-Site": "same-origin"}
    if method != "GET":
        sent["Origin"] = ORIGIN
    sent.update(headers or {})
    return client.open(path, method=method, headers={k: v for k, v in sent.items() if v}, **kwargs)


def test_pages_carry_no_secret_set_no_cookie_and_have_a_strict_policy(client: Client) -> None:
    page = client.get("/jobs/job-1", headers={"Host": f"127.0.0.1:{PORT}"})

    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert TOKEN not in text  # the token lives in the URL fragment and sessionStorage only
    assert "Set-Cookie" not in page.headers
    assert 'data-job-id="job-1"' in text
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("host", ["evil.example", f"evil.example:{PORT}", "127.0.0.1:9999"])
def test_another_host_name_is_refused_even_with_the_session(
    client: Client, session: FakeSession, host: str
) -> None:
    # A DNS-rebinding page reaches 127.0.0.1 under its own name, and sends that as Host.
    for path in ("/", "/api/jobs"):
        response = api(client, "GET", path, headers={"Host": host})
        assert response.status_code == 403, path
        assert response.json["error"]["code"] == "wrong_host"
    assert session.sent == []


def test_the_proxy_refuses_a_request_without_the_dashboard_token(
    client: Client, session: FakeSession
) -> None:
    missing = api(client, "GET", "/api/jobs", headers={TOKEN_HEADER: ""})
    wrong = api(client, "GET", "/api/jobs", headers={TOKEN_HEADER: "guess"})
    # A cookie reaches every port of 127.0.0.1, so a cookie, even with the token, is nothing.
    client.set_cookie(f"tuning_dashboard_{PORT}", TOKEN, domain="127.0.0.1")
    cookie_only = api(client, "GET", "/api/jobs", headers={TOKEN_HEADER: ""})

    assert missing.status_code == wrong.status_code == cookie_only.status_code == 403
    assert missing.json["error"]["code"] == "no_token"
    assert session.sent == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/jobs"), ("POST", "/api/jobs/job-1/cancel"), ("DELETE", "/api/jobs/job-1")],
)
def test_the_proxy_refuses_a_foreign_origin(
    client: Client, session: FakeSession, method: str, path: str
) -> None:
    for origin in ("http://evil.example", f"http://127.0.0.1:{PORT + 1}", "null"):
        response = api(client, method, path, headers={"Origin": origin})
        assert response.status_code == 403
        assert response.json["error"]["code"] == "foreign_origin"
        assert "Access-Control-Allow-Origin" not in response.headers
    assert session.sent == []


def test_a_state_change_needs_an_origin_and_a_same_origin_fetch(
    client: Client, session: FakeSession
) -> None:
    no_origin = api(client, "POST", "/api/jobs/job-1/cancel", headers={"Origin": ""})
    cross_site = api(
        client, "POST", "/api/jobs/job-1/cancel", headers={"Sec-Fetch-Site": "cross-site"}
    )
    same_site = api(client, "GET", "/api/jobs", headers={"Sec-Fetch-Site": "same-site"})

    assert no_origin.status_code == 403 and no_origin.json["error"]["code"] == "no_origin"
    assert cross_site.status_code == 403 and cross_site.json["error"]["code"] == "cross_site"
    assert same_site.status_code == 403  # another port of 127.0.0.1 is same-site, not ours
    assert session.sent == []


def test_a_cors_preflight_is_never_granted(client: Client, session: FakeSession) -> None:
    response = api(
        client,
        "OPTIONS",
        "/api/jobs/job-1/cancel",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )

    assert response.status_code in {403, 405}
    assert not [name for name, _ in response.headers.items() if name.lower().startswith("access-")]
    assert session.sent == []


def test_a_read_is_forwarded_to_the_status_function_with_the_callers_id_token(
    client: Client, session: FakeSession, issuer: LocalIssuer
) -> None:
    session.answers[("GET", "/jobs/job-1/events")] = (200, {"events": [], "next_page_token": None})

    response = api(client, "GET", "/api/jobs/job-1/events?limit=5&page_token=abc&secret=x")

    assert response.status_code == 200
    assert response.json == {"events": [], "next_page_token": None}
    assert response.headers["Cache-Control"] == "no-store"
    [sent] = session.sent
    assert sent["url"] == f"{URLS['status']}/jobs/job-1/events"
    assert sent["params"] == {"limit": 5, "page_token": "abc"}  # only the route's parameters
    token = sent["headers"]["Authorization"].removeprefix("Bearer ")
    claims = issuer.verify(token, audience=URLS["status"])
    assert claims["email"] == "alice@example.com"
    assert token not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("method", "path", "upstream"),
    [
        ("POST", "/api/jobs/job-1/cancel", ("delete", "/jobs/job-1/cancel")),
        ("POST", "/api/jobs/job-1/pause", ("delete", "/jobs/job-1/pause")),
        ("POST", "/api/jobs/job-1/resume", ("delete", "/jobs/job-1/resume")),
        ("DELETE", "/api/jobs/job-1", ("delete", "/jobs/job-1")),
        ("GET", "/api/jobs/job-1/checkpoints?limit=3", ("status", "/jobs/job-1/checkpoints")),
        ("GET", "/api/jobs/job-1/samples", ("status", "/jobs/job-1/samples")),
        ("GET", "/api/download/job-1?checkpoint=40", ("status", "/jobs/download/job-1")),
    ],
)
def test_each_route_goes_to_its_function_with_a_token_for_that_function(
    client: Client,
    session: FakeSession,
    issuer: LocalIssuer,
    method: str,
    path: str,
    upstream: tuple[str, str],
) -> None:
    response = api(client, method, path)

    assert response.status_code == 200
    [sent] = session.sent
    function, upstream_path = upstream
    assert (sent["method"], sent["url"]) == (method, URLS[function] + upstream_path)
    issuer.verify(sent["headers"]["Authorization"].removeprefix("Bearer "), audience=URLS[function])


def test_a_bad_job_id_or_parameter_is_not_forwarded(client: Client, session: FakeSession) -> None:
    assert api(client, "GET", "/api/jobs/.hidden").status_code == 404
    assert api(client, "GET", "/api/jobs/job-1%0A").status_code == 404  # a trailing newline
    assert api(client, "GET", "/api/jobs?limit=ten").status_code == 400
    assert api(client, "GET", "/api/jobs?status=everything").status_code == 400
    assert api(client, "GET", "/api/jobs/job-1/logs").status_code == 404  # no such route
    assert session.sent == []


def test_the_apis_error_is_passed_on_and_an_unreachable_api_is_502(
    client: Client, session: FakeSession
) -> None:
    missing = {"error": {"code": "not_found", "message": "no job job-9"}}
    session.answers[("GET", "/jobs/job-9")] = (404, missing)

    response = api(client, "GET", "/api/jobs/job-9")

    assert response.status_code == 404 and response.json == missing
    session.fail = requests.ConnectionError("refused")
    down = api(client, "GET", "/api/jobs/job-9")
    assert down.status_code == 502 and down.json["error"]["code"] == "unreachable"


def test_the_list_carries_each_jobs_record(client: Client, session: FakeSession) -> None:
    summary = {"job_id": "job-1", "job_name": "one", "status": "training"}
    session.answers[("GET", "/jobs")] = (200, {"jobs": [summary], "next_page_token": "n"})
    record = {**summary, "method": "LoRA", "progress": {"step": 3}, "owner": "bob@example.com"}
    session.answers[("GET", "/jobs/job-1")] = (200, record)

    response = api(client, "GET", "/api/jobs?status=training&limit=20")

    assert response.json == {"jobs": [{**summary, "detail": record}], "next_page_token": "n"}
    assert session.sent[0]["params"] == {"status": "training", "limit": 20}


JOB_YAML = """\
processed_dataset_id: demo
training_config:
  base_model_id: google/gemma-3-1b-it
  hyperparameters:
    learning_rat: 0.1
"""


def test_a_submitted_yaml_job_is_forwarded_as_json_with_its_idempotency_key(
    client: Client, session: FakeSession, issuer: LocalIssuer
) -> None:
    session.answers[("POST", "/train")] = (202, {"job_id": "job-2", "status": "queued"})

    response = api(client, "POST", "/api/train", json={"text": JOB_YAML, "idempotency_key": "k1"})

    assert response.status_code == 200 and response.json["job_id"] == "job-2"
    [sent] = session.sent
    assert sent["url"] == f"{URLS['submit']}/train"
    assert sent["json"]["training_config"]["hyperparameters"] == {"learning_rat": 0.1}
    assert sent["headers"]["Idempotency-Key"] == "k1"
    issuer.verify(sent["headers"]["Authorization"].removeprefix("Bearer "), audience=URLS["submit"])


def test_an_estimate_goes_to_the_dry_run_route_without_an_idempotency_key(
    client: Client, session: FakeSession
) -> None:
    session.answers[("POST", "/train:estimate")] = (200, {"validation": {}, "estimate": {}})

    response = api(
        client, "POST", "/api/train:estimate", json={"text": JOB_YAML, "idempotency_key": "k"}
    )

    assert response.status_code == 200 and response.json == {"validation": {}, "estimate": {}}
    [sent] = session.sent
    assert sent["url"] == f"{URLS['submit']}/train:estimate"
    assert "Idempotency-Key" not in sent["headers"]


def test_a_field_the_api_refuses_comes_back_with_its_line(
    client: Client, session: FakeSession
) -> None:
    field = "training_config.hyperparameters.learning_rat"
    refused = {"error": {"code": "invalid_argument", "message": "unknown field", "field": field}}
    session.answers[("POST", "/train")] = (422, refused)

    response = api(client, "POST", "/api/train", json={"text": JOB_YAML})

    assert response.status_code == 422
    assert response.json["error"] == {**refused["error"], "line": 5}


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("training_config: [1, 2\n", 2, 1),
        ('{"a": 1,\n "b": }', 2, 7),
        ("- just a list\n", None, None),
    ],
)
def test_a_job_that_does_not_parse_is_refused_here_with_where(
    client: Client, session: FakeSession, text: str, line: int | None, column: int | None
) -> None:
    response = api(client, "POST", "/api/train", json={"text": text})

    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == "invalid_file" and error["message"]
    assert (error.get("line"), error.get("column")) == (line, column)
    assert session.sent == []


def test_static_files_and_the_chart_library_are_served(client: Client, tmp_path: Path) -> None:
    host = {"Host": f"127.0.0.1:{PORT}"}
    assert client.get("/static/app.js", headers=host).status_code == 200
    missing = client.get("/static/uPlot.iife.min.js", headers=host)
    assert missing.status_code == 500 and "make install" in missing.json["error"]["message"]
    assert client.get("/static/../server.py", headers=host).status_code in {403, 404}


def tarball(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def test_the_chart_library_is_unpacked_only_when_its_integrity_matches(tmp_path: Path) -> None:
    data = tarball({"dist/a.js": b"chart()", "LICENSE": b"MIT"})
    package = assets.NpmPackage("lib", "1.0.0", integrity(data), ("dist/a.js", "LICENSE"))
    tampered = assets.NpmPackage("lib", "1.0.0", integrity(b"other"), package.files)
    downloads: list[str] = []

    def download(url: str) -> bytes:
        downloads.append(url)
        return data

    with pytest.raises(assets.AssetError, match="integrity mismatch"):
        assets.fetch(tampered, tmp_path, download=download)
    assert not assets.is_ready(tampered, tmp_path)

    folder = assets.fetch(package, tmp_path, download=download)
    assets.fetch(package, tmp_path, download=download)  # already there: not downloaded again

    assert (folder / "dist/a.js").read_bytes() == b"chart()"
    assert downloads == [package.tarball_url] * 2
    assert package.tarball_url == "https://registry.npmjs.org/lib/-/lib-1.0.0.tgz"


def test_the_pinned_chart_library_is_uplot_from_the_npm_registry() -> None:
    assert (assets.UPLOT.name, assets.UPLOT.version) == ("uplot", "1.6.32")
    assert assets.UPLOT.integrity.startswith("sha512-")
    assert set(assets.SERVED.values()) <= set(assets.UPLOT.files)
