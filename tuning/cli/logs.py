"""Where a job's trainer logs are: Cloud Logging for a Cloud Run execution, a file locally.

The API names the execution running a job; the logs themselves never pass through it
(the trainer writes to Cloud Logging, readable with the caller's own Google credentials).
So `tuning logs` prints the Logs Explorer link and the `gcloud` command that reads them for
a deployed job, and the end of the execution's log file for a job on the local stack.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tuning.errors import InvalidRequestError
from tuning.launchers.local import LocalLauncher

_CLOUD_RUN_EXECUTION = re.compile(
    r"^projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/jobs/(?P<job>[^/]+)"
    r"/executions/(?P<execution>[^/]+)$"
)
LOCAL_EXECUTIONS_DIR = "TUNING_EXECUTIONS_DIR"  # exported by `make up` in .local/stack.env


@dataclass(frozen=True)
class CloudLogs:
    project: str
    region: str
    execution: str  # the execution's own id
    query: str

    @property
    def console_url(self) -> str:
        return (
            f"https://console.cloud.google.com/logs/query;query={quote(self.query, safe='')}"
            f"?project={quote(self.project, safe='')}"
        )

    def gcloud_command(self, lines: int) -> str:
        return shlex.join(
            [
                "gcloud",
                "beta",
                "run",
                "jobs",
                "executions",
                "logs",
                "read",
                self.execution,
                f"--region={self.region}",
                f"--project={self.project}",
                f"--limit={lines}",
            ]
        )


def cloud_logs(execution: str) -> CloudLogs | None:
    """The Cloud Logging query for a Cloud Run execution's name; None for another name."""
    found = _CLOUD_RUN_EXECUTION.fullmatch(execution)
    if found is None:
        return None
    query = " AND ".join(
        [
            'resource.type="cloud_run_job"',
            f'resource.labels.job_name="{found["job"]}"',
            f'resource.labels.location="{found["region"]}"',
            f'labels."run.googleapis.com/execution_name"="{found["execution"]}"',
        ]
    )
    return CloudLogs(
        project=found["project"], region=found["region"], execution=found["execution"], query=query
    )


def local_log_file(execution: str, executions_dir: Path) -> Path | None:
    """The local launcher's log of an execution, by the name the job records; None for a
    name the local launcher never gives."""
    try:
        return LocalLauncher(executions_dir).log_path(execution)
    except InvalidRequestError:
        return None


def tail(path: Path, lines: int) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:]
