"""Where everything lives in GCS: the one module that builds storage paths.

Compatible with the seed service's prefixes. Every prefix ends with `/` so
that an operation on `job1/` can never touch `job10/`, and every id is
checked against its strict pattern before it becomes part of a path.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuning.ids import require_segment_id
from tuning.spec import GgufQuantization

DATASETS = "processed_datasets"
CONFIGS = "configs"
ADAPTERS = "trained_adapters"
MERGED = "merged_models"
GGUF = "gguf_models"
CHECKPOINTS = "checkpoints"


def gcs_uri(bucket: str, path: str = "") -> str:
    return f"gs://{bucket}/{path}"


def parse_gcs_uri(uri: str) -> tuple[str, str]:
    """`gs://bucket/a/b` -> (`bucket`, `a/b`)."""
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, path = uri.removeprefix("gs://").partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, path


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

    def job_prefixes(self, job_id: str) -> list[str]:
        """Every prefix that holds files of the job (all end with `/`)."""
        return [
            self.adapter_prefix(job_id),
            self.merged_prefix(job_id),
            self.gguf_prefix(job_id),
            self.checkpoints_prefix(job_id),
        ]


def _job(job_id: str) -> str:
    return require_segment_id(job_id, "job_id")
