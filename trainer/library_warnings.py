"""Library warnings every job would print, each once per process, that say nothing about the job.

transformers 5 deprecates `gradient_checkpointing` in favour of `activation_checkpointing`, and
TRL 1.16's configs and trainers still use the old names: two FutureWarnings in every job's log,
none of which its owner can act on. They are filtered here, by message, once, where the
trainer configures logging; any other warning still shows.
Drop an entry when the library that caused it is upgraded past it.
"""

from __future__ import annotations

import re
import warnings

# (category, start of the message) of each warning known to carry nothing for a job's owner.
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, "`gradient_checkpointing` is deprecated and will be removed in v6"),
    (FutureWarning, "`is_gradient_checkpointing` is deprecated and will be removed in v6"),
)


def filter_known_warnings() -> None:
    """Ignore the known library warnings (idempotent: a filter added twice is kept once)."""
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)
