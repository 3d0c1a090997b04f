"""The status function's core: list jobs, show one, page its events and checkpoints, show
its sample answers, sign its downloads.

`owner` is the caller when owner scoping is on (other callers' jobs then answer
404, as if they did not exist) and None when every job is visible.
"""

from __future__ import annotations

import datetime
import logging

from tuning.api.models import (
    ArtifactKind,
    CheckpointList,
    CheckpointView,
    DownloadFile,
    DownloadLinks,
    EventList,
    JobDetail,
    JobList,
    JobSummary,
    SampleList,
)
from tuning.checkpoints import complete_steps, is_training_state, read_marker
from tuning.errors import ConflictError, NotFoundError
from tuning.gcp.firestore import PageTokenError
from tuning.ids import is_segment_id
from tuning.jobs import JobRecord, JobStatus, utcnow
from tuning.samples import MAX_SAMPLES_FILE_BYTES, decode_lines
from tuning.services import Services
from tuning.spec import GgufQuantization

logger = logging.getLogger(__name__)


def visible_job(job_id: str, *, services: Services, owner: str | None) -> JobRecord:
    """The job if it exists and the caller may see it; NotFoundError otherwise."""
    job = services.jobs.find(job_id) if is_segment_id(job_id) else None
    if job is None or (owner is not None and job.owner != owner):
        raise NotFoundError("job not found", field="job_id")
    return job


def list_jobs(
    *,
    services: Services,
    owner: str | None,
    status: JobStatus | None,
    limit: int,
    page_token: str | None,
) -> JobList:
    """One page of jobs, newest first."""
    page = services.jobs.list_jobs(owner=owner, status=status, limit=limit, page_token=page_token)
    return JobList(
        jobs=[JobSummary.from_record(job) for job in page.jobs],
        next_page_token=page.next_page_token,
    )


def get_job(job_id: str, *, services: Services, owner: str | None) -> JobDetail:
    return JobDetail.from_record(visible_job(job_id, services=services, owner=owner))


def list_job_events(
    job_id: str, *, services: Services, owner: str | None, limit: int, page_token: str | None
) -> EventList:
    """One page of the job's applied events, oldest first (a loss curve reads in order)."""
    visible_job(job_id, services=services, owner=owner)
    page = services.jobs.list_events(job_id, limit=limit, page_token=page_token)
    return EventList.model_validate(
        {"events": page.events, "next_page_token": page.next_page_token}
    )


def list_checkpoints(
    job_id: str, *, services: Services, owner: str | None, limit: int, page_token: str | None
) -> CheckpointList:
    """One page of the job's complete checkpoints, newest first. The page token is the step
    the previous page ended at; only the job's own checkpoint folder is listed."""
    visible_job(job_id, services=services, owner=owner)
    below = _step_cursor(page_token)
    layout = services.settings.layout
    root = layout.checkpoints_prefix(job_id)
    steps = [s for s in reversed(complete_steps(services.storage.list(root), root)) if s < below]
    views = []
    for step in steps[:limit]:
        try:
            marker = read_marker(services.storage, layout, job_id, step)
        except NotFoundError:  # deleted by the trainer's retention since the listing
            continue
        views.append(CheckpointView.model_validate(marker.model_dump(exclude={"files"})))
    more = len(steps) > limit
    return CheckpointList(
        checkpoints=views, next_page_token=str(steps[limit - 1]) if more else None
    )


def list_samples(job_id: str, *, services: Services, owner: str | None) -> SampleList:
    """The job's sample answers (only its own evaluations folder is read); NotFoundError
    while it has none: not trained yet, samples off, or a multi-GPU or vision job."""
    job = visible_job(job_id, services=services, owner=owner)
    uri = services.settings.layout.samples_uri(job_id)
    try:
        data = services.storage.download_bytes(uri)
    except NotFoundError:
        raise NotFoundError(
            f"the job has no samples (it is {job.status.value}; they are written when "
            "training ends, unless eval_config.samples is 0)",
            field="job_id",
        ) from None
    if len(data) > MAX_SAMPLES_FILE_BYTES:
        logger.warning("job %s: samples file of %d bytes; not served", job_id, len(data))
        raise NotFoundError("the job's samples are unreadable", field="job_id")
    scores = job.metrics.eval_scores if job.metrics is not None else None
    return SampleList(job_id=job_id, samples=decode_lines(data), eval_scores=scores)


def _step_cursor(token: str | None) -> int:
    if token is None:
        return 2**63
    if not token.isascii() or not token.isdigit() or len(token) > 19:
        raise PageTokenError("page_token: not a token this API issued", field="page_token")
    return int(token)


def download_links(
    job_id: str,
    *,
    services: Services,
    owner: str | None,
    artifact: ArtifactKind,
    quantization: GgufQuantization | None,
    ttl_seconds: int,
    checkpoint: int | None = None,
) -> DownloadLinks:
    """V4 signed GET URLs for every file of one artifact of a completed job, or of one
    checkpoint of a job in any state."""
    job = visible_job(job_id, services=services, owner=owner)
    if artifact is ArtifactKind.CHECKPOINT:
        if checkpoint is None:
            raise NotFoundError("artifact=checkpoint needs checkpoint=STEP", field="checkpoint")
        objects = _checkpoint_objects(job, checkpoint, services=services)
    elif job.status is not JobStatus.COMPLETED:
        raise ConflictError(
            f"the job is {job.status.value}; its artifacts can be downloaded once it is completed",
            field="job_id",
        )
    else:
        objects = _artifact_objects(job, artifact, quantization, services=services)
    lifetime = datetime.timedelta(seconds=ttl_seconds)
    expires_at = utcnow() + lifetime
    files = [
        DownloadFile(path=name, download_url=services.storage.signed_url(uri, lifetime))
        for name, uri in objects
    ]
    # The main file: a weights file when the artifact is a folder (sorted, so shard 1).
    main = min(files, key=lambda file: (not file.path.endswith(".safetensors"), file.path))
    return DownloadLinks(
        job_id=job_id,
        artifact=artifact,
        checkpoint=checkpoint if artifact is ArtifactKind.CHECKPOINT else None,
        download_url=main.download_url,
        expires_at=expires_at,
        files=files,
    )


def _artifact_objects(
    job: JobRecord,
    artifact: ArtifactKind,
    quantization: GgufQuantization | None,
    *,
    services: Services,
) -> list[tuple[str, str]]:
    """(name relative to the artifact, gs:// URI) of each file; NotFoundError when none."""
    layout = services.settings.layout
    artifacts = job.artifacts
    if artifact is ArtifactKind.GGUF:
        uri = artifacts.gguf_files.get(quantization.value) if quantization else artifacts.gguf_path
        folder = layout.gguf_prefix(job.job_id)
    elif artifact is ArtifactKind.ADAPTER:
        uri, folder = artifacts.adapter_path, layout.adapter_prefix(job.job_id)
    else:
        uri, folder = artifacts.merged_path, layout.merged_prefix(job.job_id)
    if uri is None:
        where = f" (exported to {artifacts.hub_url})" if artifacts.hub_url else ""
        raise NotFoundError(
            f"the job has no {_describe(artifact, quantization)}{where}", field="artifact"
        )
    if not uri.startswith(folder):
        # Only the job's own folders are signed, whatever an event may have recorded.
        logger.warning("job %s records %s outside %s; not signing it", job.job_id, uri, folder)
        raise NotFoundError(f"the job has no {_describe(artifact, quantization)}", field="artifact")
    if artifact is ArtifactKind.GGUF:
        found = [uri] if services.storage.exists(uri) else []
        names = [(uri.rsplit("/", 1)[-1], uri) for uri in found]
    else:
        prefix = uri if uri.endswith("/") else f"{uri}/"
        names = [(found[len(prefix) :], found) for found in services.storage.list(prefix)]
        names = [(name, found) for name, found in names if name and not name.endswith("/")]
    if not names:
        raise NotFoundError(
            f"the {_describe(artifact, quantization)} files are gone", field="artifact"
        )
    return names


def _checkpoint_objects(job: JobRecord, step: int, *, services: Services) -> list[tuple[str, str]]:
    """(name, URI) of the files of one complete checkpoint that hold the model: its weights
    or adapter, config and tokenizer; not what only resumes training (optimizer, RNG)."""
    layout = services.settings.layout
    read_marker(services.storage, layout, job.job_id, step)  # NotFoundError: not complete
    prefix = layout.checkpoint_prefix(job.job_id, step)
    names = [(uri[len(prefix) :], uri) for uri in services.storage.list(prefix)]
    names = [
        (name, uri)
        for name, uri in names
        if name and not name.endswith("/") and not is_training_state(name)
    ]
    if not names:
        raise NotFoundError(f"the checkpoint at step {step} is gone", field="checkpoint")
    return names


def _describe(artifact: ArtifactKind, quantization: GgufQuantization | None) -> str:
    if artifact is ArtifactKind.GGUF and quantization is not None:
        return f"{quantization.value} GGUF file"
    names = {"gguf": "GGUF file", "adapter": "adapter", "merged": "merged model"}
    return names.get(artifact.value, artifact.value)
