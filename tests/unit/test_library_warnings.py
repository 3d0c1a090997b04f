"""The trainer filters the library warnings every job would print, and only those."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import warnings
from trainer.library_warnings import filter_known_warnings
filter_known_warnings()
filter_known_warnings()  # the trainer may configure twice (follower, retries): still one filter
message = "`{old}` is deprecated and will be removed in v6. Use `{new}` instead."
for old in ("gradient_checkpointing", "is_gradient_checkpointing"):
    new = old.replace("gradient", "activation")
    warnings.warn(message.format(old=old, new=new), FutureWarning)
warnings.warn("something the job's owner should see", FutureWarning)
print(sum("gradient_checkpointing" in str(f) for f in warnings.filters))
"""


def test_known_deprecations_are_silent_and_others_still_show() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", PROGRAM],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert "gradient_checkpointing" not in result.stderr
    assert "something the job's owner should see" in result.stderr
    assert result.stdout.strip() == "2"
