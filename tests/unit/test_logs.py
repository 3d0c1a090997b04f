"""Structured logs: severity, job label, and never a secret."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from tuning.logs import job_context, register_secret, setup_logging


@pytest.fixture
def fresh_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    monkeypatch.setattr(root, "_tuning_configured", False, raising=False)
    yield
    root.handlers, root.level = saved_handlers, saved_level


def test_json_lines_carry_severity_job_label_and_no_secret(
    fresh_logging: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p")
    register_secret("s3cret-value-registered")
    logger = setup_logging("submit")

    with job_context("job-123"):
        logger.warning("token %s and %s", "s3cret-value-registered", "hf_" + "a" * 30)

    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["severity"] == "WARNING"
    assert line["logging.googleapis.com/labels"]["job_id"] == "job-123"
    assert "s3cret-value-registered" not in line["message"]
    assert "hf_" + "a" * 30 not in line["message"]
    assert line["message"].count("[REDACTED]") == 2


def test_text_lines_are_readable_and_redacted(
    fresh_logging: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "text")
    register_secret("another-registered-secret")
    logger = setup_logging("trainer")

    with job_context("job-9"):
        try:
            raise RuntimeError("failed with another-registered-secret")
        except RuntimeError:
            logger.exception("step failed")

    output = capsys.readouterr().err
    assert "ERROR trainer [job job-9]: step failed" in output
    assert "RuntimeError" in output
    assert "another-registered-secret" not in output
