"""Where the trainer reads the base model from: in place through the models volume, or a copy.

On Cloud Run a task's local disk is an in-memory filesystem, so a model downloaded there
counts against the task's memory (a 12B model's 24 GB of weights fill a 32 GiB task). The
trainer job therefore mounts the models bucket as a read-only Cloud Storage volume
(terraform/trainer.tf; "Configure Cloud Storage volume mounts for jobs",
https://cloud.google.com/run/docs/configuring/jobs/cloud-storage-volume-mounts: Cloud Run
mounts the bucket with Cloud Storage FUSE, which reads objects from Cloud Storage as they are
read, without downloading whole files; its stat and type caches and a 1 MiB buffer per open
file are what it takes of the task's memory). `ModelsMount` maps
`gs://<models bucket>/<only_dir>/<path>` to `<mount>/<path>`.

- A gs:// base model under the mount is read in place: nothing of it is copied.
- A Hub model is staged once into the bucket (trainer/hub_staging.py) and read in place.
- Without a mount (MODELS_MOUNT_PATH unset, e.g. a Vertex AI tier), for a gs:// model in
  another allowed bucket, or a mount that does not show base_models/hub/: downloaded into
  the work directory, as trainer.modeling.fetch_base_model always did.

The mount reads with the trainer account's own credentials, not the job's downscoped ones
(trainer/storage_access.py), so the trainer maps only paths it has checked: the job's base
model once `BaseModelLocations` allowed it, or the copy a staging marker names. Locally,
fake-gcs-server's filesystem backend keeps each object at `<root>/<bucket>/<name>`, which
is the same view the volume gives (tuning/local/stack.py sets MODELS_MOUNT_PATH to it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.errors import ModelNotFoundError, PermanentError, UserError
from trainer.hub import HubModels, HuggingFaceHub
from trainer.hub_staging import StagedModel, StagerStorage, stage_hub_model, staging_prefix
from trainer.modeling import MODEL_CONFIG, _read_config, fetch_base_model
from tuning.errors import InvalidRequestError, TransientError
from tuning.gcp.storage import GcsStore
from tuning.jobs import ErrorType
from tuning.layout import GCS_SCHEME, parse_gcs_uri
from tuning.settings import TrainerSettings
from tuning.tenancy import BaseModelLocations

logger = logging.getLogger(__name__)

# How long files a job just staged may take to show on the volume (Cloud Storage FUSE lists
# and stats objects afresh once its caches expire; new names are not cached beforehand).
VISIBLE_WITHIN_SECONDS = 60.0


class ModelsMountMissing(PermanentError):  # noqa: N818  (named for what the operator sees)
    """MODELS_MOUNT_PATH names no directory: the job's volume is not mounted there."""

    error_type = ErrorType.SYSTEM
    code = "models_mount_missing"


@dataclass(frozen=True)
class ModelsMount:
    """The models bucket (or one folder of it) as a directory of the container."""

    path: Path
    bucket: str
    only_dir: str = ""  # the bucket folder the volume shows (gcsfuse only-dir); "": all

    @classmethod
    def from_settings(cls, settings: TrainerSettings) -> ModelsMount | None:
        if settings.models_mount_path is None:
            return None
        return cls(
            path=Path(settings.models_mount_path),
            bucket=settings.models_bucket,
            only_dir=settings.models_mount_only_dir.strip("/"),
        )

    def local_path(self, uri: str) -> Path | None:
        """Where the folder `uri` shows on the volume; None when the volume does not show it."""
        bucket, name = parse_gcs_uri(uri)
        prefix = f"{self.only_dir}/" if self.only_dir else ""
        if bucket != self.bucket or not name.startswith(prefix):
            return None
        rest = name[len(prefix) :].strip("/")
        return self.path.joinpath(*rest.split("/")) if rest else None

    def require(self) -> None:
        if not self.path.is_dir():
            raise ModelsMountMissing(
                f"MODELS_MOUNT_PATH={self.path} is not a directory: the models volume is not "
                "mounted there (terraform/trainer.tf declares it on every trainer job)"
            )


def default_hub() -> HubModels:
    return HuggingFaceHub()


def obtain_base_model(
    base_model_id: str,
    *,
    storage: GcsStore,
    work_dir: Path,
    token: str | None,
    locations: BaseModelLocations,
    mount: ModelsMount | None,
    check_config: Callable[[dict[str, Any]], None] | None = None,
    note: Callable[[str], object] = lambda text: None,
    hub: HubModels | None = None,
    stager_storage: StagerStorage | None = None,
) -> Path:
    """A directory holding the model's config, weights and tokenizer: on the models volume
    where it can be, else a download into `work_dir / "base"`.

    A Hub model this job stages is written through `stager_storage` (trainer/hub_staging.py;
    None: `storage`).

    `check_config` sees config.json before the weights are read (or staged); `note` is told
    where a Hub model's staged copy lies (the pipeline makes it a job message).
    """
    download = Path(work_dir) / "base"

    def fetched() -> Path:
        return fetch_base_model(
            base_model_id,
            storage=storage,
            directory=download,
            token=token,
            locations=locations,
            check_config=check_config,
        )

    if mount is None:
        return fetched()
    if base_model_id.startswith(GCS_SCHEME):
        try:
            locations.check(base_model_id)  # before the volume shows a byte of it
        except InvalidRequestError as error:
            raise UserError(error.message) from None
        mounted = mount.local_path(base_model_id)
        if mounted is None:
            return fetched()  # another allowed bucket: downloaded as before
        mount.require()
        return _in_place(mounted, base_model_id, check_config)
    if mount.local_path(staging_prefix(mount.bucket, base_model_id)) is None:
        return fetched()  # the volume does not show base_models/hub/
    staged = stage_hub_model(
        base_model_id,
        token=token,
        hub=hub or default_hub(),
        storage=storage,
        models_bucket=mount.bucket,
        scratch=Path(work_dir) / "hub-staging",
        check_config=check_config,
        stager_storage=stager_storage,
    )
    verb = "staged" if staged.staged_now else "reused the copy"
    note(f"base model {base_model_id} at commit {staged.sha}: {verb} at {staged.uri}")
    mount.require()
    mounted = mount.local_path(staged.uri)
    assert mounted is not None  # below the staging prefix, which the volume shows
    _wait_until_visible(mounted, staged)
    return _in_place(mounted, base_model_id, check_config)


def _in_place(directory: Path, base_model_id: str, check_config: Any) -> Path:
    logger.info(
        "base model %s: read in place from the models volume (%s)", base_model_id, directory
    )
    config_path = directory / MODEL_CONFIG
    if not config_path.is_file():
        raise ModelNotFoundError(f"base model {base_model_id} not found (no config.json there)")
    model_config = _read_config(config_path, base_model_id)
    if check_config is not None:
        check_config(model_config)
    return directory


def _wait_until_visible(
    directory: Path, staged: StagedModel, timeout: float = VISIBLE_WITHIN_SECONDS
) -> None:
    """Every file the marker names, at its size, on the volume (a broken copy fails once)."""
    deadline = time.monotonic() + timeout
    while True:
        missing = [
            name
            for name, size in staged.files.items()
            if not (directory / name).is_file() or (directory / name).stat().st_size != size
        ]
        if not missing:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    if staged.staged_now:  # just written: the volume is slow to show it, a retry may see it
        raise TransientError(f"{staged.uri}: {missing[0]} does not show on the models volume")
    from trainer.hub_staging import MARKER, StagingError

    root = staged.uri.rstrip("/").rsplit("/", 1)[0] + "/"
    raise StagingError(
        f"the staged copy {staged.uri} lacks {missing[0]} (or its size differs); delete "
        f"{root}{MARKER} so that the next job stages {staged.repo_id} again"
    )
