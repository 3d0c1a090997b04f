"""What can end a trainer run, and who is at fault.

Permanent errors are reported once with `failed` and end the task with exit
code 0, because a Cloud Run retry would fail the same way; anything else is
treated as transient and exits non-zero so that Cloud Run retries the task.
"""

from __future__ import annotations

from tuning.errors import TuningError

# Defined with the job's rules (tuning.failures), named here with the trainer's other errors.
from tuning.failures import DatasetError as DatasetError
from tuning.failures import PermanentError as PermanentError
from tuning.failures import UserError as UserError
from tuning.jobs import ErrorType


class ModelNotFoundError(UserError):
    code = "model_not_found"


class UnsupportedError(PermanentError):
    """A valid request this trainer build cannot run yet (a later build may)."""

    error_type = ErrorType.SYSTEM
    code = "unsupported"


class BrokenJobError(PermanentError):
    """The job's own files are inconsistent (e.g. its config is gone): our fault, not retryable."""

    error_type = ErrorType.SYSTEM
    code = "broken_job"


class InsufficientSpaceError(PermanentError):
    """The base model does not fit where the trainer keeps it; a retry has no more room."""

    error_type = ErrorType.SYSTEM
    code = "insufficient_space"


class OutOfMemoryError(UserError):
    """The configuration does not fit the accelerator; the same config would run out again."""

    code = "out_of_memory"


class JobGone(TuningError):  # noqa: N818  (not an error of the job: it was deleted or stopped)
    """The job was deleted, cancelled or handed to another execution: stop without writing."""

    code = "job_gone"


class HandedOff(TuningError):  # noqa: N818  (not an error: the job goes on in a new execution)
    """The attempt checkpointed and published `handoff`: end the task with exit code 0."""

    code = "handed_off"


class NoProgressError(TuningError):
    """The attempt stopped (task deadline, SIGTERM) without a checkpoint past the one it
    resumed from: not a handoff, which would loop; retried like any failed attempt."""

    code = "no_progress"
