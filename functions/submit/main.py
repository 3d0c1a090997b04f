"""The submit function: `POST /train` queues a fine-tuning job; `POST /train:estimate` is its
dry run.

Answers 202 with the new job's id, or 200 with the same id when an Idempotency-Key
(or the body's request_id) replays an earlier submit. Run it locally with:

    functions-framework --source functions/submit/main.py --target submit_training_job
"""

from __future__ import annotations

import flask
import functions_framework

from tuning import http
from tuning.api.estimate import estimate_train_request
from tuning.api.intake import IDEMPOTENCY_HEADER, accept_train_request


def queue_job(request: flask.Request) -> flask.Response:
    """POST /train."""
    body = http.read_json_body(request)
    accepted = accept_train_request(
        body,
        services=API.services,
        owner=API.caller(request),
        idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
    )
    return http.json_response(accepted.answer, 202 if accepted.created else 200)


def estimate_job(request: flask.Request) -> flask.Response:
    """POST /train:estimate."""
    body = http.read_json_body(request)
    answer = estimate_train_request(body, services=API.services, owner=API.caller(request))
    return http.json_response(answer, 200)


API = http.Api("submit", {"submit_training_job": queue_job, "estimate_training_job": estimate_job})


@functions_framework.http
def submit_training_job(request: flask.Request) -> flask.Response:
    """Entry point: route, call the core, map errors."""
    return API.serve(request)
