"""The delete function: delete a job with everything it left behind, cancel, pause or resume it.

functions-framework --source functions/delete/main.py --target delete_or_cancel_job
"""

from __future__ import annotations

import flask
import functions_framework

from tuning import http
from tuning.api import pausing, removal


def delete_job(request: flask.Request, job_id: str) -> flask.Response:
    """DELETE /jobs/{job_id}."""
    result = removal.delete_job(job_id, services=API.services, owner=API.owner_scope(request))
    return http.json_response(result)


def cancel_job(request: flask.Request, job_id: str) -> flask.Response:
    """POST /jobs/{job_id}/cancel."""
    job = removal.cancel_job(
        job_id,
        services=API.services,
        owner=API.owner_scope(request),
        caller=API.caller(request),
    )
    return http.json_response(job)


def pause_job(request: flask.Request, job_id: str) -> flask.Response:
    """POST /jobs/{job_id}/pause."""
    job = pausing.pause_job(job_id, services=API.services, owner=API.owner_scope(request))
    return http.json_response(job)


def resume_job(request: flask.Request, job_id: str) -> flask.Response:
    """POST /jobs/{job_id}/resume."""
    job = pausing.resume_job(job_id, services=API.services, owner=API.owner_scope(request))
    return http.json_response(job)


API = http.Api(
    "delete",
    {
        "delete_job": delete_job,
        "cancel_job": cancel_job,
        "pause_job": pause_job,
        "resume_job": resume_job,
    },
    settings_class=removal.DeleteSettings,
)


@functions_framework.http
def delete_or_cancel_job(request: flask.Request) -> flask.Response:
    """Entry point: route, call the core, map errors."""
    return API.serve(request)
