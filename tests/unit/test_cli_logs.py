"""`tuning logs`: where a job's trainer logs are, by the execution name its record holds."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from tuning.cli.logs import cloud_logs, local_log_file

EXECUTION = (
    "projects/ml-team/locations/us-central1/jobs/gemma-trainer/executions/gemma-trainer-x7k2p"
)


def test_a_cloud_run_execution_has_a_logging_query_link_and_command() -> None:
    logs = cloud_logs(EXECUTION)

    assert logs is not None and logs.project == "ml-team"
    assert logs.query == (
        'resource.type="cloud_run_job" AND resource.labels.job_name="gemma-trainer" AND '
        'resource.labels.location="us-central1" AND '
        'labels."run.googleapis.com/execution_name"="gemma-trainer-x7k2p"'
    )
    assert logs.console_url.startswith("https://console.cloud.google.com/logs/query;query=")
    assert unquote(logs.console_url).endswith(f"{logs.query}?project=ml-team")
    assert logs.gcloud_command(50) == (
        "gcloud beta run jobs executions logs read gemma-trainer-x7k2p "
        "--region=us-central1 --project=ml-team --limit=50"
    )


def test_a_local_execution_has_its_log_file_and_nothing_else_matches(tmp_path: Path) -> None:
    assert local_log_file("local/executions/local-0123456789ab", tmp_path) == (
        tmp_path / "local-0123456789ab" / "execution.log"
    )
    assert local_log_file("local/executions/../../etc", tmp_path) is None
    assert local_log_file(EXECUTION, tmp_path) is None
    assert cloud_logs("local/executions/local-0123456789ab") is None
