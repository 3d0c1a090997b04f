"""Strict patterns for every identifier that can end up in a storage path.

One place defines them so that no input can name another job's files: no `/`,
no `..`, bounded length. Pydantic models reuse the annotated types below.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

# Dataset and job ids become single path segments and Secret Manager ids.
SEGMENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
# Hugging Face repo ids: `owner/name`, names of letters, digits, `-`, `_`, `.`.
HF_REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$"
# A Hub model id (`google/gemma-3-1b-it`) or a `gs://bucket/prefix/` snapshot.
HF_MODEL_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$"
GCS_PREFIX_PATTERN = r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[A-Za-z0-9_.=+-]+)*/?$"
SECRET_REFERENCE_PATTERN = (
    r"^projects/[A-Za-z0-9_-]{1,100}/secrets/[A-Za-z0-9_-]{1,255}/versions/([0-9]{1,10}|latest)$"
)
# A caller's identity as a job records it (an email or an OIDC subject, from a checked ID
# token or a publisher's `owner` attribute): printable ASCII, no whitespace, at most 320
# characters (the longest email address).
IDENTITY_PATTERN = r"^[!-~]{1,320}$"
# The caller-chosen key that makes a retried submit safe (header or body).
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"

SegmentId = Annotated[str, StringConstraints(pattern=SEGMENT_PATTERN)]
HfRepoId = Annotated[str, StringConstraints(pattern=HF_REPO_PATTERN)]
SecretReference = Annotated[str, StringConstraints(pattern=SECRET_REFERENCE_PATTERN)]
IdempotencyKey = Annotated[str, StringConstraints(pattern=IDEMPOTENCY_KEY_PATTERN)]


def has_dot_segments(value: str) -> bool:
    """True when any `/`-separated part is `.` or `..` or contains `..`."""
    return any(part in {".", ".."} or ".." in part for part in value.split("/"))


def is_identity(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(IDENTITY_PATTERN, value) is not None


def is_segment_id(value: str) -> bool:
    return re.fullmatch(SEGMENT_PATTERN, value) is not None


def require_segment_id(value: str, field: str) -> str:
    """Return `value` if it is a safe single path segment, else raise naming `field`."""
    from tuning.errors import InvalidRequestError

    if not isinstance(value, str) or not is_segment_id(value):
        raise InvalidRequestError(
            f"{field} must match {SEGMENT_PATTERN} (letters, digits, '_' and '-', at most 128)",
            field=field,
        )
    return value


def slug(value: str, max_length: int) -> str:
    """A readable id fragment: letters, digits and `-`, lower case, bounded."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")
    return (cleaned[:max_length].strip("-")) or "x"
