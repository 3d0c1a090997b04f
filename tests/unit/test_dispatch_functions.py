"""The dispatch, on_job_event and reconcile handlers: thin, light, and calm about bad input.

The handlers are driven through functions-framework's own app with Pub/Sub push
bodies as the emulator sends them; only inputs that never reach a service are
used here (the emulator tier covers the rest).
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = {
    "dispatch": ("dispatch_training_request", "cloudevent"),
    "on_job_event": ("record_job_event", "cloudevent"),
    "reconcile": ("reconcile_jobs", "http"),
}
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes")
ENVIRONMENT = {
    "PROJECT_ID": "unit-project",
    "GCS_CONFIG_BUCKET_NAME": "unit-config",
    "GCS_DATA_BUCKET_NAME": "unit-data",
    "GCS_MODELS_BUCKET_NAME": "unit-models",
}


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    for name in ("FUNCTION_TARGET", "FUNCTION_SIGNATURE_TYPE"):  # create_app sets them
        monkeypatch.delenv(name, raising=False)


def client(function: str) -> FlaskClient:
    target, signature = FUNCTIONS[function]
    source = REPO / "functions" / function / "main.py"
    return functions_framework.create_app(target, str(source), signature).test_client()


def push_body(data: bytes, message_id: str = "101") -> dict[str, Any]:
    """What the Pub/Sub emulator POSTs to a push endpoint."""
    return {
        "subscription": "projects/unit-project/subscriptions/s",
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": {},
            "messageId": message_id,
            "publishTime": "2026-01-01T00:00:00Z",
        },
    }


@pytest.mark.parametrize("function", ["dispatch", "on_job_event"])
@pytest.mark.parametrize("data", [b"\xff not json", b"[]", b'{"kind": "job_reference"}'])
def test_a_message_that_can_never_succeed_is_acknowledged(function, data, caplog):
    # The functions' logging set-up replaces the root handlers; listen on the package itself.
    logging.getLogger("tuning").addHandler(caplog.handler)
    try:
        answer = client(function).post(
            "/projects/unit-project/topics/t", json=push_body(data, message_id="77")
        )
    finally:
        logging.getLogger("tuning").removeHandler(caplog.handler)

    assert answer.status_code == 200  # acknowledged: Pub/Sub will not deliver it again
    assert "message 77" in caplog.text  # and logged, with the message id to find it by


def test_reconcile_answers_health_checks():
    answer = client("reconcile").get("/health")

    assert answer.status_code == 200
    assert answer.get_json() == {"status": "ok"}


@pytest.mark.parametrize("function", list(FUNCTIONS))
def test_importing_a_function_never_imports_the_ml_stack(function):
    script = (
        "import importlib, json, sys; "
        f"importlib.import_module('functions.{function}.main'); "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )

    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**ENVIRONMENT, "PATH": "/usr/bin:/bin"},
    )

    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("function", list(FUNCTIONS))
def test_requirements_pin_what_pyproject_pins(function):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    allowed = set(project["dependencies"]) | set(project["optional-dependencies"]["functions"])
    lines = (REPO / "functions" / function / "requirements.txt").read_text().splitlines()

    pins = {line.strip() for line in lines if line.strip() and not line.startswith("#")}

    assert pins == allowed
