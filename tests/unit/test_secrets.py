"""Secret stores: the local file store end to end, Secret Manager up to the requests it sends."""

from __future__ import annotations

import multiprocessing
import re
import stat
from pathlib import Path
from typing import Any

import google_crc32c
import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import secretmanager

from tuning.errors import InvalidRequestError, NotFoundError, TransientError, TuningError
from tuning.gcp.secrets import (
    LocalSecretStore,
    SecretManagerStore,
    SecretStore,
    job_of_secret,
    secret_id,
)

SECRET = "hf_s3cr3t-value-that-must-not-leak"
REFERENCE = re.compile(r"^projects/[^/]+/secrets/[A-Za-z0-9_-]{1,255}/versions/[1-9][0-9]*$")


@pytest.fixture
def local(tmp_path: Path) -> LocalSecretStore:
    return LocalSecretStore(tmp_path / "secrets" / "local.json", project="proj-a")


def test_local_round_trip(local: LocalSecretStore) -> None:
    reference = local.put("job-1", "hf_token", SECRET)

    assert local.get(reference) == SECRET
    assert REFERENCE.fullmatch(reference)
    assert reference == "projects/proj-a/secrets/tuning-job-1-hf_token/versions/1"


def test_local_versions_and_latest(local: LocalSecretStore) -> None:
    first = local.put("job-1", "wandb_key", "one")
    second = local.put("job-1", "wandb_key", "two")

    assert local.get(first) == "one"
    assert local.get(second) == "two"
    assert local.get("projects/proj-a/secrets/tuning-job-1-wandb_key/versions/latest") == "two"
    assert local.get("projects/proj-a/secrets/tuning-job-1-wandb_key") == "two"


def test_local_delete_job_secrets_is_idempotent_and_scoped(local: LocalSecretStore) -> None:
    local.put("job1", "hf_token", "a")
    local.put("job1", "wandb_key", "b")
    kept = local.put("job10", "hf_token", "c")

    deleted = local.delete_job_secrets("job1")
    again = local.delete_job_secrets("job1")

    assert deleted == [
        "projects/proj-a/secrets/tuning-job1-hf_token",
        "projects/proj-a/secrets/tuning-job1-wandb_key",
    ]
    assert again == []
    assert local.get(kept) == "c"
    with pytest.raises(NotFoundError):
        local.get("projects/proj-a/secrets/tuning-job1-hf_token/versions/1")


def test_local_file_is_private(local: LocalSecretStore) -> None:
    local.put("job-1", "hf_token", SECRET)

    assert stat.S_IMODE(local.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(local.path.parent.stat().st_mode) == 0o700


def test_local_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNING_LOCAL_SECRETS_FILE", str(tmp_path / "env.json"))

    store = LocalSecretStore(project="proj-a")
    store.put("job-1", "hf_token", SECRET)

    assert store.path == tmp_path / "env.json"
    assert (tmp_path / "env.json").is_file()


def test_local_default_path_is_outside_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNING_LOCAL_SECRETS_FILE", raising=False)

    store = LocalSecretStore(project="proj-a")

    assert store.path == Path("~/.local/share/gemma-tuning/secrets/proj-a.json").expanduser()
    assert not store.path.is_relative_to(Path(__file__).resolve().parents[2])


def test_local_unknown_or_foreign_references_are_not_found(local: LocalSecretStore) -> None:
    reference = local.put("job-1", "hf_token", SECRET)

    with pytest.raises(NotFoundError):
        local.get(reference.replace("/versions/1", "/versions/2"))
    with pytest.raises(NotFoundError):
        local.get(reference.replace("proj-a", "other-project"))


def _put_many(path: str, worker: int) -> None:
    store = LocalSecretStore(path, project="proj-a")
    for index in range(20):
        store.put(f"job-{worker}", f"key_{index}", f"value-{worker}-{index}")


def test_local_store_is_safe_across_processes(local: LocalSecretStore) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_put_many, args=(str(local.path), w)) for w in range(4)]

    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)

    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    for worker in range(4):
        for index in range(20):
            reference = f"projects/proj-a/secrets/tuning-job-{worker}-key_{index}/versions/1"
            assert local.get(reference) == f"value-{worker}-{index}"


def test_value_never_in_reprs_or_errors(local: LocalSecretStore) -> None:
    reference = local.put("job-1", "hf_token", SECRET)
    errors: list[TuningError] = []

    for call in (
        lambda: local.put("job-1", "bad name!", SECRET),
        lambda: local.put("job/../x", "hf_token", SECRET),
        lambda: local.get(reference.replace("/versions/1", "/versions/9")),
        lambda: local.get("not a reference"),
    ):
        with pytest.raises(TuningError) as caught:
            call()
        errors.append(caught.value)
    local.path.write_text('{"secrets": {"x": ' + SECRET)  # corrupt the file
    with pytest.raises(TuningError) as corrupt:
        local.get(reference)
    errors.append(corrupt.value)

    texts = [repr(local), str(local)] + [str(e) for e in errors] + [repr(e) for e in errors]
    assert not any(SECRET in text for text in texts)
    # The parser's error keeps the document on itself: it must not ride along.
    assert corrupt.value.__cause__ is None and corrupt.value.__context__ is None


@pytest.mark.parametrize(
    ("job_id", "name"),
    [
        ("job/1", "hf_token"),
        ("job 1", "hf_token"),
        ("", "hf_token"),
        ("job1", "hf-token"),
        ("job1", ""),
        ("j" * 300, "hf_token"),
    ],
)
def test_secret_id_rejects_invalid_parts(job_id: str, name: str) -> None:
    with pytest.raises(InvalidRequestError):
        secret_id("tuning-", job_id, name)


def test_secret_ids_are_unambiguous() -> None:
    assert secret_id("tuning-", "a-b", "c") != secret_id("tuning-", "a", "b_c")
    assert job_of_secret("tuning-", secret_id("tuning-", "a-b", "c")) == "a-b"
    assert job_of_secret("tuning-", "someone-elses-secret") is None


class RecordingSecretManager:
    """A stand-in for SecretManagerServiceClient that records requests and keeps state."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.secrets: dict[str, Any] = {}
        self.versions: dict[str, list[bytes]] = {}
        self.fail_access_with: Exception | None = None

    def create_secret(self, request: secretmanager.CreateSecretRequest) -> Any:
        self.requests.append(("create_secret", request))
        name = f"{request.parent}/secrets/{request.secret_id}"
        if name in self.secrets:
            raise api_exceptions.AlreadyExists(name)
        secret = secretmanager.Secret(request.secret)
        secret.name = name
        self.secrets[name] = secret
        self.versions[name] = []
        return secret

    def add_secret_version(self, request: secretmanager.AddSecretVersionRequest) -> Any:
        self.requests.append(("add_secret_version", request))
        if request.parent not in self.secrets:
            raise api_exceptions.NotFound(request.parent)
        self.versions[request.parent].append(request.payload.data)
        number = len(self.versions[request.parent])
        return secretmanager.SecretVersion(name=f"{request.parent}/versions/{number}")

    def access_secret_version(self, request: secretmanager.AccessSecretVersionRequest) -> Any:
        self.requests.append(("access_secret_version", request))
        if self.fail_access_with is not None:
            raise self.fail_access_with
        secret, _, version = request.name.rpartition("/versions/")
        stored = self.versions.get(secret, [])
        index = len(stored) if version == "latest" else int(version)
        if not 1 <= index <= len(stored):
            raise api_exceptions.NotFound(request.name)
        data = stored[index - 1]
        payload = secretmanager.SecretPayload(data=data, data_crc32c=google_crc32c.value(data))
        return secretmanager.AccessSecretVersionResponse(name=request.name, payload=payload)

    def list_secrets(self, request: secretmanager.ListSecretsRequest) -> list[Any]:
        self.requests.append(("list_secrets", request))
        match = re.fullmatch(r'labels\.job_id="([a-z0-9_-]*)"', request.filter)
        assert match is not None, request.filter
        return [
            s
            for s in self.secrets.values()
            if s.name.startswith(request.parent + "/") and s.labels.get("job_id") == match.group(1)
        ]

    def delete_secret(self, request: secretmanager.DeleteSecretRequest) -> None:
        self.requests.append(("delete_secret", request))
        if self.secrets.pop(request.name, None) is None:
            raise api_exceptions.NotFound(request.name)
        self.versions.pop(request.name, None)

    def calls(self, method: str) -> list[Any]:
        return [request for name, request in self.requests if name == method]


@pytest.fixture
def client() -> RecordingSecretManager:
    return RecordingSecretManager()


@pytest.fixture
def manager(client: RecordingSecretManager) -> SecretManagerStore:
    return SecretManagerStore("proj-a", client=client)  # type: ignore[arg-type]


def test_manager_put_creates_labelled_secret_with_automatic_replication(
    manager: SecretManagerStore, client: RecordingSecretManager
) -> None:
    reference = manager.put("Job-1", "hf_token", SECRET)

    (create,) = client.calls("create_secret")
    (add,) = client.calls("add_secret_version")
    assert reference == "projects/proj-a/secrets/tuning-Job-1-hf_token/versions/1"
    assert create.parent == "projects/proj-a"
    assert create.secret_id == "tuning-Job-1-hf_token"
    assert "automatic" in create.secret.replication
    assert dict(create.secret.labels) == {"job_id": "job-1", "managed-by": "gemma-tuning"}
    assert add.parent == "projects/proj-a/secrets/tuning-Job-1-hf_token"
    assert add.payload.data == SECRET.encode()
    assert add.payload.data_crc32c == google_crc32c.value(SECRET.encode())


def test_manager_put_twice_adds_a_version(
    manager: SecretManagerStore, client: RecordingSecretManager
) -> None:
    manager.put("job-1", "hf_token", "one")

    reference = manager.put("job-1", "hf_token", "two")

    assert reference.endswith("/versions/2")
    assert len(client.calls("create_secret")) == 2  # the second one met AlreadyExists
    assert manager.get(reference) == "two"


def test_manager_get_accepts_user_references(
    manager: SecretManagerStore, client: RecordingSecretManager
) -> None:
    client.create_secret(
        secretmanager.CreateSecretRequest(
            parent="projects/other", secret_id="their-token", secret=secretmanager.Secret()
        )
    )
    client.add_secret_version(
        secretmanager.AddSecretVersionRequest(
            parent="projects/other/secrets/their-token",
            payload=secretmanager.SecretPayload(data=b"theirs"),
        )
    )

    value = manager.get("projects/other/secrets/their-token/versions/latest")
    bare = manager.get("projects/other/secrets/their-token")

    assert value == bare == "theirs"
    accessed = [request.name for request in client.calls("access_secret_version")]
    assert accessed == ["projects/other/secrets/their-token/versions/latest"] * 2


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (api_exceptions.NotFound("gone"), NotFoundError),
        (api_exceptions.PermissionDenied("no"), NotFoundError),
        (api_exceptions.ServiceUnavailable("later"), TransientError),
        (api_exceptions.DeadlineExceeded("later"), TransientError),
    ],
)
def test_manager_get_maps_errors(
    manager: SecretManagerStore,
    client: RecordingSecretManager,
    error: Exception,
    expected: type[Exception],
) -> None:
    client.fail_access_with = error

    with pytest.raises(expected):
        manager.get("projects/proj-a/secrets/tuning-job-1-hf_token/versions/1")


def test_manager_delete_job_secrets_by_label_and_exact_id(
    manager: SecretManagerStore, client: RecordingSecretManager
) -> None:
    manager.put("job1", "hf_token", "a")
    manager.put("job1", "wandb_key", "b")
    manager.put("job10", "hf_token", "c")
    # A secret that carries the label but is not ours (no managed-by, foreign id) stays.
    client.create_secret(
        secretmanager.CreateSecretRequest(
            parent="projects/proj-a",
            secret_id="user-secret",
            secret=secretmanager.Secret(labels={"job_id": "job1"}),
        )
    )

    deleted = manager.delete_job_secrets("job1")
    again = manager.delete_job_secrets("job1")

    assert deleted == [
        "projects/proj-a/secrets/tuning-job1-hf_token",
        "projects/proj-a/secrets/tuning-job1-wandb_key",
    ]
    assert again == []
    (listing, _) = client.calls("list_secrets")
    assert listing.parent == "projects/proj-a"
    assert listing.filter == 'labels.job_id="job1"'
    assert sorted(client.secrets) == [
        "projects/proj-a/secrets/tuning-job10-hf_token",
        "projects/proj-a/secrets/user-secret",
    ]


def test_manager_values_absent_from_repr_and_errors(
    manager: SecretManagerStore, client: RecordingSecretManager
) -> None:
    client.create_secret(
        secretmanager.CreateSecretRequest(
            parent="projects/proj-a", secret_id="binary", secret=secretmanager.Secret()
        )
    )
    client.add_secret_version(
        secretmanager.AddSecretVersionRequest(
            parent="projects/proj-a/secrets/binary",
            payload=secretmanager.SecretPayload(data=b"\xff" + SECRET.encode()),
        )
    )

    with pytest.raises(TuningError) as not_text:
        manager.get("projects/proj-a/secrets/binary/versions/1")
    with pytest.raises(InvalidRequestError) as bad_name:
        manager.put("job-1", "bad-name", SECRET)

    assert SECRET not in repr(manager)
    assert SECRET not in str(not_text.value)
    assert not_text.value.__cause__ is None and not_text.value.__context__ is None
    assert SECRET not in str(bad_name.value)


def test_both_stores_satisfy_the_protocol(
    local: LocalSecretStore, manager: SecretManagerStore
) -> None:
    stores: list[SecretStore] = [local, manager]

    references = [store.put("job-1", "hf_token", SECRET) for store in stores]

    assert [store.get(ref) for store, ref in zip(stores, references, strict=True)] == [SECRET] * 2
