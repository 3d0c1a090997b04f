"""Per-job secrets: Secret Manager in GCP, a private JSON file for the local stack.

Users' own secrets are only read: their value by the trainer, their annotations (metadata,
never the value) at submit, to see whom the operator shared them with (tuning/tenancy.py).

Both speak the same reference format, `projects/{project}/secrets/{secret_id}/versions/{n}`,
so a job record holds references only. Secret values never appear in logs, reprs or error
messages; errors name the secret, never its content.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import google_crc32c
from google.api_core import exceptions as api_exceptions
from google.cloud import secretmanager

from tuning.errors import InvalidRequestError, NotFoundError, TransientError, TuningError
from tuning.gcp.errors import google_api_errors
from tuning.gcp.permissions import requires

DEFAULT_PREFIX = "tuning-"
MANAGED_BY = "gemma-tuning"
LOCAL_SECRETS_ENV = "TUNING_LOCAL_SECRETS_FILE"
DEFAULT_LOCAL_DIR = Path("~/.local/share/gemma-tuning/secrets")
DEFAULT_LOCAL_PROJECT = "local-tuning"

# Secret Manager's rule for secret ids.
SECRET_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
# No '-' in names: the last '-' of a secret id then always separates job id and name, so two
# (job, name) pairs never share a secret id ("a-b"+"c" vs "a"+"b-c").
SECRET_NAME = re.compile(r"^[A-Za-z0-9_]{1,50}$")
REFERENCE = re.compile(
    r"^projects/(?P<project>[A-Za-z0-9_.:-]{1,100})/secrets/(?P<secret_id>[A-Za-z0-9_-]{1,255})"
    r"(?:/versions/(?P<version>latest|[1-9][0-9]{0,9}))?$"
)
# Label values: lowercase letters, digits, '_' and '-', at most 63 characters.
_MAX_LABEL = 63


class SecretStore(Protocol):
    """Stores per-job secrets and resolves references to their values."""

    def put(self, job_id: str, name: str, value: str) -> str:
        """Store a new version of the job's secret `name`; returns its version reference."""
        ...

    def get(self, reference: str) -> str:
        """The value a reference points at (ours, or a user's existing secret)."""
        ...

    def delete_job_secrets(self, job_id: str) -> list[str]:
        """Delete every secret of the job; returns the deleted secret names. Idempotent."""
        ...

    def annotations(self, reference: str) -> dict[str, str]:
        """The annotations of the referenced secret: its metadata, never its value.

        NotFoundError when the secret does not exist or its metadata may not be read.
        """
        ...


def secret_id(prefix: str, job_id: str, name: str) -> str:
    """The secret id for a job's secret, validated against Secret Manager's rules."""
    if not JOB_ID.fullmatch(job_id):
        raise InvalidRequestError(f"invalid job id {job_id!r}", field="job_id")
    if not SECRET_NAME.fullmatch(name):
        raise InvalidRequestError(f"invalid secret name {name!r}", field="name")
    candidate = f"{prefix}{job_id}-{name}"
    if not SECRET_ID.fullmatch(candidate):
        raise InvalidRequestError(f"secret id {candidate!r} is not valid for Secret Manager")
    return candidate


def job_of_secret(prefix: str, candidate: str) -> str | None:
    """The job id a secret id of ours belongs to, or None for someone else's secret."""
    if not candidate.startswith(prefix):
        return None
    job_id, sep, name = candidate[len(prefix) :].rpartition("-")
    if not sep or not JOB_ID.fullmatch(job_id) or not SECRET_NAME.fullmatch(name):
        return None
    return job_id


def parse_reference(reference: str) -> tuple[str, str, str]:
    """(project, secret_id, version) of a reference; a missing version means "latest"."""
    match = REFERENCE.fullmatch(reference) if isinstance(reference, str) else None
    if match is None:
        raise InvalidRequestError(
            "a secret reference looks like projects/P/secrets/S/versions/N|latest",
            field="secret",
        )
    return match["project"], match["secret_id"], match["version"] or "latest"


def job_labels(job_id: str) -> dict[str, str]:
    """Labels that let a job's secrets be found again (label values are lowercase, <= 63)."""
    return {"job_id": job_id.lower()[:_MAX_LABEL], "managed-by": MANAGED_BY}


def _api_errors(what: str) -> contextlib.AbstractContextManager[None]:
    """Translate Secret Manager errors; `what` is a resource name, never a value."""
    return google_api_errors("Secret Manager", what)


def _decode(data: bytes, what: str) -> str:
    text: str | None = None
    with contextlib.suppress(UnicodeDecodeError):
        text = data.decode("utf-8")
    if text is None:
        # Raised outside the handler: a UnicodeDecodeError (even as __context__) holds the bytes.
        raise InvalidRequestError(f"{what} is not UTF-8 text")
    return text


# Submit and dispatch read the annotations of a secret the operator shared; the operator
# grants that, on that secret only (docs/deploy.md, "Day two": roles/secretmanager.viewer).
SHARED_BY_OPERATOR = "granted per shared secret by the operator (docs/deploy.md)"


class SecretManagerStore:
    """Secrets in Google Secret Manager, one secret per job and name, labelled with the job."""

    def __init__(
        self,
        project: str,
        client: secretmanager.SecretManagerServiceClient | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.project = project
        self.client = client or secretmanager.SecretManagerServiceClient()
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"SecretManagerStore(project={self.project!r}, prefix={self.prefix!r})"

    @requires("secretmanager.secrets.create", "secretmanager.versions.add")
    def put(self, job_id: str, name: str, value: str) -> str:
        """Create the secret if needed and add `value` as a new version."""
        sid = secret_id(self.prefix, job_id, name)
        parent = f"projects/{self.project}"
        secret_name = f"{parent}/secrets/{sid}"
        data = value.encode("utf-8")
        create = secretmanager.CreateSecretRequest(
            parent=parent,
            secret_id=sid,
            secret=secretmanager.Secret(
                replication=secretmanager.Replication(
                    automatic=secretmanager.Replication.Automatic()
                ),
                labels=job_labels(job_id),
            ),
        )
        add = secretmanager.AddSecretVersionRequest(
            parent=secret_name,
            # The checksum lets Secret Manager reject a payload corrupted on the way.
            payload=secretmanager.SecretPayload(data=data, data_crc32c=google_crc32c.value(data)),
        )
        with _api_errors(secret_name):
            with contextlib.suppress(api_exceptions.AlreadyExists):
                self.client.create_secret(request=create)
            version = self.client.add_secret_version(request=add)
        return str(version.name)

    @requires("secretmanager.versions.access")
    def get(self, reference: str) -> str:
        """Access the referenced version (the latest when none is given)."""
        project, sid, version = parse_reference(reference)
        name = f"projects/{project}/secrets/{sid}/versions/{version}"
        request = secretmanager.AccessSecretVersionRequest(name=name)
        try:
            with _api_errors(name):
                response = self.client.access_secret_version(request=request)
        except (api_exceptions.PermissionDenied, api_exceptions.FailedPrecondition) as error:
            # A user's reference we may not read, or a disabled/destroyed version.
            raise NotFoundError(f"{name} not found or not accessible") from error
        payload = response.payload
        data = bytes(payload.data)
        if payload.data_crc32c and google_crc32c.value(data) != payload.data_crc32c:
            raise TransientError(f"{name}: payload checksum mismatch")
        return _decode(data, name)

    @requires("secretmanager.secrets.get", outside_terraform=SHARED_BY_OPERATOR)
    def annotations(self, reference: str) -> dict[str, str]:
        """GetSecret (metadata, needs secretmanager.secrets.get), never AccessSecretVersion."""
        project, sid, _ = parse_reference(reference)
        name = f"projects/{project}/secrets/{sid}"
        request = secretmanager.GetSecretRequest(name=name)
        try:
            with _api_errors(name):
                secret = self.client.get_secret(request=request)
        except api_exceptions.PermissionDenied as error:
            # Secret Manager answers PermissionDenied for a secret we may not see, whether
            # or not it exists: both read as "not found" to the caller.
            raise NotFoundError(f"{name} not found or not accessible") from error
        return {str(key): str(value) for key, value in dict(secret.annotations).items()}

    @requires("secretmanager.secrets.list", "secretmanager.secrets.delete")
    def delete_job_secrets(self, job_id: str) -> list[str]:
        """Delete the job's secrets, found by label and checked by id; returns their names."""
        if not JOB_ID.fullmatch(job_id):
            raise InvalidRequestError(f"invalid job id {job_id!r}", field="job_id")
        parent = f"projects/{self.project}"
        label = job_labels(job_id)["job_id"]
        request = secretmanager.ListSecretsRequest(parent=parent, filter=f'labels.job_id="{label}"')
        deleted = []
        with _api_errors(f"{parent}/secrets"):
            secrets = list(self.client.list_secrets(request=request))
        for secret in secrets:
            # The label is lowercased and truncated: confirm ownership by the exact id too.
            sid = str(secret.name).rsplit("/", 1)[-1]
            if job_of_secret(self.prefix, sid) != job_id:
                continue
            if dict(secret.labels).get("managed-by") != MANAGED_BY:
                continue
            with contextlib.suppress(NotFoundError), _api_errors(secret.name):
                self.client.delete_secret(
                    request=secretmanager.DeleteSecretRequest(name=secret.name)
                )
                deleted.append(str(secret.name))
        return deleted


class LocalSecretStore:
    """Secrets in a private (0600) JSON file outside the repository, for the local stack.

    Every read-modify-write holds an fcntl lock on a sidecar file, so the functions and the
    trainer (separate processes) can share it; writes replace the file atomically.
    """

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        project: str | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or DEFAULT_LOCAL_PROJECT
        configured = path or os.environ.get(LOCAL_SECRETS_ENV)
        default = DEFAULT_LOCAL_DIR / f"{self.project}.json"
        self.path = Path(configured or default).expanduser()
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"LocalSecretStore(path={str(self.path)!r}, project={self.project!r})"

    @property
    def _lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"secrets": {}}
        data: Any = None
        with contextlib.suppress(ValueError):
            data = json.loads(text)
        # Checked outside the handler: a JSONDecodeError keeps the whole document (the secrets)
        # on itself, and must not ride along as __context__ of our error.
        if not isinstance(data, dict) or not isinstance(data.get("secrets"), dict):
            raise TuningError(f"local secrets file {self.path} is not a valid secrets document")
        return data

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def _secret_name(self, sid: str) -> str:
        return f"projects/{self.project}/secrets/{sid}"

    def create_user_secret(
        self, secret_id: str, value: str, *, owners: list[str] | tuple[str, ...] = ()
    ) -> str:
        """A secret of a user's own (not a job's), shared as an operator would share it.

        `owners` become the `gemma-tuning-usable-by` annotation (tuning/tenancy.py); empty:
        no annotation, a secret nobody was given. Returns the reference of its first version.
        """
        from tuning.tenancy import USABLE_BY_ANNOTATION

        if not SECRET_ID.fullmatch(secret_id):
            raise InvalidRequestError(f"secret id {secret_id!r} is not valid for Secret Manager")
        annotations = {USABLE_BY_ANNOTATION: " ".join(owners)} if owners else {}
        with self._locked(exclusive=True):
            data = self._read()
            if secret_id in data["secrets"]:
                raise InvalidRequestError(f"{self._secret_name(secret_id)} already exists")
            data["secrets"][secret_id] = {"annotations": annotations, "versions": [value]}
            self._write(data)
        return f"{self._secret_name(secret_id)}/versions/1"

    def annotations(self, reference: str) -> dict[str, str]:
        """The secret's annotations; NotFoundError for a secret this store does not hold."""
        project, sid, _ = parse_reference(reference)
        what = f"projects/{project}/secrets/{sid}"
        if project != self.project:
            raise NotFoundError(f"{what} not found (local store holds project {self.project})")
        with self._locked(exclusive=False):
            record = self._read()["secrets"].get(sid)
        if not isinstance(record, dict):
            raise NotFoundError(f"{what} not found")
        return {str(k): str(v) for k, v in dict(record.get("annotations") or {}).items()}

    def put(self, job_id: str, name: str, value: str) -> str:
        """Append `value` as a new version of the job's secret."""
        sid = secret_id(self.prefix, job_id, name)
        with self._locked(exclusive=True):
            data = self._read()
            record = data["secrets"].setdefault(
                sid, {"job_id": job_id, "labels": job_labels(job_id), "versions": []}
            )
            record["versions"].append(value)
            self._write(data)
            number = len(record["versions"])
        return f"{self._secret_name(sid)}/versions/{number}"

    def get(self, reference: str) -> str:
        """The value of the referenced version (the latest when none is given)."""
        project, sid, version = parse_reference(reference)
        what = f"projects/{project}/secrets/{sid}/versions/{version}"
        if project != self.project:
            raise NotFoundError(f"{what} not found (local store holds project {self.project})")
        with self._locked(exclusive=False):
            record = self._read()["secrets"].get(sid)
        versions = record["versions"] if record else []
        index = len(versions) if version == "latest" else int(version)
        if not 1 <= index <= len(versions):
            raise NotFoundError(f"{what} not found")
        return str(versions[index - 1])

    def delete_job_secrets(self, job_id: str) -> list[str]:
        """Remove the job's secrets; returns their names (empty when none are left)."""
        if not JOB_ID.fullmatch(job_id):
            raise InvalidRequestError(f"invalid job id {job_id!r}", field="job_id")
        with self._locked(exclusive=True):
            data = self._read()
            doomed = sorted(
                sid for sid, record in data["secrets"].items() if record.get("job_id") == job_id
            )
            for sid in doomed:
                del data["secrets"][sid]
            if doomed:
                self._write(data)
        return [self._secret_name(sid) for sid in doomed]
