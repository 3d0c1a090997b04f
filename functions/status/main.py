"""The status function: list jobs, show one, page its events and checkpoints, show its
sample answers, sign download URLs, list tiers.

functions-framework --source functions/status/main.py --target serve_job_status
"""

from __future__ import annotations

import flask
import functions_framework

from tuning import http
from tuning.api import queries
from tuning.api.models import (
    CheckpointsQuery,
    DownloadQuery,
    EventsQuery,
    ListJobsQuery,
    TierList,
    TierView,
)
from tuning.tiers import by_capacity, tiers_open_to


def list_jobs(request: flask.Request, query: ListJobsQuery) -> flask.Response:
    """GET /jobs."""
    page = queries.list_jobs(
        services=API.services,
        owner=API.owner_scope(request),
        status=query.status,
        limit=query.limit,
        page_token=query.page_token,
    )
    return http.json_response(page)


def get_job(request: flask.Request, job_id: str) -> flask.Response:
    """GET /jobs/{job_id}."""
    job = queries.get_job(job_id, services=API.services, owner=API.owner_scope(request))
    return http.json_response(job)


def list_job_events(request: flask.Request, job_id: str, query: EventsQuery) -> flask.Response:
    """GET /jobs/{job_id}/events."""
    page = queries.list_job_events(
        job_id,
        services=API.services,
        owner=API.owner_scope(request),
        limit=query.limit,
        page_token=query.page_token,
    )
    return http.json_response(page)


def list_checkpoints(
    request: flask.Request, job_id: str, query: CheckpointsQuery
) -> flask.Response:
    """GET /jobs/{job_id}/checkpoints."""
    page = queries.list_checkpoints(
        job_id,
        services=API.services,
        owner=API.owner_scope(request),
        limit=query.limit,
        page_token=query.page_token,
    )
    return http.json_response(page)


def list_samples(request: flask.Request, job_id: str) -> flask.Response:
    """GET /jobs/{job_id}/samples."""
    samples = queries.list_samples(job_id, services=API.services, owner=API.owner_scope(request))
    return http.json_response(samples)


def download_artifact(request: flask.Request, job_id: str, query: DownloadQuery) -> flask.Response:
    """GET /jobs/download/{job_id}?artifact=gguf|adapter|merged, or ?checkpoint=STEP."""
    links = queries.download_links(
        job_id,
        services=API.services,
        owner=API.owner_scope(request),
        artifact=query.kind,
        quantization=query.quantization,
        checkpoint=query.checkpoint,
        ttl_seconds=API.settings.signed_url_ttl_seconds,
    )
    return http.json_response(links)


def list_tiers(request: flask.Request) -> flask.Response:
    """GET /tiers: the deployment's tiers open to the caller (no job of anyone's)."""
    open_tiers = tiers_open_to(API.caller(request), API.settings.tiers)
    tiers = [TierView.of(tier) for tier in by_capacity(open_tiers)]
    return http.json_response(TierList(tiers=tiers))


API = http.Api(
    "status",
    {
        "list_tiers": list_tiers,
        "list_jobs": list_jobs,
        "get_job": get_job,
        "list_job_events": list_job_events,
        "list_checkpoints": list_checkpoints,
        "list_samples": list_samples,
        "download_artifact": download_artifact,
    },
)


@functions_framework.http
def serve_job_status(request: flask.Request) -> flask.Response:
    """Entry point: route, call the core, map errors."""
    return API.serve(request)
