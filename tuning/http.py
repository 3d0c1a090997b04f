"""What the three HTTP functions share: routing, parsing, identity and the one error mapping.

Every error becomes `{"error": {"code", "message", "field"?}}` with the status its
class names (`TuningError.http_status`); anything unexpected is logged and answered
500 without details, because a 5xx other than 503 is a bug to fix, not a message.

Identity: `tuning.identity` reads the caller from the token Cloud Run's front end checked
(`X-Serverless-Authorization` when present, else `Authorization`), as it does locally
behind `tuning.local.front_door`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import flask
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

from tuning.api.models import Health, NoQuery
from tuning.api.routes import Operation, operations_of
from tuning.errors import (
    InvalidRequestError,
    NotFoundError,
    TransientError,
    TuningError,
    UnauthenticatedError,
)
from tuning.identity import GoogleIdTokenVerifier, TokenVerifier, caller_identity
from tuning.logs import job_context, setup_logging
from tuning.services import Services
from tuning.settings import ApiSettings
from tuning.spec import describe_validation_error

MAX_BODY_BYTES = 1024 * 1024  # a TrainRequest is a few KiB; nothing legitimate is near this
RETRY_AFTER_SECONDS = "5"
# application/json and the structured-syntax types (application/problem+json, ...).
_JSON_MEDIA_TYPE = re.compile(r"^application/(?:[a-z0-9.+-]+\+)?json$")

Q = TypeVar("Q", bound=BaseModel)
Handler = Callable[..., flask.Response]


class MalformedBodyError(TuningError):
    code = "invalid_json"
    http_status = 400


class MethodNotAllowedError(TuningError):
    code = "method_not_allowed"
    http_status = 405

    def __init__(self, message: str, *, allowed: Sequence[str]) -> None:
        super().__init__(message)
        self.allowed = sorted(allowed)


class PayloadTooLargeError(TuningError):
    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaTypeError(TuningError):
    code = "unsupported_media_type"
    http_status = 415


# Responses -------------------------------------------------------------------


def json_response(
    body: BaseModel | Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> flask.Response:
    """A JSON answer; never cached, since it describes jobs that change or signed URLs."""
    data = body.model_dump_json() if isinstance(body, BaseModel) else json.dumps(dict(body))
    response = flask.Response(data, status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(headers or {})
    return response


def error_response(error: TuningError) -> flask.Response:
    """The one mapping from the package's errors to HTTP answers."""
    headers: dict[str, str] = {}
    if isinstance(error, TransientError):
        headers["Retry-After"] = RETRY_AFTER_SECONDS
    if isinstance(error, MethodNotAllowedError):
        headers["Allow"] = ", ".join(error.allowed)
    return json_response({"error": error.to_dict()}, error.http_status, headers)


def http_exception_response(error: HTTPException) -> flask.Response:
    """werkzeug's own errors (a body cut short, a path its router refuses) in our JSON shape."""
    status = error.code or 400
    code = re.sub(r"\W+", "_", (error.name or "bad request").lower()).strip("_")
    return json_response({"error": {"code": code, "message": error.name}}, status)


def internal_error_response() -> flask.Response:
    body = {"error": {"code": "internal", "message": "internal error; see the function's logs"}}
    return json_response(body, 500)


# Routing -------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """An operation of the API bound to the function's handler for it."""

    operation: Operation
    handler: Handler

    def match(self, path: str) -> dict[str, str] | None:
        found = _path_regex(self.operation.path).fullmatch(path)
        return found.groupdict() if found else None


@lru_cache(maxsize=64)
def _path_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    # re.split alternates literal text and parameter names.
    pattern = "".join(
        re.escape(part) if index % 2 == 0 else f"(?P<{part}>[^/]+)"
        for index, part in enumerate(parts)
    )
    return re.compile(pattern)


def find_route(method: str, path: str, routes: Sequence[Route]) -> tuple[Route, dict[str, str]]:
    """The first route matching the path and method; 404 or 405 otherwise."""
    path = path.rstrip("/") or "/"
    method = "GET" if method == "HEAD" else method  # werkzeug drops the body of a HEAD answer
    allowed = []
    for route in routes:
        params = route.match(path)
        if params is None:
            continue
        if route.operation.method == method:
            return route, params
        allowed.append(route.operation.method)
    if allowed:
        raise MethodNotAllowedError(f"{method} is not allowed on {path}", allowed=allowed)
    raise NotFoundError("no such route; see /openapi.json")


def bind_routes(function: str, handlers: Mapping[str, Handler]) -> list[Route]:
    """A handler for each of the function's operations, by operation id; no more, no less."""
    operations = operations_of(function)
    expected = {operation.operation_id for operation in operations}
    if set(handlers) != expected:
        raise TypeError(
            f"{function}: handlers for {sorted(set(handlers))}, operations {sorted(expected)}"
        )
    return [Route(operation, handlers[operation.operation_id]) for operation in operations]


# Parsing -------------------------------------------------------------------


def read_json_body(request: flask.Request, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """The body as JSON data: 415 unless JSON, 413 when too large, 400 when malformed."""
    if not _JSON_MEDIA_TYPE.fullmatch(request.mimetype or ""):
        raise UnsupportedMediaTypeError("send the body as JSON with Content-Type: application/json")
    if request.mimetype_params.get("charset", "utf-8").lower() not in {"utf-8", "utf8"}:
        raise UnsupportedMediaTypeError("send the JSON body as UTF-8")
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLargeError(f"the body is larger than {max_bytes} bytes")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLargeError(f"the body is larger than {max_bytes} bytes")
    problem = None
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        problem = "the body is not UTF-8 text"
    except ValueError as error:
        problem = f"the body is not valid JSON: {getattr(error, 'msg', error)}"
    except RecursionError:
        problem = "the body is nested too deeply to be a request"
    # Raised outside the handler: the decode error holds the raw body, hf_token included.
    raise MalformedBodyError(problem)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_query(request: flask.Request, model: type[Q]) -> Q:
    """Query parameters validated by `model`; an empty value counts as absent."""
    values: dict[str, str] = {}
    for key in request.args:
        given = request.args.getlist(key)
        if len(given) > 1:
            raise InvalidRequestError(f"{key}: give this parameter once", field=key)
        if given[0] != "":
            values[key] = given[0]
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise describe_validation_error(error) from None


# The function's process ----------------------------------------------------


class Api:
    """One function's process: its routes, its settings and adapters (built at the first
    request), and the request loop that parses, calls the handler and maps errors.

    Handlers are called as `handler(request, **path_parameters)`, plus `query=` (the
    validated query model) for operations that take query parameters.
    """

    def __init__(
        self,
        function: str,
        handlers: Mapping[str, Handler],
        settings_class: type[ApiSettings] = ApiSettings,
    ) -> None:
        self.function = function
        self.logger = setup_logging(f"functions.{function}")
        self.routes = bind_routes(
            function, {**handlers, "health": self._health, "openapi": self._openapi}
        )
        self._settings_class = settings_class
        self._services: Services | None = None
        self._verifier: TokenVerifier | None = None
        self._lock = threading.Lock()
        if flask.has_app_context():
            # functions-framework loads the function's module inside the context of the
            # app it builds, and answers a few requests before the function sees them, in
            # HTML: /robots.txt, /favicon.ico, paths its router refuses (one holding a
            # newline). Its app answers those in our JSON shape too.
            flask.current_app.register_error_handler(HTTPException, http_exception_response)

    @property
    def services(self) -> Services:
        # Lazily, so that importing the module (and the tests' set-up) reads no environment.
        with self._lock:
            if self._services is None:
                self._services = Services(self._settings_class.from_env())
            return self._services

    @property
    def settings(self) -> ApiSettings:
        settings = self.services.settings
        assert isinstance(settings, ApiSettings)
        return settings

    def use(self, services: Services) -> None:
        """Serve with these adapters (tests inject them; production builds its own)."""
        with self._lock:
            self._services = services

    def caller(self, request: flask.Request) -> str | None:
        """Who calls; 401 when owner scoping is on and nobody can be named."""
        settings = self.settings
        identity = caller_identity(request.headers, verifier=self.token_verifier)
        if identity is None and settings.owner_scoping:
            raise UnauthenticatedError("no caller identity: call with a Google ID token")
        return identity

    @property
    def token_verifier(self) -> TokenVerifier | None:
        """Checks tokens Cloud Run did not (ID_TOKEN_AUDIENCES); None: such tokens are refused."""
        audiences = self.settings.id_token_audiences  # outside the lock: it takes the lock
        with self._lock:
            if self._verifier is None and audiences:
                self._verifier = GoogleIdTokenVerifier(audiences)
            return self._verifier

    def owner_scope(self, request: flask.Request) -> str | None:
        """The owner whose jobs the caller may see; None means every job."""
        caller = self.caller(request)
        return caller if self.settings.owner_scoping else None

    def serve(self, request: flask.Request) -> flask.Response:
        """Route the request, run its handler and map whatever it raises."""
        try:
            route, params = find_route(request.method, request.path, self.routes)
            query = read_query(request, route.operation.query or NoQuery)
            arguments: dict[str, Any] = dict(params)
            if route.operation.query is not None:
                arguments["query"] = query
            with job_context(params.get("job_id")):
                return route.handler(request, **arguments)
        except TuningError as error:
            if error.http_status >= 500 and not isinstance(error, TransientError):
                self.logger.exception("%s %s failed", request.method, request.path)
                return internal_error_response()
            return error_response(error)
        except HTTPException as error:  # e.g. the client went away mid-body
            return http_exception_response(error)
        except Exception:
            # The HTTP boundary: log the bug with its traceback, tell the caller nothing of it.
            self.logger.exception("%s %s failed unexpectedly", request.method, request.path)
            return internal_error_response()

    def _health(self, request: flask.Request) -> flask.Response:
        return json_response(Health(function=self.function))

    def _openapi(self, request: flask.Request) -> flask.Response:
        from tuning.api.openapi import openapi_document

        return json_response(openapi_document())
