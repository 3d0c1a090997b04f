"""The example DPO job run as its comments say: rows uploaded and job submitted by the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import LocalStack

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_dpo_example_uploads_trains_and_completes(local_stack: LocalStack) -> None:
    rows = str(EXAMPLES / "data" / "preferences.jsonl")
    local_stack.cli("datasets", "upload", rows, "--id", "my-preferences", "--trainer-type", "dpo")

    job_id = local_stack.cli("submit", str(EXAMPLES / "dpo.yaml")).stdout.strip()
    watched = local_stack.cli("watch", job_id, "--timeout", "300", check=False, timeout=320)

    job = json.loads(local_stack.cli("--json", "status", job_id).stdout)
    assert watched.returncode == 0, (watched.stdout[-2000:], job.get("error"))
    assert job["status"] == "completed"
    assert job["metrics"]["train_loss"] > 0
    assert job["metrics"]["rewards_margins"] is not None  # DPO's own metrics, from TRL's logs
    assert job["artifacts"]["adapter_path"].endswith(f"/{job_id}/")
