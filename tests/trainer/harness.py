"""A trainer job on the emulators: buckets, topic, subscription, secrets, record and config."""

from __future__ import annotations

import copy
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuning.events import JobEvent, parse_event
from tuning.gcp.pubsub import PubSubAdmin
from tuning.gcp.secrets import LocalSecretStore
from tuning.gcp.storage import GcsStore
from tuning.jobs import Lineage, Placement, new_job_record
from tuning.services import Services
from tuning.settings import TrainerSettings
from tuning.spec import TrainRequest

FIXTURES = Path(__file__).parent.parent / "fixtures" / "trainer"
WORDS = ["apple", "river", "stone", "cloud", "ember", "frost", "maple", "ocean"]
COLOURS = ["red", "blue", "grey", "white", "orange", "silver", "green", "teal"]


def colour_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """A learnable chat task: each word always has the same colour."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        index = rng.randrange(len(WORDS))
        rows.append(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": f"What colour is {WORDS[index]}?"}],
                    },
                    {"role": "assistant", "content": f"{WORDS[index]} is {COLOURS[index]}."},
                ]
            }
        )
    return rows


IMAGE_COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def png(colour: str, seed: int = 0) -> bytes:
    """A 32x32 PNG of one colour with a little noise, so no two images are the same."""
    from PIL import Image

    rng = random.Random(seed)
    image = Image.new("RGB", (32, 32), IMAGE_COLOURS[colour])
    for _ in range(20):
        image.putpixel((rng.randrange(32), rng.randrange(32)), (128, 128, 128))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def vision_row(colour: str, image: Any) -> dict[str, Any]:
    return {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": "What colour is this?"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": f"It is {colour}."}]},
        ],
        "images": [image],
    }


def to_parquet(rows: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def base_request() -> dict[str, Any]:
    return copy.deepcopy(json.loads((FIXTURES / "lora_request.json").read_text()))


def to_jsonl(rows: list[Any]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def without_samples(request_data: dict[str, Any]) -> dict[str, Any]:
    """The request with `eval_config.samples: 0` where it names no samples of its own."""
    data = copy.deepcopy(request_data)
    config = data.get("training_config") or {}
    evaluation = config.get("eval_config")
    if evaluation is None:
        config["eval_config"] = {"samples": 0}
    elif "samples" not in evaluation and "sample_prompts" not in evaluation:
        evaluation["samples"] = 0
    return data


@dataclass
class TrainerStack:
    """Names unique to one test; everything the trainer reads is put in place by `submit`."""

    project: str
    unique: str
    work_dir: Path
    secrets_file: Path
    storage: GcsStore = field(default_factory=GcsStore)

    def __post_init__(self) -> None:
        self.data_bucket = f"data-{self.unique}"
        self.config_bucket = f"config-{self.unique}"
        self.models_bucket = f"models-{self.unique}"
        for bucket in (self.data_bucket, self.config_bucket, self.models_bucket):
            self.storage.create_bucket_if_absent(bucket)
        self.topic = f"job-events-{self.unique}"
        self.subscription = f"job-events-pull-{self.unique}"
        self.admin = PubSubAdmin(self.project)
        self.admin.ensure_topic(self.topic)
        self.admin.ensure_pull_subscription(self.subscription, self.topic)
        self.secrets = LocalSecretStore(self.secrets_file, project=self.project)
        self.events: list[JobEvent] = []

    def environ(self, job_id: str, attempt: int = 0) -> dict[str, str]:
        return {
            "PROJECT_ID": self.project,
            "GCS_DATA_BUCKET_NAME": self.data_bucket,
            "GCS_CONFIG_BUCKET_NAME": self.config_bucket,
            "GCS_MODELS_BUCKET_NAME": self.models_bucket,
            "JOB_EVENTS_TOPIC": self.topic,
            "JOBS_COLLECTION": f"jobs-{self.unique}",
            "SECRET_BACKEND": "local",
            "TUNING_LOCAL_SECRETS_FILE": str(self.secrets_file),
            "JOB_ID": job_id,
            "CLOUD_RUN_TASK_ATTEMPT": str(attempt),
            "TRAINER_WORK_DIR": str(self.work_dir),
            "TRAINER_PROGRESS_INTERVAL_SECONDS": "0",
            "TRAINER_MAX_RETRIES": "2",
        }

    def settings(self, job_id: str, attempt: int = 0) -> TrainerSettings:
        return TrainerSettings.from_env(self.environ(job_id, attempt))

    def services(self, job_id: str, attempt: int = 0) -> Services:
        return Services(self.settings(job_id, attempt), secrets=self.secrets, storage=self.storage)

    def upload_model(self, snapshot: Path, name: str) -> str:
        prefix = f"gs://{self.models_bucket}/base_models/{name}/"
        self.storage.upload_dir(snapshot, prefix)
        return prefix

    def upload_dataset(self, dataset_id: str, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            uri = f"gs://{self.data_bucket}/processed_datasets/{dataset_id}/{name}"
            self.storage.upload_bytes(uri, data)

    def submit(
        self,
        request_data: dict[str, Any],
        *,
        placement: Placement | None = None,
        lineage: Lineage | None = None,
    ) -> str:
        """Store secrets, the redacted config and the queued record, as submit does (with
        the tier submit would have placed it on). Sample answers are off unless the request
        asks for them (`eval_config.samples`): the jobs of this tier that do not check them
        do not pay for their generation."""
        request = TrainRequest.model_validate(without_samples(request_data))
        job_id = f"job-{self.unique}-{random.randrange(10**6)}"
        values = {"hf_token": request.hf_token}
        wandb = request.training_config.wandb_config
        values["wandb_api_key"] = wandb.api_key if wandb else None
        references = {
            name: self.secrets.put(job_id, name, value.get_secret_value())
            for name, value in values.items()
            if value is not None
        }
        services = self.services(job_id)
        config_uri = services.settings.layout.config_uri(job_id)
        self.storage.upload_json(config_uri, request.redacted(references))
        record = new_job_record(
            request,
            job_id=job_id,
            owner=None,
            config_uri=config_uri,
            secret_references=references,
            placement=placement,
            lineage=lineage,
        )
        services.jobs.create(record)
        return job_id

    def pull_events(
        self, job_id: str, *, until_terminal: bool = True, timeout: float = 30
    ) -> list[JobEvent]:
        """Every event of the job received so far, in (attempt, seq) order."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            for data, _ in self.admin.pull(self.subscription, max_messages=100, timeout=2):
                self.events.append(parse_event(data))
            mine = sorted(
                (e for e in self.events if e.job_id == job_id), key=lambda e: (e.attempt, e.seq)
            )
            terminal = any(e.type.value in ("completed", "failed", "cancelled") for e in mine)
            if not until_terminal or terminal or time.monotonic() > deadline:
                return mine


class RecordingHubUploader:
    """Stands in for the Hub (unreachable here): records what would be published."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def upload(self, folder: Path, *, repo_id: str, token: str, commit_message: str) -> str:
        self.calls.append(
            {"files": sorted(p.name for p in folder.iterdir()), "repo_id": repo_id, "token": token}
        )
        return f"https://huggingface.co/{repo_id}"
