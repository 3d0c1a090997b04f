"""A page token the API did not issue is a 400 naming `page_token`, on both paged routes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.emulator.test_api_stack import ApiStack, now_minus


def encoded(value: object) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FORGED = {
    "not base64": "not-a-token!!",
    "base64 of garbage": encoded(b"\xff\xfe\x00garbage"),
    "json number": encoded(1),
    "huge number": encoded(b"9" * 500),
    "huge exponent": encoded(b"[1e999, 1e999]"),
    "negative": encoded([-1, "job-1"]),
    "numbers instead of strings": encoded([10**30, 10**30]),
    "wrong length": encoded(["2026-01-01T00:00:00+00:00"]),
    "three items": encoded(["2026-01-01T00:00:00+00:00", "job-1", "x"]),
    "an object": encoded({"created_at": "2026-01-01T00:00:00+00:00", "job_id": "job-1"}),
    "nested": encoded([["2026-01-01T00:00:00+00:00"], {"a": 1}]),
    "deeply nested": encoded(b"[" * 340 + b"]" * 340),  # within the 1000 characters allowed
    "year one below UTC": encoded(["0001-01-01T00:00:00+14:00", "job-1"]),
    "year 9999 above UTC": encoded(["9999-12-31T23:59:59-14:00", "job-1"]),
    "no time zone": encoded(["2026-01-01T00:00:00", "job-1"]),
    "not a date": encoded(["yesterday", "job-1"]),
    "a name with a slash": encoded(["2026-01-01T00:00:00+00:00", "../job-1"]),
    "a huge name": encoded(["2026-01-01T00:00:00+00:00", "j" * 600]),
    "empty": "=",
}


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> ApiStack:
    started = ApiStack.start(monkeypatch, tmp_path, unique)
    started.make_job("job-1", created_at=now_minus(10))
    return started


@pytest.mark.parametrize("path", ["/jobs", "/jobs/job-1/events"])
def test_a_forged_page_token_is_400_naming_page_token(stack: ApiStack, path: str) -> None:
    answers = {what: stack.get(path, page_token=token) for what, token in FORGED.items()}

    statuses = {what: answer.status_code for what, answer in answers.items()}
    fields = {what: answer.get_json()["error"].get("field") for what, answer in answers.items()}
    assert statuses == dict.fromkeys(FORGED, 400)
    assert fields == dict.fromkeys(FORGED, "page_token")


def test_a_token_longer_than_the_documented_limit_is_a_parameter_error(stack: ApiStack) -> None:
    # maxLength 1000 is in the OpenAPI document: breaking it is a 422 like any parameter's.
    answer = stack.get("/jobs", page_token=encoded(b"[" * 700 + b"]" * 700))

    assert answer.status_code == 422
    assert answer.get_json()["error"]["field"] == "page_token"


def test_an_issued_token_still_pages(stack: ApiStack) -> None:
    stack.make_job("job-2", created_at=now_minus(5))

    first = stack.get("/jobs", limit=1).get_json()
    second = stack.get("/jobs", limit=1, page_token=first["next_page_token"])

    assert second.status_code == 200
    assert [job["job_id"] for job in second.get_json()["jobs"]] == ["job-1"]
