"""Property-based checks of each function against its own /openapi.json (schemathesis).

Schemathesis generates requests from the document; every answer must be a documented
status with a body that matches its schema, and none may be a 5xx. Requests for job
routes use a seeded job's id half of the time, so that they reach past the 404.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.emulator.test_api_stack import ApiStack, seed_request
from tuning.api.routes import operations_of
from tuning.jobs import Artifacts, JobStatus

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# A few hundred requests per function in all, spread over its operations.
REQUESTS_PER_FUNCTION = 300
HEALTH_EXAMPLES = 10


def examples_for(path: str, operations: int) -> int:
    """A handful for /health; the rest of the budget shared by the function's own routes."""
    if path == "/health":
        return HEALTH_EXAMPLES
    return (REQUESTS_PER_FUNCTION - HEALTH_EXAMPLES) // (operations - 1)


def exercise(stack: ApiStack, function: str, job_ids: list[str]) -> int:
    """Run generated requests against one function; returns how many were sent."""
    app = stack.clients[function].application
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    # Schemathesis leaves out the document's own route, /openapi.json.
    served = {(op.method, op.path) for op in operations_of(function)} - {("GET", "/openapi.json")}
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if (result.ok().method.upper(), result.ok().path) in served
    ]
    assert {(op.method.upper(), op.path) for op in operations} == served
    # DELETE last, so that the other operations still find the seeded jobs.
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    sent = 0
    for operation in operations:
        strategy = operation.as_strategy()
        if "{job_id}" in operation.path:
            strategy = st.one_of(
                strategy,
                *(operation.as_strategy(path_parameters={"job_id": job}) for job in job_ids),
            )

        @given(case=strategy)
        @settings(
            max_examples=examples_for(operation.path, len(operations)),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Case) -> None:
            nonlocal sent
            response = case.call()
            sent += 1
            case.validate_response(response, checks=CHECKS)

        check()
    return sent


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> ApiStack:
    stack = ApiStack.start(monkeypatch, tmp_path, unique)
    stack.use_recording_launcher()
    return stack


def seeded_jobs(stack: ApiStack) -> list[str]:
    """A completed job with a GGUF file, and a running one."""
    done = stack.submit(seed_request()).get_json()["job_id"]
    gguf = stack.upload(stack.settings.layout.gguf_uri(done, "q8_0"))
    stack.complete_job(done, Artifacts(gguf_path=gguf))
    stack.make_job("training_running_job", status=JobStatus.TRAINING, execution="executions/e1")
    return [done, "training_running_job"]


@pytest.mark.parametrize("function", ["submit", "status", "delete"])
def test_function_conforms_to_its_document(stack: ApiStack, function: str) -> None:
    job_ids = seeded_jobs(stack)

    sent = exercise(stack, function, job_ids)

    assert sent >= REQUESTS_PER_FUNCTION // 2
