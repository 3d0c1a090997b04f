"""The Vertex AI launcher: one custom job per trainer execution, on a multi-GPU machine.

Vertex AI runs the same trainer image as Cloud Run, on one worker pool of one machine of
the tier's type, under `torchrun --standalone --nproc_per_node=<GPUs> -m trainer`. The
job's definition carries the job's id, its task timeout and attempt base
(`tuning.launchers.trainer_environment`) plus the operator's static trainer settings
(`extra_env`: project, buckets, topic... what the Cloud Run job's template sets there); the
trainer reads everything else itself, so no secret ever sits in a custom job's definition.

The REST API is called through google-auth's `AuthorizedSession` rather than
google-cloud-aiplatform: that library takes seconds to import, and dispatch, delete and
reconcile are functions whose cold start counts. Reference of the calls used:
https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.customJobs
(create, get, cancel) and the CustomJob resource described there.

A create whose answer is lost (a timeout after Vertex accepted it) is retried by dispatch
like any transient error and may leave a second custom job for the same training job: it
is handled as Cloud Run's duplicates are, by the execution recorded on the job.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as api_exceptions

from tuning.errors import NotFoundError, TransientError, TuningError
from tuning.gcp.errors import google_api_errors
from tuning.gcp.permissions import requires
from tuning.jobs import JobRecord
from tuning.launchers import ExecutionState, ExecutionStatus, trainer_environment

if TYPE_CHECKING:
    import requests

SERVICE = "Vertex AI"
API_VERSION = "v1"
# https://cloud.google.com/vertex-ai/docs/reference/rest#rest_endpoints: one endpoint per region.
ENDPOINT_TEMPLATE = "https://{region}-aiplatform.googleapis.com"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
HTTP_TIMEOUT_SECONDS = 30.0  # one API call; a function never waits on a stuck connection
CUSTOM_JOB_NAME = re.compile(r"^projects/[^/]+/locations/[^/]+/customJobs/[^/:]+$")

# "The name can be up to 128 characters long and can consist of any UTF-8 characters."
# (CustomJob.displayName, https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.customJobs)
DISPLAY_NAME_MAX = 128
# Label values: lowercase letters, digits, underscores and dashes, at most 64 characters on
# Vertex (CustomJob.labels, same page) and 63 on Google Cloud in general
# (https://cloud.google.com/resource-manager/docs/labels-overview#requirements): the smaller.
LABEL_VALUE_MAX = 63
SYSTEM_LABELS = {"system": "gemma-tuning"}  # as terraform/main.tf labels every resource

# Per-job variables the launcher sets; an operator's extra_env naming one is refused.
JOB_VARIABLES = frozenset({"JOB_ID", "TRAINER_TASK_TIMEOUT_SECONDS", "TRAINER_ATTEMPT_BASE"})
# Credentials never go into a job's definition (docs/architecture.md, "Secrets and identity"):
# a name ending like one is refused (SECRET_BACKEND, SECRET_PREFIX are settings, not secrets).
_CREDENTIAL_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|API_KEY|PRIVATE_KEY)$", re.IGNORECASE)

# JobState (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/JobState) -> ours.
# CANCELLING "may only go to SUCCEEDED, FAILED or CANCELLED": the job is being stopped, so it
# counts as cancelled, with the time Vertex last changed it as its end. PAUSED "can be
# resumed" (custom jobs are not paused by this service): not finished, so pending.
JOB_STATES = {
    "JOB_STATE_UNSPECIFIED": ExecutionState.PENDING,
    "JOB_STATE_QUEUED": ExecutionState.PENDING,
    "JOB_STATE_PENDING": ExecutionState.PENDING,
    "JOB_STATE_PAUSED": ExecutionState.PENDING,
    "JOB_STATE_RUNNING": ExecutionState.RUNNING,
    "JOB_STATE_UPDATING": ExecutionState.RUNNING,
    "JOB_STATE_SUCCEEDED": ExecutionState.SUCCEEDED,
    "JOB_STATE_FAILED": ExecutionState.FAILED,
    "JOB_STATE_EXPIRED": ExecutionState.FAILED,
    "JOB_STATE_PARTIALLY_SUCCEEDED": ExecutionState.FAILED,  # a trainer either finished or not
    "JOB_STATE_CANCELLING": ExecutionState.CANCELLED,
    "JOB_STATE_CANCELLED": ExecutionState.CANCELLED,
}

# google.rpc.Code names (the `status` of a REST error body,
# https://cloud.google.com/apis/design/errors#http_mapping) -> google.api_core's exceptions,
# so that a REST error is the same exception a gRPC client would raise.
_BY_RPC_STATUS: dict[str, type[api_exceptions.GoogleAPICallError]] = {
    code.name: error
    for error in vars(api_exceptions).values()
    if isinstance(error, type)
    and issubclass(error, api_exceptions.GoogleAPICallError)
    and (code := getattr(error, "grpc_status_code", None)) is not None
}


def custom_jobs_parent(project: str, region: str) -> str:
    return f"projects/{project}/locations/{region}"


def is_custom_job(execution: str) -> bool:
    """Whether an execution name is a Vertex AI custom job's (not a Cloud Run execution's)."""
    return bool(CUSTOM_JOB_NAME.match(execution))


def display_name(job_id: str) -> str:
    return job_id[:DISPLAY_NAME_MAX]


def label_value(text: str) -> str:
    """`text` as a label value: lowercase, other characters as `-`, and when too long cut
    short with a hash of the whole, so that two long job ids keep different labels."""
    value = re.sub(r"[^a-z0-9_-]", "-", text.lower())
    if len(value) <= LABEL_VALUE_MAX:
        return value
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{value[: LABEL_VALUE_MAX - len(digest) - 1]}-{digest}"


def trainer_command(accelerator_count: int) -> list[str]:
    """torchrun on the one machine: one process per GPU. `--standalone` runs the rendezvous
    on the machine itself on a free port (https://pytorch.org/docs/stable/elastic/run.html,
    "Single-node multi-worker"); the trainer is the module the image's entry point runs
    (trainer/__main__.py)."""
    processes = max(accelerator_count, 1)
    return ["torchrun", "--standalone", f"--nproc_per_node={processes}", "-m", "trainer"]


def http_error(response: requests.Response) -> api_exceptions.GoogleAPICallError:
    """The google.api_core exception for an error answer, chosen by the body's rpc status
    when it names one (Vertex answers FAILED_PRECONDITION and INVALID_ARGUMENT both as 400),
    else by the HTTP status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    message = str(error.get("message") or response.reason or "no message")
    exception_type = _BY_RPC_STATUS.get(str(error.get("status") or ""))
    if exception_type is not None:
        return exception_type(message, response=response)
    return api_exceptions.from_http_status(response.status_code, message, response=response)


def _timestamp(value: object) -> datetime | None:
    # RFC 3339, Z-normalised, 0 to 9 fractional digits (Timestamp in the resource reference);
    # Python 3.11's fromisoformat reads them all (it keeps microseconds).
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value)


def custom_job_status(resource: Mapping[str, Any]) -> ExecutionStatus:
    """What a CustomJob resource says about how the training went."""
    state = JOB_STATES.get(str(resource.get("state") or ""), ExecutionState.PENDING)
    error = resource.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    finished_at = None
    if state.is_finished:
        # endTime is set on SUCCEEDED, FAILED and CANCELLED; a CANCELLING or EXPIRED job
        # ends at its last change, so that the reconciler still waits for a final event.
        finished_at = _timestamp(resource.get("endTime")) or _timestamp(resource.get("updateTime"))
    return ExecutionStatus(
        state=state,
        message=str(message) if message else None,
        finished_at=finished_at,
        # Vertex does not count restarts of the worker; a job that started ran once at least.
        attempts=1 if resource.get("startTime") else 0,
    )


class VertexLauncher:
    """Runs the trainer as Vertex AI custom jobs on one machine of a multi-GPU tier.

    Args:
        project, region: where the custom jobs are created.
        machine_type, accelerator_type, accelerator_count: the tier's machine, e.g.
            `a3-highgpu-8g`, `NVIDIA_H100_80GB`, 8 (MachineSpec,
            https://cloud.google.com/vertex-ai/docs/reference/rest/v1/MachineSpec).
        image_uri: the trainer image, the one the Cloud Run trainer job runs.
        service_account: the trainer's account, which the job runs as.
        task_timeout_seconds: the job's maximum running time, also told to the trainer.
        network: a VPC network to peer the job with (`projects/NUMBER/global/networks/NAME`).
        session: an HTTP session for the calls; Application Default Credentials otherwise.
        endpoint: the API's base URL; the region's endpoint otherwise.
        extra_env: the trainer's static settings (never a secret).
    """

    def __init__(
        self,
        project: str,
        region: str,
        *,
        machine_type: str,
        accelerator_type: str,
        accelerator_count: int,
        image_uri: str,
        service_account: str,
        task_timeout_seconds: int,
        network: str | None = None,
        session: requests.Session | None = None,
        endpoint: str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        if accelerator_count < 0:
            raise ValueError("accelerator_count must be 0 or more")
        if task_timeout_seconds <= 0:
            raise ValueError("task_timeout_seconds must be positive")
        extra_env = dict(extra_env or {})
        if reserved := sorted(JOB_VARIABLES & extra_env.keys()):
            raise ValueError(f"extra_env may not set the per-job variables {reserved}")
        if credentials := sorted(name for name in extra_env if _CREDENTIAL_NAME.search(name)):
            raise ValueError(
                f"extra_env names what looks like a credential ({credentials}): the trainer "
                "reads secrets from Secret Manager, never from a job's definition"
            )
        self.parent = custom_jobs_parent(project, region)
        self.machine_type = machine_type
        self.accelerator_type = accelerator_type
        self.accelerator_count = accelerator_count
        self.image_uri = image_uri
        self.service_account = service_account
        self.task_timeout_seconds = task_timeout_seconds
        self.network = network
        self.extra_env = extra_env
        self.endpoint = (endpoint or ENDPOINT_TEMPLATE.format(region=region)).rstrip("/")
        self._session = session  # made on first use: credentials cost cold-start time

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            import google.auth
            from google.auth.transport.requests import AuthorizedSession

            credentials, _ = google.auth.default(scopes=SCOPES)
            self._session = AuthorizedSession(credentials)
        return self._session

    def custom_job(self, job: JobRecord) -> dict[str, Any]:
        """The CustomJob resource that runs `job`: one pool of one machine (REST v1,
        https://cloud.google.com/vertex-ai/docs/reference/rest/v1/CustomJobSpec)."""
        environment = {
            **self.extra_env,
            **trainer_environment(job, task_timeout_seconds=self.task_timeout_seconds),
        }
        machine_spec: dict[str, Any] = {"machineType": self.machine_type}
        if self.accelerator_count:
            machine_spec |= {
                "acceleratorType": self.accelerator_type,
                "acceleratorCount": self.accelerator_count,
            }
        job_spec: dict[str, Any] = {
            "workerPoolSpecs": [
                {
                    "machineSpec": machine_spec,
                    "replicaCount": "1",  # int64: a string in proto3's JSON mapping
                    "containerSpec": {
                        "imageUri": self.image_uri,
                        "command": trainer_command(self.accelerator_count),
                        "env": [
                            {"name": name, "value": value} for name, value in environment.items()
                        ],
                    },
                }
            ],
            # "Users submitting jobs must have act-as permission on this run-as account."
            "serviceAccount": self.service_account,
            # "The maximum job running time. The default is 7 days." (Scheduling); Vertex's
            # retries of a worker after an internal error stay on: the trainer resumes from
            # its last checkpoint, as after a Cloud Run task retry.
            "scheduling": {"timeout": f"{self.task_timeout_seconds}s"},
        }
        if self.network:
            job_spec["network"] = self.network
        return {
            "displayName": display_name(job.job_id),
            "labels": {**SYSTEM_LABELS, "job_id": label_value(job.job_id)},
            "jobSpec": job_spec,
        }

    # https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.customJobs/create
    # needs aiplatform.customJobs.create; running as the trainer's account needs actAs on it.
    @requires("aiplatform.customJobs.create", "iam.serviceAccounts.actAs")
    def launch(self, job: JobRecord) -> str:
        """Create the custom job and return its full resource name, without waiting for it."""
        try:
            created = self._call(
                "POST", f"{self.parent}/customJobs", self.parent, self.custom_job(job)
            )
        except api_exceptions.BadRequest as error:
            # Vertex refuses the definition (a machine type and accelerator it does not pair,
            # an accelerator the region lacks): as configured, this launch can never work.
            raise TuningError(f"{SERVICE} refused the custom job: {error.message}") from error
        name = created.get("name")
        if not isinstance(name, str) or not is_custom_job(name):
            raise TuningError(f"{SERVICE} created a custom job in {self.parent} but named none")
        return name

    # https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.customJobs/get
    @requires("aiplatform.customJobs.get")
    def status(self, execution: str) -> ExecutionStatus:
        self._check_name(execution)
        try:
            resource = self._call("GET", execution, execution)
        except NotFoundError:
            return ExecutionStatus(state=ExecutionState.NOT_FOUND, message="no such custom job")
        return custom_job_status(resource)

    # https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.customJobs/cancel
    @requires("aiplatform.customJobs.cancel")
    def cancel(self, execution: str) -> None:
        """Ask Vertex AI to cancel; a custom job that is gone or already over is left alone."""
        self._check_name(execution)
        try:
            self._call("POST", f"{execution}:cancel", execution, {})
        except (NotFoundError, api_exceptions.FailedPrecondition):
            # The reference does not say what cancelling a finished job answers; Vertex's
            # jobs answer 400 FAILED_PRECONDITION ("is in state JOB_STATE_... and cannot be
            # cancelled"), as Google's gRPC convention has it for an operation the resource's
            # state rejects (https://cloud.google.com/apis/design/errors#handling_errors).
            # Cancellation is best effort, and there is nothing left to stop.
            return

    def _check_name(self, execution: str) -> None:
        if not is_custom_job(execution):
            raise ValueError(f"{execution!r} is not a Vertex AI custom job's name")

    def _call(
        self, method: str, path: str, what: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One REST call; errors as google_api_errors maps them (missing -> NotFoundError;
        429, any 5xx and broken connections -> TransientError), others as google.api_core's
        (403 -> PermissionDenied, as the Cloud Run client raises it)."""
        import google.auth.exceptions
        import requests

        url = f"{self.endpoint}/{API_VERSION}/{path}"
        try:
            response = self.session.request(method, url, json=body, timeout=HTTP_TIMEOUT_SECONDS)
        except (
            requests.ConnectionError,
            requests.Timeout,
            google.auth.exceptions.TransportError,  # the token could not be fetched
        ) as error:
            raise TransientError(
                f"{SERVICE} call for {what} failed: {type(error).__name__}"
            ) from error
        with google_api_errors(SERVICE, what, also_retryable=(api_exceptions.ServerError,)):
            if response.status_code >= 400:
                raise http_error(response)
        if not response.content:
            return {}
        try:
            answer = response.json()
        except ValueError as error:
            raise TransientError(f"{SERVICE} answered {what} with no JSON") from error
        return answer if isinstance(answer, dict) else {}
