"""Errors that end a job for good, and who is at fault (`error_type` on the job).

Raised by whatever judges a job before or while it trains: the validation before any GPU is
claimed (dispatch) and the trainer. A retry cannot help, so each is reported once as `failed`.
"""

from __future__ import annotations

from tuning.errors import TuningError
from tuning.jobs import ErrorType


class PermanentError(TuningError):
    """Retrying the same task cannot help."""

    error_type = ErrorType.USER
    code = "invalid_job"


class UserError(PermanentError):
    """The job's dataset, config or model reference is wrong: the user must fix it."""


class DatasetError(UserError):
    """A dataset file or row does not fit the trainer; the message names split, row and field."""

    code = "invalid_dataset"
