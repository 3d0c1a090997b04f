"""`tuning dashboard` in a real browser (Playwright driving Debian's chromium) against the
session's local stack: the list, a job's live page and its chart, the cancel button, the
submit page's field errors, and the proxy's refusals of other pages. Screenshots go to
.local/screenshots/ for a developer to look at."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.conftest import CLI, LocalStack
from tests.e2e.test_local_stack import quick_request
from tuning.cli.commands import loss_curves

SCREENSHOTS = Path(__file__).resolve().parents[2] / ".local" / "screenshots"
REBOUND_HOST = "rebound.test"  # the browser resolves it to 127.0.0.1, as a rebinding DNS would


class Dashboard:
    def __init__(self, login_url: str) -> None:
        self.login_url = login_url
        self.base_url = login_url.split("/#token=", 1)[0]
        self.port = int(self.base_url.rsplit(":", 1)[1])
        self.token = login_url.split("#token=", 1)[1]


@pytest.fixture(scope="module")
def dashboard(local_stack: LocalStack) -> Iterator[Dashboard]:
    process = subprocess.Popen(
        [CLI, "dashboard", "--port", "0"],
        env=local_stack.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("http://127.0.0.1:") and "/#token=" in line, (
            line,
            process.stderr.read() if process.poll() is not None and process.stderr else "",
        )
        yield Dashboard(line)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: `make install` installs it")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", f"--host-resolver-rules=MAP {REBOUND_HOST} 127.0.0.1"],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, dashboard: Dashboard) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(str(error)))
    opened.goto(dashboard.login_url)
    assert opened.url == f"{dashboard.base_url}/"
    try:
        yield opened
    finally:
        context.close()
    assert problems == [], problems  # no script error on any page the test visited


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def eventually(check: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.3)


def chart_points(page: Page) -> tuple[str | None, int]:
    """The job page's status and how many train-loss points its uPlot chart holds."""
    status, points = page.evaluate(
        """() => [document.body.dataset.jobStatus || null,
                  window.tuningCharts.loss
                    ? window.tuningCharts.loss.data[1].filter((v) => v !== null).length : 0]"""
    )
    return status, int(points)


def events(local_stack: LocalStack, job_id: str) -> list[dict[str, Any]]:
    return json.loads(local_stack.cli("--json", "events", job_id).stdout)


def test_the_list_shows_a_job_whose_page_charts_every_progress_point_as_it_trains(
    local_stack: LocalStack, page: Page, dashboard: Dashboard
) -> None:
    job_id = local_stack.submit(quick_request(local_stack, max_steps=24), "dashboard-live")

    row = page.locator(f'tr[data-job-id="{job_id}"]')
    row.wait_for(timeout=30_000)
    assert local_stack.exports["TUNING_DEMO_MODEL"] in row.inner_text()
    assert "LoRA" in row.inner_text()
    screenshot(page, "list")

    row.get_by_role("link").click()
    page.wait_for_url(f"{dashboard.base_url}/jobs/{job_id}")
    seen: list[tuple[str | None, int]] = []
    deadline = time.monotonic() + 300
    while not seen or seen[-1][0] not in {"completed", "failed", "cancelled"}:
        assert time.monotonic() < deadline, f"job page never saw the end: {seen[-5:]}"
        seen.append(chart_points(page))
        time.sleep(0.5)
    assert seen[-1][0] == "completed", local_stack.job(job_id).get("error")

    history = events(local_stack, job_id)
    progress = [e for e in history if e["type"] == "progress" and e["payload"].get("loss")]
    train, evaluation = loss_curves(history)
    assert len(progress) == len(train) > 0
    eventually(lambda: chart_points(page)[1] == len(train), 15, "the final chart")
    assert page.locator("#loss-chart").get_attribute("data-eval-points") == str(len(evaluation))
    assert page.locator("#job-status").inner_text() == "completed"
    screenshot(page, "job")

    page.get_by_role("button", name="Merged model").click()
    link = page.locator("#artifacts ul.files a").first
    link.wait_for(timeout=30_000)
    href = link.get_attribute("href")
    assert href is not None
    assert requests.get(href, timeout=30).status_code == 200  # a signed URL that works

    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    width, inner = page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
    assert width <= inner, "the job page scrolls sideways on a narrow window"
    screenshot(page, "job-narrow")


ATTACKER_PAGE = """<!doctype html><script>
window.attempts = Promise.allSettled([
  fetch("%(base)s/api/jobs/%(job)s/cancel", {method: "POST", mode: "no-cors",
                                               credentials: "include"}),
  fetch("%(base)s/api/jobs/%(job)s/cancel", {method: "POST", credentials: "include",
                                               headers: {"X-Dashboard-Token": "guess"}}),
  fetch("%(base)s/api/jobs", {credentials: "include"}).then((r) => r.text()),
]).then((results) => results.map((r) => r.status));
</script>"""


@pytest.fixture
def attacker_site() -> Iterator[Callable[[str], str]]:
    """Another web page on this machine (127.0.0.1, another port: same-site with the dashboard,
    which is why the dashboard sets no cookie such a page's requests would carry)."""
    pages: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(html: str) -> str:
        pages["/"] = html
        return f"http://127.0.0.1:{server.server_port}/"

    try:
        yield serve
    finally:
        server.shutdown()
        server.server_close()


def test_a_running_jobs_chart_grows_while_it_trains(
    local_stack: LocalStack, page: Page, dashboard: Dashboard
) -> None:
    """A job long enough never to end while watched (then cancelled): whether a short job's
    training outlasts two of the page's 1.5 s polls depends on the machine's speed."""
    # 2,000 steps: on an idle machine the tiny model trains 100 steps before a page loads.
    job_id = local_stack.submit(quick_request(local_stack, max_steps=2000), "dashboard-growing")
    local_stack.wait_for(job_id, lambda job: (job.get("progress") or {}).get("step", 0) >= 1)

    page.goto(f"{dashboard.base_url}/jobs/{job_id}")
    first = eventually(lambda: chart_points(page)[1], 60, "a first point on the chart")
    grown = eventually(
        lambda: chart_points(page)[1] > first and chart_points(page), 60, "the chart to grow"
    )

    assert grown[0] == "training", grown
    local_stack.cli("cancel", job_id)


def test_another_page_cannot_cancel_but_the_cancel_button_does(
    local_stack: LocalStack,
    page: Page,
    dashboard: Dashboard,
    attacker_site: Callable[[str], str],
) -> None:
    job_id = local_stack.submit(quick_request(local_stack, max_steps=2000), "dashboard-cancel")
    local_stack.wait_for(job_id, lambda job: (job.get("progress") or {}).get("step", 0) >= 2)

    # Another site open in the same browser tries to drive the proxy.
    attacker = page.context.new_page()
    attacker.goto(attacker_site(ATTACKER_PAGE % {"base": dashboard.base_url, "job": job_id}))
    outcomes = attacker.evaluate("() => window.attempts")
    attacker.close()
    # The no-cors POST goes out and is refused (its Origin, no token; the
    # browser then withholds even the opaque answer: same-origin resource policy); the others
    # fail in the browser (a refused preflight; an answer with no CORS grant).
    assert outcomes[1:] == ["rejected", "rejected"], outcomes
    assert local_stack.job(job_id)["status"] == "training"

    page.goto(f"{dashboard.base_url}/jobs/{job_id}")
    page.locator("#job-status [data-status='training']").wait_for(timeout=30_000)
    page.locator("#cancel").click()

    page.locator("#job-status [data-status='cancelled']").wait_for(timeout=60_000)
    assert local_stack.job(job_id)["status"] == "cancelled"
    assert page.locator("#cancel").is_disabled()
    screenshot(page, "job-cancelled")


def test_a_bad_job_file_shows_the_field_error_on_the_submit_page(
    local_stack: LocalStack, page: Page, dashboard: Dashboard
) -> None:
    page.get_by_role("link", name="Submit", exact=True).click()
    page.wait_for_url(f"{dashboard.base_url}/submit")
    request = quick_request(local_stack)
    request["job_name"] = "dashboard-bad-file"
    request["training_config"]["hyperparameters"]["learning_rat"] = 0.1
    text = yaml.safe_dump(request, sort_keys=False)
    line = 1 + text.splitlines().index("    learning_rat: 0.1")

    page.locator("#job-text").fill(text)
    page.locator("#submit-job").click()

    error = page.locator(".field-error").first
    error.wait_for(timeout=30_000)
    assert error.get_attribute("data-field") == "training_config.hyperparameters.learning_rat"
    assert error.get_attribute("data-line") == str(line)
    assert "learning_rat" in error.inner_text() and f"line {line}" in error.inner_text()
    screenshot(page, "submit-error")

    page.locator("#job-text").fill("training_config: [1, 2\n")
    page.locator("#submit-job").click()
    page.get_by_text("line 2, column 1").wait_for(timeout=10_000)
    listing = json.loads(local_stack.cli("--json", "list", "--limit", "100").stdout)
    assert not [job for job in listing["jobs"] if job["job_name"] == "dashboard-bad-file"]


def test_the_submit_page_estimates_a_job_without_creating_it(
    local_stack: LocalStack, page: Page, dashboard: Dashboard
) -> None:
    page.goto(f"{dashboard.base_url}/submit")
    request = quick_request(local_stack)
    request["job_name"] = "dashboard-estimate-only"
    page.locator("#job-text").fill(yaml.safe_dump(request, sort_keys=False))
    page.locator("#estimate-job").click()

    estimate = page.locator("#estimate")
    estimate.wait_for(timeout=60_000)
    text = estimate.inner_text()
    assert "nothing was created" in text and "train: " in text and " tokens, " in text
    assert "steps: " in text and page.locator(".tier-estimate").count() >= 1
    screenshot(page, "submit-estimate")
    listing = json.loads(local_stack.cli("--json", "list", "--limit", "100").stdout)
    assert not [job for job in listing["jobs"] if job["job_name"] == "dashboard-estimate-only"]


def test_the_proxy_refuses_requests_without_its_token_or_from_another_origin(
    local_stack: LocalStack, dashboard: Dashboard, page: Page
) -> None:
    api = f"{dashboard.base_url}/api/jobs"
    cookie = {f"tuning_dashboard_{dashboard.port}": dashboard.token}
    own = {"X-Dashboard-Token": dashboard.token}

    assert requests.get(api, timeout=10).status_code == 403
    assert requests.get(api, cookies=cookie, timeout=10).status_code == 403  # no header
    foreign = {**own, "Origin": "http://evil.example"}
    assert requests.get(api, headers=foreign, timeout=10).status_code == 403
    answer = requests.get(api, headers=own, timeout=10)
    assert answer.status_code == 200 and "jobs" in answer.json()
    assert "Bearer" not in answer.text
    # The browser was handed the token in the fragment, kept it, and set no cookie.
    assert page.context.cookies() == []
    assert page.evaluate("() => sessionStorage.getItem('tuning-dashboard-token')") == (
        dashboard.token
    )

    # A DNS-rebinding page: the same server under another name.
    rebound = page.goto(f"http://{REBOUND_HOST}:{dashboard.port}/")
    assert rebound is not None and rebound.status == 403
