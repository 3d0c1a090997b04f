"""Hub models staged once in the models bucket, then read through the models volume.

A Hub model downloaded into a Cloud Run task lands in its in-memory disk: a 12B model's
24 GB of weights fill a 32 GiB task before training starts. So, where the trainer has the
models bucket as a volume (trainer/base_model.py), the first job that needs a Hub model
copies it into the bucket, one file at a time, and every job reads it from the volume.

    gs://<models>/base_models/hub/<repo_id>/<sha>/stage-<uuid>/...   one stager's copy
    gs://<models>/base_models/hub/<repo_id>/<sha>/complete.json      which copy to read

`base_models/hub/` is reserved (tuning/tenancy.py HUB_STAGING): no request may name it as a
gs:// base model, so a copy is only ever read through this module, after these checks:

1. The revision is pinned: `main` (or a tag) is resolved to its commit sha first, so a later
   push to the repo is a new sha, staged anew, never served from an older copy.
2. The job's own token (or anonymous access, without one) must read the repo at that sha,
   asked of the Hub with one metadata call before a copy is reused: Gemma repos are gated,
   and a copy staged with caller A's token proves nothing about caller B's.
3. A copy is trusted only once its marker names it. A stager downloads each file into
   scratch space (room for the largest file, not the whole model), uploads it into its own
   `stage-<uuid>/` folder and deletes it locally; last, it creates the marker with a
   generation precondition (`ifGenerationMatch=0`), so of two jobs staging at once exactly
   one marker is written. The other deletes its own folder and reads the winner's. A stager
   that dies halfway leaves a folder no marker names: never read (see docs/deploy.md).

What a job's storage may do here (review finding F5): read the repo's staged copies and
markers (`staging_rule`); and, only once it stages a commit itself, write in its own
`stage-<uuid>/` folder and create that commit's marker, never replace or delete it
(`stager_rules`, a create-only rule). The stager writes through a store narrowed to those
rules (trainer/storage_access.py), so it cannot touch another job's copy or marker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.api_core.exceptions import Forbidden

from trainer.errors import ModelNotFoundError, PermanentError
from trainer.hub import COMMIT_SHA, HubModels
from trainer.modeling import HUB_PATTERNS, MODEL_CONFIG, _read_config, ensure_room
from tuning.errors import NotFoundError, TransientError
from tuning.gcp.access_boundary import Access, StorageRule
from tuning.gcp.storage import GcsStore, local_target
from tuning.jobs import ErrorType
from tuning.layout import gcs_uri, parse_gcs_uri
from tuning.tenancy import BASE_MODELS, HUB_STAGING

logger = logging.getLogger(__name__)

MARKER = "complete.json"
DEFAULT_REVISION = "main"  # requests name no revision: a Hub id means its default branch
_FOLDER = re.compile(r"^stage-[0-9a-f]{32}$")


class StagingError(PermanentError):
    """A staged copy's marker is unreadable or names files that are not there: ours to fix."""

    error_type = ErrorType.SYSTEM
    code = "hub_staging_broken"


@dataclass(frozen=True)
class StagedModel:
    """A complete copy of a Hub repo at one commit, in the models bucket."""

    repo_id: str
    sha: str
    uri: str  # gs://<models>/base_models/hub/<repo>/<sha>/stage-<uuid>/
    files: dict[str, int]  # name below `uri` -> size in bytes
    staged_now: bool  # this job made it (else an earlier job did)


def staging_prefix(models_bucket: str, repo_id: str) -> str:
    """gs://<models>/base_models/hub/<owner>/<name>/: every staged commit of one repo.

    A repo id without an owner (`gpt2`) goes under `_/`, which no Hub account can be named:
    as `hub/gpt2/` its prefix, and the job's storage rule, would cover the staged copies of
    every repo of an account `gpt2` (review finding)."""
    owner, _, name = repo_id.rpartition("/")
    return gcs_uri(models_bucket, f"{BASE_MODELS}/{HUB_STAGING}/{owner or BARE_OWNER}/{name}/")


BARE_OWNER = "_"  # not a Hub account name (they start with a letter or digit)


def staging_root(models_bucket: str, repo_id: str, sha: str) -> str:
    """gs://<models>/base_models/hub/<repo_id>/<sha>/: the copies of one commit and the
    marker naming the one to read."""
    if not COMMIT_SHA.fullmatch(sha):
        raise ValueError(f"not a commit sha: {sha!r}")
    return f"{staging_prefix(models_bucket, repo_id)}{sha}/"


def staging_rule(models_bucket: str, repo_id: str) -> StorageRule:
    """What a job with this Hub model may do in the bucket beyond its own outputs: list and
    read below the repo's staging prefix (its staged copies and their markers)."""
    bucket, name = parse_gcs_uri(staging_prefix(models_bucket, repo_id))
    return StorageRule(bucket=bucket, name=name, access=Access.READ)


def stager_rules(
    models_bucket: str, repo_id: str, sha: str, folder: str
) -> tuple[StorageRule, ...]:
    """What a job staging `repo_id` at `sha` writes: its own folder (read, write, delete: it
    discards the folder when another stager wins) and the commit's marker, create-only."""
    if not _FOLDER.fullmatch(folder):
        raise ValueError(f"not a staging folder name: {folder!r}")
    bucket, root = parse_gcs_uri(staging_root(models_bucket, repo_id, sha))
    return (
        StorageRule(bucket=bucket, name=f"{root}{folder}/", access=Access.READ_WRITE),
        # A prefix rule (startsWith) without listing, as Google's page writes conditions;
        # it also lets the job create `complete.json<more>`, which nothing ever reads.
        StorageRule(bucket=bucket, name=f"{root}{MARKER}", access=Access.CREATE, listable=False),
    )


# The store a stager writes with, given the commit and its folder name (narrowed to
# `stager_rules` in production: trainer/storage_access.py).
StagerStorage = Callable[[str, str], GcsStore]


def stage_hub_model(
    repo_id: str,
    *,
    token: str | None,
    hub: HubModels,
    storage: GcsStore,
    models_bucket: str,
    scratch: Path,
    revision: str = DEFAULT_REVISION,
    check_config: Callable[[dict[str, Any]], None] | None = None,
    free_bytes: Callable[[Path], int] = lambda path: shutil.disk_usage(path).free,
    stager_storage: StagerStorage | None = None,
) -> StagedModel:
    """The staged copy of `repo_id` at the commit `revision` names now: reused when one is
    complete, else made by this job (see the module docstring for the protocol).

    `check_config` sees config.json before any weights are staged, and may raise.
    `storage` reads; the copy and its marker are written through `stager_storage(sha,
    folder)` (None: `storage` itself).
    """
    sha = hub.resolve(repo_id, revision, token)
    if not COMMIT_SHA.fullmatch(sha):
        raise TransientError(f"the Hub named no commit for {repo_id}@{revision}: {sha!r}")
    hub.check_access(repo_id, sha, token)  # before reuse too: whoever staged it, not this job
    root = staging_root(models_bucket, repo_id, sha)
    staged = read_marker(storage, root, repo_id, sha)
    if staged is not None:
        logger.info("base model %s@%s: reusing %s", repo_id, sha, staged.uri)
        return staged

    wanted = _wanted_files(hub.files(repo_id, sha, token))
    if MODEL_CONFIG not in wanted:
        raise ModelNotFoundError(f"base model {repo_id}@{sha} has no {MODEL_CONFIG}")
    scratch.mkdir(parents=True, exist_ok=True)
    largest = max((size or 0 for size in wanted.values()), default=0)
    ensure_room(largest, scratch, f"staging {repo_id} (its largest file)", free_bytes(scratch))
    folder = f"stage-{uuid.uuid4().hex}"
    mine = f"{root}{folder}/"
    writes = stager_storage(sha, folder) if stager_storage is not None else storage
    logger.info("base model %s@%s: staging %d files to %s", repo_id, sha, len(wanted), mine)
    sizes: dict[str, int] = {}
    refused: Forbidden | None = None
    try:
        # config.json first, so that a model that cannot run the job stages nothing else.
        for name in sorted(wanted, key=lambda name: (name != MODEL_CONFIG, name)):
            if local_target(scratch, name) is None:
                raise ModelNotFoundError(f"base model {repo_id} has a file named {name!r}")
            path = hub.download(repo_id, sha, name, scratch, token)
            if name == MODEL_CONFIG and check_config is not None:
                check_config(_read_config(path, repo_id))
            writes.upload_file(path, f"{mine}{name}")
            sizes[name] = path.stat().st_size
            path.unlink()  # scratch holds one file at a time
        marker = {
            "repo_id": repo_id,
            "revision": sha,
            "folder": folder,
            "files": sizes,
            "staged_at": datetime.now(UTC).isoformat(),
        }
        try:
            created = writes.create_bytes(
                f"{root}{MARKER}", json.dumps(marker).encode(), content_type="application/json"
            )
        except Forbidden as error:
            # Create-only may not replace an object: where another stager's marker is there
            # already, Cloud Storage may refuse (403) rather than fail the precondition (412).
            # The marker read below decides.
            created, refused = False, error
    except BaseException:
        _discard(writes, mine)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    winner = read_marker(storage, root, repo_id, sha)
    if winner is None and refused is not None:
        _discard(writes, mine)
        raise refused
    if winner is None:  # written a moment ago, or found there: GCS reads are consistent
        raise TransientError(f"the marker {root}{MARKER} vanished just after it was written")
    if winner.uri == mine:
        # created is False on a retried create whose first try landed: still ours.
        return StagedModel(repo_id, sha, mine, sizes, staged_now=True)
    if created:  # a marker this call created names this call's folder
        raise StagingError(f"{root}{MARKER} changed while it was being written")
    logger.info("base model %s@%s: another job staged it first (%s)", repo_id, sha, winner.uri)
    _discard(writes, mine)
    return winner


def read_marker(storage: GcsStore, root: str, repo_id: str, sha: str) -> StagedModel | None:
    """The copy the marker below `root` names; None when there is no marker yet."""
    uri = f"{root}{MARKER}"
    try:
        data = storage.download_bytes(uri)
    except NotFoundError:
        return None
    try:
        marker = json.loads(data)
    except ValueError:
        raise StagingError(f"{uri} is not JSON; delete it to stage {repo_id} again") from None
    folder = marker.get("folder") if isinstance(marker, dict) else None
    files = marker.get("files") if isinstance(marker, dict) else None
    if (
        not isinstance(folder, str)
        or not _FOLDER.fullmatch(folder)
        or not isinstance(files, dict)
        or not all(isinstance(n, str) and isinstance(s, int) for n, s in files.items())
        or MODEL_CONFIG not in files
        or marker.get("repo_id") != repo_id
        or marker.get("revision") != sha
    ):
        raise StagingError(f"{uri} is not a staging marker; delete it to stage {repo_id} again")
    return StagedModel(repo_id, sha, f"{root}{folder}/", dict(files), staged_now=False)


def _wanted_files(files: dict[str, int | None]) -> dict[str, int | None]:
    """The files training and export need (modeling.HUB_PATTERNS), as a snapshot would."""
    from huggingface_hub.utils import filter_repo_objects

    return {name: files[name] for name in filter_repo_objects(files, allow_patterns=HUB_PATTERNS)}


def _discard(storage: GcsStore, prefix: str) -> None:
    """Delete an unfinished or superfluous copy; best effort (an orphan is never read)."""
    with contextlib.suppress(Exception):
        storage.delete_prefix(prefix)
