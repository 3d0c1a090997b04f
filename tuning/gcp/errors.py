"""Google API errors translated into the package's own, in one place for every adapter."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from google.api_core import exceptions as api_exceptions

from tuning.errors import NotFoundError, TransientError

# Errors after which the same call can succeed later; the caller decides whether to retry.
RETRYABLE: tuple[type[BaseException], ...] = (
    api_exceptions.ServiceUnavailable,
    api_exceptions.DeadlineExceeded,
    api_exceptions.InternalServerError,
    api_exceptions.TooManyRequests,
    api_exceptions.Aborted,
    api_exceptions.GatewayTimeout,
    api_exceptions.RetryError,
    ConnectionError,
    TimeoutError,  # also concurrent.futures.TimeoutError, a publish that was not confirmed
)


@contextlib.contextmanager
def google_api_errors(
    service: str, what: str, also_retryable: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Missing -> NotFoundError, flaky -> TransientError; `what` names a resource, never a value."""
    try:
        yield
    except api_exceptions.NotFound as error:
        raise NotFoundError(f"{what} not found") from error
    except (*RETRYABLE, *also_retryable) as error:
        raise TransientError(f"{service} call for {what} failed: {type(error).__name__}") from error
