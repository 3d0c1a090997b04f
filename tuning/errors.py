"""The package's one exception root and its small subclasses.

Handlers map these to HTTP statuses in one place (`http_status`); Pub/Sub
handlers acknowledge permanent errors and raise only `TransientError`.
"""

from __future__ import annotations

from typing import Any


class TuningError(Exception):
    """Root of every error this package raises on purpose."""

    code = "internal"
    http_status = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class InvalidRequestError(TuningError):
    """The caller sent something that can never succeed as it is."""

    code = "invalid_argument"
    http_status = 422

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        problems: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message, field=field)
        self.problems = problems or []

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        if len(self.problems) > 1:
            body["details"] = self.problems
        return body


class NotFoundError(TuningError):
    code = "not_found"
    http_status = 404


class ConflictError(TuningError):
    """The request is valid but the resource is in the wrong state for it."""

    code = "failed_precondition"
    http_status = 409


class TransientError(TuningError):
    """A dependency is unavailable or contended: retrying later can succeed."""

    code = "unavailable"
    http_status = 503


class CapacityError(TransientError):
    """Every GPU slot is taken; the job waits in the queue."""

    code = "resource_exhausted"


class UnauthenticatedError(TuningError):
    """No caller can be named from the request: no token, or one nobody checked."""

    code = "unauthenticated"
    http_status = 401
