"""The OpenAPI 3.1 document of the whole API, generated from the routes and pydantic models.

Every function serves it at `/openapi.json`; a copy is checked in at docs/openapi.json:

    python -m tuning.api.openapi            # rewrite docs/openapi.json
    python -m tuning.api.openapi --check    # exit 1 when the copy is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from tuning.api.models import ErrorResponse, Query
from tuning.api.routes import EVERY_FUNCTION, FUNCTIONS, JOB_ID_PATTERN, OPERATIONS, Operation

API_VERSION = "1.0.0"
CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
SECURITY_SCHEME = "google_id_token"
REF_TEMPLATE = "#/components/schemas/{model}"

ERRORS = {
    400: "The body is not valid JSON, or `page_token` is not one this API issued.",
    401: "Owner scoping is on and the request names no caller.",
    404: "No such job (or, with owner scoping, not the caller's), or no such artifact.",
    409: "The job is in the wrong state for this, or the idempotency key was used for "
    "another request.",
    413: "The body is larger than 1 MiB.",
    415: "The body is not `application/json` (UTF-8).",
    422: "A field or parameter is invalid; `error.field` names it.",
    503: "A dependency is unavailable; nothing half-done remains. Retry after `Retry-After` s.",
}
# What Google's front end answers before a request reaches a function (tuning/identity.py
# and docs/architecture.md cite the Cloud Run pages): an HTML error page, never our JSON.
FRONT_END_ERRORS = {
    401: "Cloud Run's front end: the ID token is invalid, expired or for another URL.",
    403: "Cloud Run's front end: no ID token, or the caller may not invoke this function "
    "(roles/run.invoker).",
}
DESCRIPTION = """\
Fine-tune Gemma models: submit a job, follow it, download its artifacts, cancel or
delete it. Compatible with the seed training service's routes and fields.

Three Cloud Functions serve the API, each at its own URL: **submit** (`POST /train`),
**status** (the `GET /jobs...` routes) and **delete** (`DELETE /jobs/{job_id}`,
`POST /jobs/{job_id}/cancel`); each also answers `/health` and this document. They are
private: call them with a Google ID token (`gcloud auth print-identity-token`).
Errors are `{"error": {"code", "message", "field"?}}`."""


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The document (built once per process; do not modify it)."""
    return build_document()


def build_document() -> dict[str, Any]:
    schemas, refs = _component_schemas()
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(
            operation, schemas, refs
        )
    for operation in OPERATIONS:  # query models became parameters; they are not bodies
        if operation.query is not None:
            schemas.pop(operation.query.__name__, None)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Gemma fine-tuning API",
            "version": API_VERSION,
            "description": DESCRIPTION,
        },
        "tags": [
            {"name": name, "description": f"Served by the {name} function."} for name in FUNCTIONS
        ],
        "security": [{SECURITY_SCHEME: []}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A Google ID token; IAM checks it before the function runs.",
                }
            },
        },
    }


Key = tuple[type[BaseModel], Literal["validation", "serialization"]]


def _component_schemas() -> tuple[dict[str, Any], dict[Key, dict[str, Any]]]:
    """Every model's JSON schema under components/schemas, and each model's $ref."""
    wanted: dict[Key, None] = {(ErrorResponse, "serialization"): None}
    for operation in OPERATIONS:
        for model, _ in operation.answers.values():
            wanted[(model, "serialization")] = None
        for given in (operation.body, operation.query):
            if given is not None:
                wanted[(given, "validation")] = None
    inputs: list[tuple[type[BaseModel], JsonSchemaMode]] = list(wanted)
    refs, document = models_json_schema(inputs, ref_template=REF_TEMPLATE)
    return dict(document.get("$defs", {})), dict(refs)  # type: ignore[arg-type]


def _operation(
    operation: Operation, schemas: dict[str, Any], refs: dict[Key, dict[str, Any]]
) -> dict[str, Any]:
    tags = list(FUNCTIONS) if operation.function == EVERY_FUNCTION else [operation.function]
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": JOB_ID_PATTERN},
        }
        for name in operation.path_parameters
    ]
    if operation.query is not None:
        parameters += _query_parameters(operation.query, schemas)
    parameters += [
        {
            "name": header.name,
            "in": "header",
            "required": False,
            "description": header.description,
            "schema": {"type": "string", "pattern": header.pattern},
        }
        for header in operation.headers
    ]
    spec: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": tags,
    }
    if parameters:
        spec["parameters"] = parameters
    if operation.body is not None:
        spec["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(operation.body, "validation")]}},
        }
    spec["responses"] = _responses(operation, refs)
    return spec


def _responses(operation: Operation, refs: dict[Key, dict[str, Any]]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, (model, description) in sorted(operation.answers.items()):
        responses[str(status)] = {
            "description": description,
            "content": {"application/json": {"schema": refs[(model, "serialization")]}},
        }
    if not operation.answers:  # /openapi.json: this document
        responses["200"] = {
            "description": "The OpenAPI document.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    error_schema = refs[(ErrorResponse, "serialization")]
    for status in sorted(operation.errors):
        responses[str(status)] = {
            "description": ERRORS[status],
            "content": {"application/json": {"schema": error_schema}},
        }
        if status == 503:
            responses[str(status)]["headers"] = {
                "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}
            }
    for status, description in FRONT_END_ERRORS.items():
        answer = responses.setdefault(str(status), {"description": description, "content": {}})
        if answer["description"] != description:
            answer["description"] = (
                f"{answer['description']} Or {description[0].lower()}{description[1:]}"
            )
        answer["content"]["text/html"] = {"schema": {"type": "string"}}
    return responses


def _query_parameters(model: type[Query], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    schema = schemas[model.__name__]
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        # Optional fields are `anyOf: [X, null]`; a query parameter is absent, never null.
        options = [option for option in prop.pop("anyOf", []) if option != {"type": "null"}]
        if len(options) == 1:
            prop.update(options[0])
        if "default" in prop and prop["default"] is None:
            del prop["default"]
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        if description:
            parameter["description"] = description
        parameter["schema"] = prop
        parameters.append(parameter)
    return parameters


def render() -> str:
    return json.dumps(build_document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=CHECKED_IN)
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.path.read_text(encoding="utf-8") if args.path.is_file() else ""
        if current != text:
            print(f"{args.path} is out of date: run python -m tuning.api.openapi", file=sys.stderr)
            return 1
        return 0
    args.path.parent.mkdir(parents=True, exist_ok=True)
    args.path.write_text(text, encoding="utf-8")
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
