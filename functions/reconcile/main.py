"""The reconcile function: Cloud Scheduler calls it; no job stays non-terminal forever.

Answers 200 with what it did, errors of single jobs included (each is logged and
recorded on its job); 503 only when some job hit a transient error, the one case in
which the scheduler's early retry can help (every action is idempotent). Run it locally with:

    functions-framework --source functions/reconcile/main.py --target reconcile_jobs
"""

from __future__ import annotations

import flask
import functions_framework

from tuning import reconciliation
from tuning.logs import setup_logging
from tuning.services import Services
from tuning.settings import LauncherSettings

logger = setup_logging("reconcile")
SERVICES = Services(LauncherSettings.from_env())  # clients are created on first use


@functions_framework.http
def reconcile_jobs(request: flask.Request) -> flask.Response:
    """Entry point: one reconcile pass over every non-terminal job."""
    if request.path.rstrip("/") == "/health":
        return flask.jsonify({"status": "ok"})
    report = reconciliation.reconcile_jobs(services=SERVICES)
    logger.info("reconcile pass: %s", report.to_dict())
    return flask.make_response(
        flask.jsonify(report.to_dict()), 503 if report.retry_can_help else 200
    )
