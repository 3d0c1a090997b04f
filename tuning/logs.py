"""One logging set-up for every deployable.

On Cloud Run and Cloud Functions (or with LOG_FORMAT=json) each record is one
JSON line with `severity`, the job id as a label and the request's trace,
written by google-cloud-logging's structured handler; locally, plain readable
lines. Whatever the format, known secret values and token-shaped strings are
replaced before a record is written.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

REDACTED = "[REDACTED]"
# Token shapes worth catching even when nobody registered the value.
TOKEN_PATTERNS = [
    re.compile(r"hf_[A-Za-z0-9]{20,}"),  # Hugging Face user access tokens
    re.compile(r"\b[0-9a-f]{40}\b"),  # Weights & Biases API keys
    re.compile(r"ya29\.[A-Za-z0-9_.-]{20,}"),  # Google OAuth access tokens
]
_secret_values: set[str] = set()
_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)


def register_secret(value: str | None) -> None:
    """Never write `value` to a log, whichever logger it reaches."""
    if value and len(value) >= 4:
        _secret_values.add(value)


def redact(text: str) -> str:
    for value in sorted(_secret_values, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    for pattern in TOKEN_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


@contextmanager
def job_context(job_id: str | None) -> Iterator[None]:
    """Label every record logged inside the block with `job_id`."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


class _RedactAndLabel(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            formatter = logging.Formatter()
            message = f"{message}\n{formatter.formatException(record.exc_info)}"
            record.exc_info = None
            record.exc_text = None
        record.msg = redact(message)
        record.args = None
        job_id = _job_id.get()
        labels = dict(getattr(record, "labels", None) or {})
        if job_id:
            labels.setdefault("job_id", job_id)
        record.labels = labels
        record.job_suffix = f" [job {labels['job_id']}]" if "job_id" in labels else ""
        return True


def wants_json() -> bool:
    chosen = os.environ.get("LOG_FORMAT", "").lower()
    if chosen in {"json", "text"}:
        return chosen == "json"
    # Cloud Functions gen2 / Cloud Run services set K_SERVICE, Cloud Run jobs CLOUD_RUN_JOB.
    return bool(os.environ.get("K_SERVICE") or os.environ.get("CLOUD_RUN_JOB"))


def setup_logging(component: str, level: str | None = None) -> logging.Logger:
    """Configure the root logger once for this process and return the component's logger."""
    root = logging.getLogger()
    if not getattr(root, "_tuning_configured", False):
        handler: logging.Handler
        if wants_json():
            from google.cloud.logging_v2.handlers import StructuredLogHandler

            handler = StructuredLogHandler(
                project_id=os.environ.get("PROJECT_ID") or os.environ.get("GOOGLE_CLOUD_PROJECT")
            )
        else:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s%(job_suffix)s: %(message)s")
            )
        # First, so the structured handler's own filter sees our labels and text.
        handler.filters.insert(0, _RedactAndLabel())
        root.handlers = [handler]
        root.setLevel(level or os.environ.get("LOG_LEVEL", "INFO"))
        root._tuning_configured = True  # type: ignore[attr-defined]
    return logging.getLogger(component)
