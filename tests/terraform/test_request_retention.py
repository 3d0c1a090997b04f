"""terraform/tests/retention.tftest.hcl fails when a training request would linger in Pub/Sub.

As in test_tfcheck.py: copy terraform/, plant one fault, run the checks that can see it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.terraform.test_tfcheck import plant, run_tfcheck, said, step_status


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "    requests      = null\n",
            '    requests      = "86400s"\n',
            "training-requests must not retain acknowledged messages",
        ),
        (
            "  message_retention_duration = local.push_retention[each.key]\n",
            "",
            "The push subscription of training-requests must keep unacknowledged requests",
        ),
        (
            "key => subscription.retained_for_delivery ? "
            '"${min(max(2 * local.push_retry_schedule_seconds[key], 600), 2678400)}s"',
            'key => subscription.retained_for_delivery ? "600s"',
            "A request must outlive its delivery attempts",
        ),
    ],
    ids=["topic-keeps-acknowledged", "subscription-default-7-days", "expires-before-dead-letter"],
)
def test_a_request_kept_longer_or_shorter_than_delivery_needs_fails(
    tfcheck_python: Path, terraform_copy: Path, old: str, new: str, message: str
) -> None:
    plant(terraform_copy, "pubsub.tf", old, new)

    code, output = run_tfcheck(tfcheck_python, terraform_copy, "plan", "checkov")

    assert code != 0
    assert step_status(output, "test") == "FAILED"
    assert said(output, message), output[-4000:]
