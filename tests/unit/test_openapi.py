"""The OpenAPI document: current in the repository, valid, and true to the routes and models."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import schemathesis

from tuning.api.models import JobDetail
from tuning.api.openapi import CHECKED_IN, build_document, main, render
from tuning.api.routes import FUNCTIONS, OPERATIONS, operations_of
from tuning.jobs import JobRecord, JobStatus


def walk(value: Any) -> list[Any]:
    """Every dict and list inside a JSON value."""
    found = [value]
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    )
    for child in children:
        found += walk(child)
    return found


def test_the_checked_in_copy_is_current() -> None:
    # If this fails: python -m tuning.api.openapi (or make openapi), then commit docs/openapi.json.
    assert CHECKED_IN.read_text(encoding="utf-8") == render()
    assert main(["--check"]) == 0


def test_check_fails_on_a_stale_copy(tmp_path: Any) -> None:
    stale = tmp_path / "openapi.json"
    stale.write_text("{}\n")

    assert main(["--check", str(stale)]) == 1
    assert main([str(stale)]) == 0
    assert main(["--check", str(stale)]) == 0


def test_the_document_loads_in_schemathesis_with_every_operation() -> None:
    schema = schemathesis.openapi.from_dict(build_document())

    loaded = {
        (result.ok().method.upper(), result.ok().path) for result in schema.get_all_operations()
    }

    assert loaded == {(operation.method, operation.path) for operation in OPERATIONS}


def test_it_is_openapi_3_1_with_the_seed_routes() -> None:
    document = build_document()

    assert document["openapi"] == "3.1.0"
    for method, path in [
        ("post", "/train"),
        ("get", "/jobs"),
        ("get", "/jobs/{job_id}"),
        ("get", "/jobs/download/{job_id}"),
        ("delete", "/jobs/{job_id}"),
        ("get", "/health"),
    ]:
        assert method in document["paths"][path]


def test_every_reference_resolves_and_every_error_uses_the_error_schema() -> None:
    document = build_document()
    schemas = document["components"]["schemas"]

    references = [
        node["$ref"] for node in walk(document) if isinstance(node, dict) and "$ref" in node
    ]

    assert references
    assert {ref.rsplit("/", 1)[-1] for ref in references} <= set(schemas)
    for path in document["paths"].values():
        for operation in path.values():
            for status, response in operation["responses"].items():
                # Our own answers are JSON; Cloud Run's front end answers 401/403 in HTML.
                json_answer = response["content"].get("application/json")
                assert json_answer is not None or status in {"401", "403"}
                if json_answer is not None and int(status) >= 400:
                    assert json_answer["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
            assert {"401", "403"} <= set(operation["responses"])
            assert "text/html" in operation["responses"]["403"]["content"]


def test_operations_are_tagged_with_the_function_that_serves_them() -> None:
    document = build_document()

    for function in FUNCTIONS:
        tagged = {
            (method.upper(), path)
            for path, item in document["paths"].items()
            for method, operation in item.items()
            if function in operation["tags"]
        }
        assert tagged == {(op.method, op.path) for op in operations_of(function)}


def test_no_response_can_carry_secrets() -> None:
    document = build_document()
    schemas = document["components"]["schemas"]

    properties = {
        name
        for model in schemas.values()
        for name in model.get("properties", {})
        if model is not schemas["TrainRequest"] and model is not schemas["WandbConfig"]
    }

    assert not {"secret_references", "hf_token", "api_key", "config_uri"} & properties
    hf_token = schemas["TrainRequest"]["properties"]["hf_token"]
    assert "writeOnly" in json.dumps(hf_token)


def test_a_job_detail_never_holds_the_records_secret_references() -> None:
    now = datetime.now(UTC)
    record = JobRecord(
        job_id="job-1",
        job_name="job-1",
        base_model_id="google/gemma-3-1b-it",
        processed_dataset_id="ds",
        created_at=now,
        updated_at=now,
        status=JobStatus.QUEUED,
        config_uri="gs://config/configs/job-1.json",
        secret_references={"hf_token": "projects/p/secrets/tuning-job-1-hf_token/versions/1"},
    )

    shown = JobDetail.from_record(record).model_dump_json()

    assert "secrets/" not in shown
    assert "configs/" not in shown
