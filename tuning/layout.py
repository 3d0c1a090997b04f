"""Where everything lives in GCS: the one module that builds storage paths.

Compatible with the seed service's prefixes. Every prefix ends with `/` so
that an operation on `job1/` can never touch `job10/`, and every id is
checked against its strict pattern before it becomes part of a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tuning.errors import InvalidRequestError
from tuning.ids import require_segment_id
from tuning.spec import GgufQuantization

DATASETS = "processed_datasets"
CONFIGS = "configs"
ADAPTERS = "trained_adapters"
MERGED = "merged_models"
GGUF = "gguf_models"
CHECKPOINTS = "checkpoints"
EVALUATIONS = "evaluations"  # sample answers of the base and the tuned model (tuning/samples.py)
SAMPLES_FILE = "samples.jsonl"
BASE_ANSWERS_FILE = "base-answers.jsonl"  # Full fine-tuning: the base's, made before training
# The top folders of the models bucket that hold jobs' outputs (`StorageLayout.job_prefixes`):
# never a base model, whatever an operator allows (tuning/tenancy.py).
JOB_OUTPUTS = (ADAPTERS, MERGED, GGUF, CHECKPOINTS, EVALUATIONS)


GCS_SCHEME = "gs://"
# Bucket names: 3-63 characters per dot-separated part, 222 in all (GCS naming rules).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_MAX_OBJECT_NAME_BYTES = 1024


def parse_gcs_uri(uri: str) -> tuple[str, str]:
    """Split `gs://bucket/path` into (bucket, path); path may be empty (the bucket itself).

    The one place where names built from user data are checked: see `is_safe_object_name`.
    """
    if not isinstance(uri, str) or not uri.startswith(GCS_SCHEME):
        raise InvalidRequestError(f"not a gs:// URI: {uri!r}")
    bucket, _, path = uri[len(GCS_SCHEME) :].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InvalidRequestError(f"invalid bucket name in {uri!r}")
    if len(path.encode("utf-8")) > _MAX_OBJECT_NAME_BYTES or any(c in path for c in "\r\n\0"):
        raise InvalidRequestError(f"invalid object name in {uri!r}")
    if not is_safe_object_name(path):
        raise InvalidRequestError(
            f"invalid object name in {uri!r}: a path segment is empty, '.' or '..' "
            "(name each folder, as in gs://bucket/folder/file)"
        )
    return bucket, path


def is_safe_object_name(path: str) -> bool:
    """Whether no segment of `path` is empty, '.' or '..'; one trailing '/' marks a prefix.

    GCS treats such names literally, but fake-gcs-server (and any local copy) resolves them as
    filesystem paths, so the local stack would read something other than production does:
    refusing them everywhere keeps the two alike. The empty path is the bucket itself.
    """
    if not path:
        return True
    return not any(part in ("", ".", "..") for part in path.removesuffix("/").split("/"))


def gcs_uri(bucket: str, path: str = "") -> str:
    """Build `gs://bucket/path`, validated the same way `parse_gcs_uri` validates."""
    uri = f"{GCS_SCHEME}{bucket}/{path.lstrip('/')}"
    parse_gcs_uri(uri)
    return uri


@dataclass(frozen=True)
class StorageLayout:
    """The three buckets and the paths of one job's files in them."""

    data_bucket: str
    config_bucket: str
    models_bucket: str

    def dataset_prefix(self, dataset_id: str) -> str:
        dataset_id = require_segment_id(dataset_id, "processed_dataset_id")
        return gcs_uri(self.data_bucket, f"{DATASETS}/{dataset_id}/")

    def config_uri(self, job_id: str) -> str:
        return gcs_uri(self.config_bucket, f"{CONFIGS}/{_job(job_id)}.json")

    def adapter_prefix(self, job_id: str) -> str:
        return gcs_uri(self.models_bucket, f"{ADAPTERS}/{_job(job_id)}/")

    def merged_prefix(self, job_id: str) -> str:
        return gcs_uri(self.models_bucket, f"{MERGED}/{_job(job_id)}/")

    def gguf_prefix(self, job_id: str) -> str:
        return gcs_uri(self.models_bucket, f"{GGUF}/{_job(job_id)}/")

    def gguf_uri(self, job_id: str, quantization: GgufQuantization | str) -> str:
        quant = GgufQuantization(quantization).value
        return f"{self.gguf_prefix(job_id)}model-{quant}.gguf"

    def checkpoints_prefix(self, job_id: str) -> str:
        return gcs_uri(self.models_bucket, f"{CHECKPOINTS}/{_job(job_id)}/")

    def checkpoint_prefix(self, job_id: str, step: int) -> str:
        if step < 0:
            raise ValueError("a checkpoint step is never negative")
        return f"{self.checkpoints_prefix(job_id)}checkpoint-{step}/"

    def evaluations_prefix(self, job_id: str) -> str:
        return gcs_uri(self.models_bucket, f"{EVALUATIONS}/{_job(job_id)}/")

    def samples_uri(self, job_id: str) -> str:
        return f"{self.evaluations_prefix(job_id)}{SAMPLES_FILE}"

    def base_answers_uri(self, job_id: str) -> str:
        return f"{self.evaluations_prefix(job_id)}{BASE_ANSWERS_FILE}"

    def job_prefixes(self, job_id: str) -> list[str]:
        """Every prefix that holds files of the job (all end with `/`)."""
        return [
            self.adapter_prefix(job_id),
            self.merged_prefix(job_id),
            self.gguf_prefix(job_id),
            self.checkpoints_prefix(job_id),
            self.evaluations_prefix(job_id),
        ]


def _job(job_id: str) -> str:
    return require_segment_id(job_id, "job_id")
