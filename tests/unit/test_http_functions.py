"""The three function modules through functions-framework, for what needs no GCP call.

Every answer here is decided before any adapter is used (protocol errors, validation,
identity), so no emulator runs; the emulator tier covers the rest.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
INVALID = sorted((FIXTURES / "requests" / "invalid").glob("*.json"))
ENTRY_POINTS = {
    "submit": "submit_training_job",
    "status": "serve_job_status",
    "delete": "delete_or_cancel_job",
}
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes")


@pytest.fixture(autouse=True)
def _restore_framework_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """create_app sets FUNCTION_TARGET and FUNCTION_SIGNATURE_TYPE for good: undo it after."""
    for name in ("FUNCTION_TARGET", "FUNCTION_SIGNATURE_TYPE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings that parse; nothing here may reach the (absent) services."""
    for name, value in {
        "PROJECT_ID": "unit-project",
        "GCS_CONFIG_BUCKET_NAME": "unit-config",
        "GCS_DATA_BUCKET_NAME": "unit-data",
        "GCS_MODELS_BUCKET_NAME": "unit-models",
        "OWNER_SCOPING": "false",
    }.items():
        monkeypatch.setenv(name, value)


def client(function: str) -> FlaskClient:
    source = REPO / "functions" / function / "main.py"
    return functions_framework.create_app(ENTRY_POINTS[function], str(source)).test_client()


def seed_request() -> dict[str, Any]:
    return json.loads((FIXTURES / "seed_train_request.json").read_text())


@pytest.mark.parametrize("path", INVALID, ids=[path.stem for path in INVALID])
def test_an_invalid_body_is_422_naming_the_field(environment: None, path: Path) -> None:
    case = json.loads(path.read_text())

    answer = client("submit").post("/train", json=case["request"])

    assert answer.status_code == 422
    error = answer.get_json()["error"]
    assert (error["code"], error["field"]) == ("invalid_argument", case["field"])


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b"{", "application/json", 400, "invalid_json"),
        (b"", "application/json", 400, "invalid_json"),
        (
            b"processed_dataset_id=x",
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
        (b"{}", "text/plain", 415, "unsupported_media_type"),
        (b" " * (1024 * 1024 + 1), "application/json", 413, "payload_too_large"),
        (b"[]", "application/json", 422, "invalid_argument"),
        (b'"text"', "application/json", 422, "invalid_argument"),
    ],
)
def test_protocol_errors_have_their_own_status(
    environment: None, data: bytes, content_type: str, status: int, code: str
) -> None:
    answer = client("submit").post("/train", data=data, content_type=content_type)

    assert answer.status_code == status
    assert answer.get_json()["error"]["code"] == code


def test_an_unknown_field_is_rejected(environment: None) -> None:
    body = {**seed_request(), "priority": "high"}

    answer = client("submit").post("/train", json=body)

    assert answer.status_code == 422
    assert answer.get_json()["error"]["field"] == "priority"


@pytest.mark.parametrize("key", ["has space", "a/b", "x" * 129, ""])
def test_a_malformed_idempotency_key_is_422(environment: None, key: str) -> None:
    answer = client("submit").post("/train", json=seed_request(), headers={"Idempotency-Key": key})

    assert answer.status_code == 422
    assert answer.get_json()["error"]["field"] == "Idempotency-Key"


@pytest.mark.parametrize(
    ("function", "method", "path"),
    [
        ("submit", "POST", "/train"),
        ("status", "GET", "/jobs"),
        ("status", "GET", "/jobs/job-1"),
        ("status", "GET", "/jobs/job-1/events"),
        ("status", "GET", "/jobs/download/job-1"),
        ("delete", "DELETE", "/jobs/job-1"),
        ("delete", "POST", "/jobs/job-1/cancel"),
    ],
)
def test_with_owner_scoping_a_request_naming_nobody_is_401(
    environment: None, monkeypatch: pytest.MonkeyPatch, function: str, method: str, path: str
) -> None:
    monkeypatch.setenv("OWNER_SCOPING", "true")

    answer = client(function).open(path, method=method, json=seed_request())

    assert answer.status_code == 401
    assert answer.get_json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("function", list(ENTRY_POINTS))
def test_every_function_routes_what_it_serves_only(function: str) -> None:
    functions = client(function)

    assert functions.get("/health").get_json() == {"status": "ok", "function": function}
    assert functions.get("/openapi.json").get_json()["openapi"] == "3.1.0"
    assert functions.get("/nowhere").status_code == 404
    assert functions.put("/health").status_code == 405
    assert functions.get("/favicon.ico").status_code == 404


@pytest.mark.parametrize("path", ["/favicon.ico", "/robots.txt", "/jobs/a%0Ab", "/jobs/%0A"])
@pytest.mark.parametrize("function", list(ENTRY_POINTS))
def test_paths_the_framework_answers_itself_still_get_json(function: str, path: str) -> None:
    # functions-framework's router refuses these before the function runs; the answer
    # must still be the API's error shape, not werkzeug's HTML page.
    answer = client(function).get(path)

    assert answer.status_code == 404
    assert answer.mimetype == "application/json"
    assert answer.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("function", list(ENTRY_POINTS))
def test_importing_a_function_never_imports_the_ml_stack(function: str) -> None:
    script = (
        "import importlib, json, sys; "
        f"importlib.import_module('functions.{function}.main'); "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )

    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )

    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("function", list(ENTRY_POINTS))
def test_requirements_pin_what_pyproject_pins(function: str) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    allowed = set(project["dependencies"]) | set(project["optional-dependencies"]["functions"])
    lines = (REPO / "functions" / function / "requirements.txt").read_text().splitlines()

    pins = {line.strip() for line in lines if line.strip() and not line.startswith("#")}

    assert pins == allowed
