"""tuning.http: routing, body and query parsing, caller identity and the error mapping."""

from __future__ import annotations

import json
import logging
from typing import Any

import flask
import pytest

from tuning.api.models import DownloadQuery, ListJobsQuery
from tuning.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    TransientError,
    TuningError,
)
from tuning.http import (
    MAX_BODY_BYTES,
    Api,
    MalformedBodyError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    UnauthenticatedError,
    UnsupportedMediaTypeError,
    bind_routes,
    error_response,
    find_route,
    read_json_body,
    read_query,
)
from tuning.settings import SettingsError

APP = flask.Flask(__name__)


def body_of(data: bytes | str, content_type: str | None = "application/json") -> Any:
    headers = {"Content-Type": content_type} if content_type else {}
    with APP.test_request_context("/train", method="POST", data=data, headers=headers):
        return read_json_body(flask.request)


def query_of(query_string: str, model: type[Any]) -> Any:
    with APP.test_request_context(f"/jobs?{query_string}"):
        return read_query(flask.request, model)


STATUS_ROUTES = bind_routes(
    "status",
    {
        name: (lambda request, **kwargs: flask.Response())
        for name in (
            "list_jobs",
            "get_job",
            "list_job_events",
            "list_checkpoints",
            "list_samples",
            "download_artifact",
            "list_tiers",
            "health",
            "openapi",
        )
    },
)


# Routing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "operation", "params"),
    [
        ("GET", "/jobs", "list_jobs", {}),
        ("GET", "/jobs/", "list_jobs", {}),
        ("HEAD", "/jobs", "list_jobs", {}),
        ("GET", "/jobs/job-1", "get_job", {"job_id": "job-1"}),
        ("GET", "/jobs/job-1/events", "list_job_events", {"job_id": "job-1"}),
        ("GET", "/jobs/download/job-1", "download_artifact", {"job_id": "job-1"}),
        # The seed's download route wins over a job that would be called "download".
        ("GET", "/jobs/download/events", "download_artifact", {"job_id": "events"}),
        ("GET", "/health", "health", {}),
    ],
)
def test_routes_match_by_method_and_path(
    method: str, path: str, operation: str, params: dict[str, str]
) -> None:
    route, found = find_route(method, path, STATUS_ROUTES)

    assert (route.operation.operation_id, found) == (operation, params)


def test_an_unknown_path_is_404_and_a_wrong_method_405_naming_the_allowed() -> None:
    with pytest.raises(NotFoundError):
        find_route("GET", "/jobs/a/b/c", STATUS_ROUTES)
    with pytest.raises(MethodNotAllowedError) as caught:
        find_route("DELETE", "/jobs/job-1", STATUS_ROUTES)

    assert caught.value.allowed == ["GET"]
    assert error_response(caught.value).headers["Allow"] == "GET"


def test_binding_needs_exactly_the_functions_operations() -> None:
    with pytest.raises(TypeError, match="get_job"):
        bind_routes("status", {"list_jobs": lambda request: flask.Response()})
    with pytest.raises(ValueError, match="unknown function"):
        bind_routes("train", {})


# Bodies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/merge+json"],
)
def test_json_bodies_parse(content_type: str) -> None:
    assert body_of(b'{"a": [1, 2.5, null]}', content_type) == {"a": [1, 2.5, None]}


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
def test_other_media_types_are_415(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaTypeError):
        body_of(b"{}", content_type)


@pytest.mark.parametrize("data", [b"", b"{", b'{"a": 1,}', b"NaN", b'{"a": Infinity}', b"\xff\xfe"])
def test_malformed_json_is_400(data: bytes) -> None:
    with pytest.raises(MalformedBodyError) as caught:
        body_of(data)

    assert caught.value.http_status == 400
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_a_body_over_the_limit_is_413() -> None:
    with pytest.raises(PayloadTooLargeError):
        body_of(b"[" + b"1," * MAX_BODY_BYTES + b"1]")


def test_a_malformed_body_never_carries_the_token_in_the_error() -> None:
    secret = "hf_" + "S" * 30
    with pytest.raises(MalformedBodyError) as caught:
        body_of(f'{{"hf_token": "{secret}",'.encode())

    assert secret not in json.dumps(error_response(caught.value).get_json())


# Queries ----------------------------------------------------------------------


def test_query_values_are_validated_by_the_model() -> None:
    query = query_of("limit=5&status=failed&page_token=", ListJobsQuery)

    assert (query.limit, query.status.value, query.page_token) == (5, "failed", None)
    assert query_of("", DownloadQuery).kind.value == "gguf"  # the seed's default artifact
    assert query_of("checkpoint=7", DownloadQuery).kind.value == "checkpoint"


@pytest.mark.parametrize(
    ("query_string", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=1.5", "limit"),
        ("status=running", "status"),
        ("limit=1&limit=2", "limit"),
        ("page_size=10", "page_size"),
    ],
)
def test_bad_query_values_name_the_parameter(query_string: str, field: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        query_of(query_string, ListJobsQuery)

    assert caught.value.field == field


def test_quantization_is_only_for_gguf() -> None:
    assert query_of("quantization=q4_k_m", DownloadQuery).quantization.value == "q4_k_m"
    with pytest.raises(InvalidRequestError) as caught:
        query_of("artifact=adapter&quantization=q4_k_m", DownloadQuery)

    assert caught.value.field == "quantization"


# Errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (MalformedBodyError("bad"), 400, "invalid_json"),
        (UnauthenticatedError("who"), 401, "unauthenticated"),
        (NotFoundError("none", field="job_id"), 404, "not_found"),
        (ConflictError("state"), 409, "failed_precondition"),
        (PayloadTooLargeError("big"), 413, "payload_too_large"),
        (UnsupportedMediaTypeError("json"), 415, "unsupported_media_type"),
        (InvalidRequestError("x", field="limit"), 422, "invalid_argument"),
        (TransientError("later"), 503, "unavailable"),
    ],
)
def test_each_error_maps_to_its_status_and_body(error: TuningError, status: int, code: str) -> None:
    response = error_response(error)

    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == code
    assert response.get_json()["error"]["message"] == error.message
    assert ("Retry-After" in response.headers) == (status == 503)


def test_several_problems_are_listed_under_details() -> None:
    error = InvalidRequestError(
        "a: bad",
        field="a",
        problems=[{"field": "a", "message": "bad"}, {"field": "b", "message": "worse"}],
    )

    body = error_response(error).get_json()

    assert body["error"]["details"][1] == {"field": "b", "message": "worse"}


def crash(request: flask.Request) -> flask.Response:
    raise RuntimeError("secret internals: hf_NeverShowThisToTheCaller1234567890")


def misconfigured(request: flask.Request) -> flask.Response:
    raise SettingsError("GCS_MODELS_BUCKET_NAME missing")


class Remember(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("handler", [crash, misconfigured])
def test_bugs_are_logged_and_answered_500_without_details(handler: Any) -> None:
    api = Api("submit", {"submit_training_job": handler, "estimate_training_job": handler})
    remember = Remember()
    api.logger.addHandler(remember)

    try:
        with APP.test_request_context("/train", method="POST", json={}):
            response = api.serve(flask.request)
    finally:
        api.logger.removeHandler(remember)

    assert response.status_code == 500
    assert response.get_json() == {
        "error": {"code": "internal", "message": "internal error; see the function's logs"}
    }
    assert [record.levelno for record in remember.records] == [logging.ERROR]
    # The traceback is in the log (the redacting filter folds it into the message).
    logged = remember.records[0]
    assert logged.exc_info is not None or "Traceback" in logged.getMessage()


def test_health_and_openapi_need_no_settings() -> None:
    handlers = ("delete_job", "cancel_job", "pause_job", "resume_job")
    api = Api("delete", dict.fromkeys(handlers, crash))

    with APP.test_request_context("/health"):
        health = api.serve(flask.request)
    with APP.test_request_context("/openapi.json"):
        document = api.serve(flask.request)

    assert health.get_json() == {"status": "ok", "function": "delete"}
    assert document.get_json()["openapi"] == "3.1.0"


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_deeply_nested_json_is_a_400_not_a_crash(opening: str) -> None:
    nested = opening * 200_000  # past the decoder's recursion limit; well under the size limit

    with pytest.raises(MalformedBodyError, match="nested too deeply"):
        body_of(nested)
