"""Every route of the HTTP API, once: which function serves it, what it takes and answers.

The functions bind a handler to each operation id (`tuning.http.Api`), and the
OpenAPI document is built from the same table, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel

from tuning.api.models import (
    CheckpointList,
    CheckpointsQuery,
    DeleteResponse,
    DownloadLinks,
    DownloadQuery,
    EstimateResponse,
    EventList,
    EventsQuery,
    Health,
    JobDetail,
    JobList,
    ListJobsQuery,
    Query,
    SampleList,
    SubmitResponse,
    TierList,
)
from tuning.ids import IDEMPOTENCY_KEY_PATTERN, SEGMENT_PATTERN
from tuning.spec import TrainRequest

EVERY_FUNCTION = "*"
FUNCTIONS = ("submit", "status", "delete")
# What a job route can fail with, besides its own errors.
JOB_ERRORS = (401, 404, 422, 503)


@dataclass(frozen=True)
class Header:
    name: str
    description: str
    pattern: str


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    path: str
    function: str  # the function serving it, or EVERY_FUNCTION
    summary: str
    answers: Mapping[int, tuple[type[BaseModel], str]]  # success status -> (model, description)
    errors: tuple[int, ...] = ()
    query: type[Query] | None = None
    body: type[BaseModel] | None = None
    headers: tuple[Header, ...] = field(default_factory=tuple)

    @property
    def path_parameters(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]


IDEMPOTENCY_KEY = Header(
    name="Idempotency-Key",
    description="Makes a retried submit safe: the same caller and key give the same job, "
    "created once (200 on a replay). A key reused with a different body is a 409. "
    "Takes precedence over the body's `request_id`.",
    pattern=IDEMPOTENCY_KEY_PATTERN,
)
JOB_ID_PATTERN = SEGMENT_PATTERN

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        operation_id="submit_training_job",
        method="POST",
        path="/train",
        function="submit",
        summary="Queue a fine-tuning job.",
        answers={
            202: (SubmitResponse, "The job is queued."),
            200: (SubmitResponse, "A replay: this key already made the job; nothing new."),
        },
        # 404: `training_config.from_job` names no job of the caller's (tuning/lineage.py).
        errors=(400, 401, 404, 409, 413, 415, 422, 503),
        body=TrainRequest,
        headers=(IDEMPOTENCY_KEY,),
    ),
    Operation(
        operation_id="estimate_training_job",
        method="POST",
        path="/train:estimate",
        function="submit",
        summary="A dry run of POST /train that creates nothing: the same body and refusals, "
        "then the dataset validated and its tokens counted as before a GPU (rows, tokens and "
        "truncated rows per split, steps), the tier chosen, and GPU time and cost per tier.",
        answers={200: (EstimateResponse, "What the job would train on, where, how long.")},
        # 422 names the field: a bad row (processed_dataset_id), an unreadable model, ...
        errors=(400, 401, 404, 413, 415, 422, 503),
        body=TrainRequest,
    ),
    Operation(
        operation_id="list_jobs",
        method="GET",
        path="/jobs",
        function="status",
        summary="List jobs, newest first, a page at a time.",
        answers={200: (JobList, "One page of jobs.")},
        errors=(400, 401, 422, 503),
        query=ListJobsQuery,
    ),
    Operation(
        operation_id="download_artifact",
        method="GET",
        path="/jobs/download/{job_id}",
        function="status",
        summary="Short-lived signed URLs for a completed job's GGUF, adapter or merged model, "
        "or for one checkpoint of a job.",
        answers={200: (DownloadLinks, "Signed URLs, valid until `expires_at`.")},
        errors=(*JOB_ERRORS, 409),
        query=DownloadQuery,
    ),
    Operation(
        operation_id="get_job",
        method="GET",
        path="/jobs/{job_id}",
        function="status",
        summary="A job's status, progress, metrics, artifacts and error.",
        answers={200: (JobDetail, "The job.")},
        errors=JOB_ERRORS,
    ),
    Operation(
        operation_id="list_job_events",
        method="GET",
        path="/jobs/{job_id}/events",
        function="status",
        summary="A job's history: state changes, messages, progress and metric points.",
        answers={200: (EventList, "One page of events, oldest first.")},
        errors=(400, *JOB_ERRORS),
        query=EventsQuery,
    ),
    Operation(
        operation_id="list_checkpoints",
        method="GET",
        path="/jobs/{job_id}/checkpoints",
        function="status",
        summary="A job's complete checkpoints, newest first: step, epoch, losses, size. "
        "`GET /jobs/download/{job_id}?checkpoint=STEP` signs one's files.",
        answers={200: (CheckpointList, "One page of checkpoints.")},
        errors=(400, *JOB_ERRORS),
        query=CheckpointsQuery,
    ),
    Operation(
        operation_id="list_samples",
        method="GET",
        path="/jobs/{job_id}/samples",
        function="status",
        summary="The base and the fine-tuned model's answers to the same prompts, side by "
        "side, with their scores where the eval split has references (written at the end of "
        "training; `eval_config.samples`).",
        answers={200: (SampleList, "The samples.")},
        errors=JOB_ERRORS,
    ),
    Operation(
        operation_id="list_tiers",
        method="GET",
        path="/tiers",
        function="status",
        summary="The GPU tiers the caller's jobs may train on, smallest first (what "
        "`compute.tier` may name; tiers the operator keeps for other callers are not listed).",
        answers={200: (TierList, "The tiers.")},
        errors=(401, 422, 503),
    ),
    Operation(
        operation_id="delete_job",
        method="DELETE",
        path="/jobs/{job_id}",
        function="delete",
        summary="Stop the job and delete its files, secrets, events and record.",
        answers={200: (DeleteResponse, "Everything is deleted.")},
        errors=JOB_ERRORS,
    ),
    Operation(
        operation_id="cancel_job",
        method="POST",
        path="/jobs/{job_id}/cancel",
        function="delete",
        summary="Stop the job's execution and keep its record as `cancelled`.",
        answers={200: (JobDetail, "The cancelled job.")},
        errors=(*JOB_ERRORS, 409),
    ),
    Operation(
        operation_id="pause_job",
        method="POST",
        path="/jobs/{job_id}/pause",
        function="delete",
        summary="Pause the job: a training job saves a checkpoint and stops (it is pausing: "
        "`pause_requested_at` set, then `paused`); a job not training yet is paused at once. "
        "Its GPU slot is freed. A repeated pause answers the job as it is.",
        answers={200: (JobDetail, "The job, paused or pausing.")},
        errors=(*JOB_ERRORS, 409),
    ),
    Operation(
        operation_id="resume_job",
        method="POST",
        path="/jobs/{job_id}/resume",
        function="delete",
        summary="Queue a paused job again: the next free GPU slot continues it from its latest "
        "checkpoint. A repeated resume answers the job as it is.",
        answers={200: (JobDetail, "The job, queued again.")},
        errors=(*JOB_ERRORS, 409),
    ),
    Operation(
        operation_id="health",
        method="GET",
        path="/health",
        function=EVERY_FUNCTION,
        summary="Liveness.",
        answers={200: (Health, "The function is up.")},
        errors=(422,),
    ),
    Operation(
        operation_id="openapi",
        method="GET",
        path="/openapi.json",
        function=EVERY_FUNCTION,
        summary="This document.",
        answers={},  # the document describes itself as a plain JSON object
        errors=(422,),
    ),
)


def operations_of(function: str) -> list[Operation]:
    """The operations one function serves, its own first."""
    if function not in FUNCTIONS:
        raise ValueError(f"unknown function {function!r}; one of {FUNCTIONS}")
    own = [op for op in OPERATIONS if op.function == function]
    return own + [op for op in OPERATIONS if op.function == EVERY_FUNCTION]
