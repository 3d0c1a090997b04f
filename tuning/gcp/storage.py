"""GCS store over google-cloud-storage: gs:// URIs, prefixes, and V4 signed URLs.

The same code runs against real GCS and fake-gcs-server: when STORAGE_EMULATOR_HOST is set,
`storage.Client()` itself switches to the emulator with anonymous credentials (and works
without a project), so `GcsStore()` needs no special case; only URL signing differs.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import datetime
import json
import logging
import mimetypes
import os
import secrets
import threading
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Protocol, Self, cast

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
import google.cloud.storage as storage
import google.cloud.storage.exceptions as storage_exceptions
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.cloud.storage.retry import DEFAULT_RETRY
from google.oauth2 import service_account
from pydantic import BaseModel

from tuning.errors import InvalidRequestError, NotFoundError, TransientError, TuningError
from tuning.gcp.access_boundary import AccessBoundaryError, Operation, StorageBoundary
from tuning.gcp.errors import google_api_errors
from tuning.gcp.permissions import requires
from tuning.layout import GCS_SCHEME, gcs_uri, is_safe_object_name, parse_gcs_uri

# What one ranged read of a large object fetches (GcsStore.open_read).
READ_CHUNK_BYTES = 8 * 2**20

logger = logging.getLogger(__name__)

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
LOCAL_SIGNER_ENV = "TUNING_LOCAL_SIGNER_KEY_FILE"
DEFAULT_LOCAL_SIGNER_KEY = Path("~/.local/share/gemma-tuning/local-signer.json")
# V4 signed URLs are valid for at most seven days.
MAX_SIGNED_URL_LIFETIME = datetime.timedelta(days=7)
SIGNED_URL_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

# Beyond the shared list: transport errors of the HTTP client this library uses, and a
# checksum mismatch on download (bytes damaged in transit: fetch again).
_ALSO_RETRYABLE: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    google.auth.exceptions.TransportError,
    storage_exceptions.DataCorruption,
)
# Our writes overwrite whole objects with the same content on retry, so they are idempotent
# even without generation preconditions (the library only retries those by default).
_WRITE_RETRY: Retry = DEFAULT_RETRY


def _require_prefix(prefix_uri: str) -> tuple[str, str]:
    """A directory-like prefix: ends with '/' so that job1/ never matches job10/."""
    bucket, prefix = parse_gcs_uri(prefix_uri)
    if not prefix.endswith("/"):
        raise InvalidRequestError(f"prefix must end with '/': {prefix_uri!r}")
    return bucket, prefix


def local_target(root: Path, relative: str) -> Path | None:
    """Where `relative` (an object name below a prefix) lands under `root`; None if outside.

    GCS object names are not paths: '..', empty segments, a leading '/' or a backslash would
    write outside the target, and so would a symlink already inside it (hence the resolve).
    """
    root = root.resolve()
    parts = relative.split("/")
    if any(part in ("", ".", "..") or "\\" in part or "\0" in part for part in parts):
        return None
    target = (root / relative).resolve()
    return target if target.is_relative_to(root) and target != root else None


def _api_errors(uri: str) -> contextlib.AbstractContextManager[None]:
    return google_api_errors("GCS", uri, _ALSO_RETRYABLE)


class UrlSigner(Protocol):
    """Signs a V4 URL for one blob; how the signature is made differs by environment."""

    def sign(self, blob: storage.Blob, expiration: datetime.timedelta, method: str) -> str:
        """A V4 signed URL for `blob`, valid for `expiration`."""
        ...


class IamSigner:
    """Production signer: the runtime service account signs through IAM signBlob, no key file.

    Cloud Run and Cloud Functions credentials cannot sign locally, so the library is given the
    account's email and an access token and calls the IAM Credentials API to sign. The account
    needs iam.serviceAccounts.signBlob on itself (terraform/iam.tf grants a custom role holding
    only that permission, not the whole Token Creator role).
    """

    def __init__(
        self,
        credentials: google.auth.credentials.Credentials | None = None,
        request: google.auth.transport.Request | None = None,
    ) -> None:
        self._credentials = credentials
        self._request = request
        self._lock = threading.Lock()

    def _email_and_token(self) -> tuple[str, str]:
        """The service account email and a valid access token, refreshed when stale."""
        with self._lock:
            if self._credentials is None:
                self._credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
            credentials = self._credentials
            if not credentials.valid:
                request = self._request or google.auth.transport.requests.Request()
                try:
                    credentials.refresh(request)
                except google.auth.exceptions.TransportError as error:
                    raise TransientError("could not refresh credentials for signing") from error
            # Compute Engine credentials report "default" until a refresh fetched the real email.
            email = getattr(credentials, "service_account_email", None)
            token = credentials.token
        if not email or email == "default" or not token:
            raise TuningError(
                "signed URLs need service account credentials with an email and access token"
            )
        return str(email), str(token)

    def sign(self, blob: storage.Blob, expiration: datetime.timedelta, method: str) -> str:
        """Sign through IAM signBlob with the runtime service account."""
        email, token = self._email_and_token()
        try:
            return str(
                blob.generate_signed_url(
                    version="v4",
                    expiration=expiration,
                    method=method,
                    service_account_email=email,
                    access_token=token,
                )
            )
        except google.auth.exceptions.TransportError as error:
            raise TransientError("IAM signBlob call failed") from error


class LocalKeySigner:
    """Local-stack signer: a generated service-account-style key, endpoint fake-gcs-server.

    fake-gcs-server does not verify signatures, so any RSA key will do; the key lives outside
    the repository (mode 0600) so that nothing key-shaped is ever committed.
    """

    def __init__(self, key_path: Path | str | None = None, endpoint: str | None = None) -> None:
        configured = key_path or os.environ.get(LOCAL_SIGNER_ENV) or DEFAULT_LOCAL_SIGNER_KEY
        self.key_path = Path(configured).expanduser()
        self._endpoint = endpoint
        self._credentials: service_account.Credentials | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalKeySigner(key_path={str(self.key_path)!r})"

    @property
    def endpoint(self) -> str:
        """Where signed URLs point: fake-gcs-server from STORAGE_EMULATOR_HOST."""
        endpoint = self._endpoint or os.environ.get(EMULATOR_ENV)
        if not endpoint:
            raise TuningError(f"LocalKeySigner needs {EMULATOR_ENV} (the fake-gcs-server URL)")
        if not endpoint.startswith(("http://", "https://")):
            endpoint = f"http://{endpoint}"
        return endpoint.rstrip("/")

    def credentials(self) -> service_account.Credentials:
        """Signing credentials from the key file, generated on first use."""
        with self._lock:
            if self._credentials is None:
                info = json.loads(self._ensure_key().read_text())
                self._credentials = service_account.Credentials.from_service_account_info(info)
            return self._credentials

    def _ensure_key(self) -> Path:
        if self.key_path.is_file():
            return self.key_path
        self.key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        info = {
            "type": "service_account",
            "project_id": "local-tuning",
            "private_key_id": secrets.token_hex(20),
            "private_key": pem,
            "client_email": "local-signer@local-tuning.iam.gserviceaccount.com",
            "client_id": str(uuid.uuid4().int)[:21],
            "token_uri": "https://oauth2.googleapis.com/token",
        }
        # Write a private temp file, then link it into place: a concurrent process either wins
        # the link or finds the finished key; nobody reads a half-written file.
        tmp = self.key_path.with_name(f".{self.key_path.name}.{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(info, handle)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self.key_path)
        finally:
            tmp.unlink(missing_ok=True)
        return self.key_path

    def sign(self, blob: storage.Blob, expiration: datetime.timedelta, method: str) -> str:
        """Sign locally with the generated key; the URL points at fake-gcs-server."""
        return str(
            blob.generate_signed_url(
                version="v4",
                expiration=expiration,
                method=method,
                credentials=self.credentials(),
                api_access_endpoint=self.endpoint,
            )
        )


def default_signer() -> UrlSigner:
    """LocalKeySigner against the emulator, IamSigner in GCP."""
    if os.environ.get(EMULATOR_ENV):
        return LocalKeySigner()
    return IamSigner()


class GcsStore:
    """Reads, writes, lists, deletes and signs GCS objects addressed by gs:// URIs.

    With a `boundary` (see `narrowed`), every operation outside it raises AccessBoundaryError
    before any request: the same rules the downscoped token carries in production, enforced
    here too so that the local stack refuses what GCS would.
    """

    def __init__(
        self,
        client: storage.Client | None = None,
        signer: UrlSigner | None = None,
        *,
        boundary: StorageBoundary | None = None,
    ) -> None:
        # With STORAGE_EMULATOR_HOST set the client targets fake-gcs-server anonymously.
        self.client = client or storage.Client()
        self.signer = signer or default_signer()
        self.boundary = boundary

    def narrowed(self, boundary: StorageBoundary, client: storage.Client | None = None) -> Self:
        """A copy limited to `boundary` (over `client` if given); this store stays as it is."""
        narrowed = copy.copy(self)  # keeps the subclass and its state (tests record reads)
        narrowed.boundary = boundary
        if client is not None:
            narrowed.client = client
        return narrowed

    def _check(self, operation: Operation, uri: str) -> None:
        if self.boundary is not None:
            self.boundary.check(operation, uri)

    def _blob(self, uri: str, operation: Operation) -> storage.Blob:
        bucket, path = parse_gcs_uri(uri)
        if not path or path.endswith("/"):
            raise InvalidRequestError(f"not an object URI: {uri!r}")
        self._check(operation, uri)
        return self.client.bucket(bucket).blob(path)

    @requires("storage.objects.create", "storage.objects.delete")
    def upload_bytes(
        self, uri: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> str:
        """Write `data` to `uri` (overwriting) and return the URI."""
        blob = self._blob(uri, Operation.WRITE)
        with _api_errors(uri):
            blob.upload_from_string(data, content_type=content_type, retry=_WRITE_RETRY)
        return uri

    @requires("storage.objects.create")
    def create_bytes(
        self, uri: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> bool:
        """Write `data` to `uri` only if no object is there: True when this call created it,
        False when one already existed (GCS's `ifGenerationMatch=0` precondition, so of two
        concurrent writers exactly one wins). A retry of a create whose first try landed
        also answers False: a caller that must know reads the object back."""
        blob = self._blob(uri, Operation.CREATE)
        try:
            with _api_errors(uri):
                blob.upload_from_string(
                    data, content_type=content_type, if_generation_match=0, retry=_WRITE_RETRY
                )
        except api_exceptions.PreconditionFailed:
            return False
        return True

    @requires("storage.objects.create", "storage.objects.delete")
    def upload_file(self, local_path: Path | str, uri: str) -> str:
        """Upload one local file to `uri` (overwriting; large files go up resumably)."""
        blob = self._blob(uri, Operation.WRITE)
        path = Path(local_path)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with _api_errors(uri):
            blob.upload_from_filename(str(path), content_type=content_type, retry=_WRITE_RETRY)
        return uri

    @requires("storage.objects.create", "storage.objects.delete")
    def upload_json(self, uri: str, obj: Any) -> str:
        """Write `obj` (JSON-able or a pydantic model) as UTF-8 JSON."""
        if isinstance(obj, BaseModel):
            payload = obj.model_dump_json().encode("utf-8")
        else:
            payload = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return self.upload_bytes(uri, payload, content_type="application/json")

    @requires("storage.objects.get")
    def download_bytes(self, uri: str) -> bytes:
        """The object's bytes; NotFoundError when it does not exist."""
        blob = self._blob(uri, Operation.READ)
        with _api_errors(uri):
            return bytes(blob.download_as_bytes())

    @requires("storage.objects.get")
    def open_read(self, uri: str) -> BinaryIO:
        """The object as a file read in ranged chunks (for one too large to hold at once);
        NotFoundError when it does not exist."""
        blob = self._blob(uri, Operation.READ)
        with _api_errors(uri):
            blob.reload()  # its size and generation: the reader reads that generation only
            return cast(BinaryIO, blob.open("rb", chunk_size=READ_CHUNK_BYTES))

    @requires("storage.objects.get")
    def download_json(self, uri: str) -> Any:
        """The object parsed as JSON."""
        data = self.download_bytes(uri)
        try:
            return json.loads(data)
        except ValueError as error:
            raise TuningError(f"{uri} is not valid JSON") from error

    @requires("storage.objects.get")
    def exists(self, uri: str) -> bool:
        """Whether the object exists."""
        blob = self._blob(uri, Operation.READ)
        with _api_errors(uri):
            return bool(blob.exists())

    @requires("storage.objects.list")
    def list(self, prefix_uri: str) -> builtins.list[str]:
        """URIs of every object whose name starts with the prefix, sorted.

        A listed name with an empty, '.' or '..' segment is left out (and logged): no URI
        that could read it would pass `parse_gcs_uri`, and nothing of ours writes one.
        """
        bucket, prefix = parse_gcs_uri(prefix_uri)
        self._check(Operation.LIST, prefix_uri)
        with _api_errors(prefix_uri):
            names = [blob.name for blob in self.client.list_blobs(bucket, prefix=prefix)]
        unsafe = [name for name in names if not is_safe_object_name(name)]
        if unsafe:
            logger.warning(
                "ignoring %d object(s) under %s with an empty, '.' or '..' segment, e.g. %r",
                len(unsafe),
                prefix_uri,
                unsafe[0],
            )
        return [gcs_uri(bucket, name) for name in sorted(names) if is_safe_object_name(name)]

    @requires("storage.objects.list")
    def total_size(self, prefix_uri: str) -> int:
        """Bytes stored under the prefix (what downloading it all would write)."""
        bucket, prefix = parse_gcs_uri(prefix_uri)
        self._check(Operation.LIST, prefix_uri)
        with _api_errors(prefix_uri):
            return sum(blob.size or 0 for blob in self.client.list_blobs(bucket, prefix=prefix))

    @requires("storage.objects.create", "storage.objects.delete")
    def upload_dir(self, local_dir: Path | str, prefix_uri: str) -> builtins.list[str]:
        """Upload every regular file under `local_dir` below the prefix; returns the URIs."""
        bucket_name, prefix = _require_prefix(prefix_uri)
        root = Path(local_dir)
        if not root.is_dir():
            raise NotFoundError(f"{root} is not a directory")
        bucket = self.client.bucket(bucket_name)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        names = [prefix + path.relative_to(root).as_posix() for path in files]
        for name in names:  # all checked first: a refused name uploads nothing
            self._check(Operation.WRITE, gcs_uri(bucket_name, name))
        uploaded = []
        for path, name in zip(files, names, strict=True):
            uri = gcs_uri(bucket_name, name)
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            with _api_errors(uri):
                # Large files (model weights) go up as resumable uploads automatically.
                bucket.blob(name).upload_from_filename(
                    str(path), content_type=content_type, retry=_WRITE_RETRY
                )
            uploaded.append(uri)
        return uploaded

    @requires("storage.objects.list", "storage.objects.get")
    def download_dir(self, prefix_uri: str, local_dir: Path | str) -> builtins.list[Path]:
        """Download every object below the prefix into `local_dir`, keeping relative paths."""
        bucket_name, prefix = _require_prefix(prefix_uri)
        self._check(Operation.LIST, prefix_uri)
        root = Path(local_dir)
        root.mkdir(parents=True, exist_ok=True)
        resolved_root = root.resolve()
        with _api_errors(prefix_uri):
            blobs = [
                b
                for b in self.client.list_blobs(bucket_name, prefix=prefix)
                if not b.name.endswith("/")
            ]  # folder placeholders hold no data
        # Check every name before writing anything, so a hostile listing writes nothing.
        targets = []
        for blob in blobs:
            target = local_target(resolved_root, blob.name[len(prefix) :])
            if target is None:
                raise InvalidRequestError(
                    f"object {gcs_uri(bucket_name, blob.name)} would escape {root}"
                )
            self._check(Operation.READ, gcs_uri(bucket_name, blob.name))
            targets.append((blob, target))
        written = []
        for blob, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            with _api_errors(gcs_uri(bucket_name, blob.name)):
                blob.download_to_filename(str(target))
            written.append(target)
        return written

    @requires("storage.objects.delete")
    def delete(self, uri: str) -> bool:
        """Delete one object; False when it was already absent."""
        blob = self._blob(uri, Operation.DELETE)
        try:
            with _api_errors(uri):
                blob.delete()
        except NotFoundError:
            return False
        return True

    @requires("storage.objects.list", "storage.objects.delete")
    def delete_prefix(self, prefix_uri: str) -> builtins.list[str]:
        """Delete every object below a '/'-terminated prefix; returns the deleted URIs."""
        # The bucket root (gs://b/ has the empty prefix) is refused here too.
        _require_prefix(prefix_uri)
        self._check(Operation.DELETE, prefix_uri)
        deleted = []
        # One by one: fake-gcs-server does not support batch requests, and a job's prefix
        # holds few objects. A concurrent delete of the same object is not an error.
        for uri in self.list(prefix_uri):
            if self.delete(uri):
                deleted.append(uri)
        return deleted

    @requires("storage.buckets.get", "storage.buckets.create")
    def create_bucket_if_absent(self, name: str, location: str | None = None) -> None:
        """Create a bucket unless it exists (local stack and tests; Terraform owns real ones)."""
        gcs_uri(name)  # validates the name
        if self.boundary is not None:
            raise AccessBoundaryError(f"creating bucket {name} is outside a job's boundary")
        with _api_errors(f"{GCS_SCHEME}{name}"), contextlib.suppress(api_exceptions.Conflict):
            self.client.create_bucket(name, location=location)

    @requires("iam.serviceAccounts.signBlob", "storage.objects.get")
    def signed_url(self, uri: str, expires: datetime.timedelta, method: str = "GET") -> str:
        """A V4 signed URL for the object, valid for `expires` (at most seven days)."""
        method = method.upper()
        if method not in SIGNED_URL_METHODS:
            raise InvalidRequestError(f"unsupported method for a signed URL: {method}")
        if not datetime.timedelta(0) < expires <= MAX_SIGNED_URL_LIFETIME:
            raise InvalidRequestError("signed URL lifetime must be between 0 and 7 days")
        operation = Operation.READ if method in ("GET", "HEAD") else Operation.WRITE
        return self.signer.sign(self._blob(uri, operation), expires, method)


def narrowed_store(
    store: GcsStore,
    boundary: StorageBoundary,
    *,
    project: str,
    source_credentials: google.auth.credentials.Credentials | None = None,
) -> GcsStore:
    """`store` limited to `boundary`: enforced by the store itself everywhere and, against real
    GCS, by a client whose token is downscoped to the same rules.

    The downscoped credentials exchange the source token at Google's Security Token Service
    for one that carries the boundary, refreshing it as it expires
    (https://cloud.google.com/iam/docs/downscoping-short-lived-credentials). fake-gcs-server
    checks no token, so against it the store's own checks are the boundary.
    """
    if os.environ.get(EMULATOR_ENV):
        return store.narrowed(boundary)
    from google.auth import downscoped

    if source_credentials is None:
        source_credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    credentials = downscoped.Credentials(
        source_credentials=source_credentials,
        credential_access_boundary=boundary.to_credential_access_boundary(),
    )
    return store.narrowed(boundary, storage.Client(project=project, credentials=credentials))
