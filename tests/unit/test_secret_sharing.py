"""Users' secrets shared by the operator: their annotations, read without their values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import secretmanager

from tests.unit.test_secrets import RecordingSecretManager
from tuning.errors import InvalidRequestError, NotFoundError
from tuning.gcp.secrets import LocalSecretStore, SecretManagerStore, SecretStore
from tuning.tenancy import USABLE_BY_ANNOTATION

VALUE = "hf_user-secret-value-that-must-not-leak"


class SecretMetadataManager(RecordingSecretManager):
    """The recording stand-in, plus GetSecret over the secrets it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_get_with: Exception | None = None

    def get_secret(self, request: secretmanager.GetSecretRequest) -> Any:
        self.requests.append(("get_secret", request))
        if self.fail_get_with is not None:
            raise self.fail_get_with
        if request.name not in self.secrets:
            raise api_exceptions.NotFound(request.name)
        return self.secrets[request.name]


@pytest.fixture
def client() -> SecretMetadataManager:
    client = SecretMetadataManager()
    name = "projects/users-project/secrets/team-hf"
    client.secrets[name] = secretmanager.Secret(
        name=name, annotations={USABLE_BY_ANNOTATION: "alice@example.com *"}
    )
    client.versions[name] = [VALUE.encode()]
    return client


@pytest.fixture
def manager(client: SecretMetadataManager) -> SecretManagerStore:
    return SecretManagerStore("proj-a", client=client)  # type: ignore[arg-type]


@pytest.fixture
def local(tmp_path: Path) -> LocalSecretStore:
    return LocalSecretStore(tmp_path / "secrets" / "local.json", project="proj-a")


def test_manager_reads_annotations_with_get_secret_only(
    manager: SecretManagerStore, client: SecretMetadataManager
) -> None:
    annotations = manager.annotations("projects/users-project/secrets/team-hf/versions/3")

    assert annotations == {USABLE_BY_ANNOTATION: "alice@example.com *"}
    assert [name for name, _ in client.requests] == ["get_secret"]  # never AccessSecretVersion
    (request,) = client.calls("get_secret")
    assert isinstance(request, secretmanager.GetSecretRequest)
    assert request.name == "projects/users-project/secrets/team-hf"  # the secret, no version


@pytest.mark.parametrize(
    "failure", [api_exceptions.NotFound("x"), api_exceptions.PermissionDenied("x")]
)
def test_manager_missing_and_forbidden_secrets_are_both_not_found(
    manager: SecretManagerStore, client: SecretMetadataManager, failure: Exception
) -> None:
    client.fail_get_with = failure

    with pytest.raises(NotFoundError) as raised:
        manager.annotations("projects/users-project/secrets/team-hf/versions/1")

    assert "projects/users-project/secrets/team-hf" in raised.value.message


def test_local_user_secret_round_trip(local: LocalSecretStore) -> None:
    reference = local.create_user_secret("team-hf", VALUE, owners=["alice@example.com", "*"])

    assert reference == "projects/proj-a/secrets/team-hf/versions/1"
    assert local.get(reference) == VALUE
    assert local.get("projects/proj-a/secrets/team-hf/versions/latest") == VALUE
    assert local.annotations(reference) == {USABLE_BY_ANNOTATION: "alice@example.com *"}


def test_local_unmarked_user_secret_has_no_annotations(local: LocalSecretStore) -> None:
    reference = local.create_user_secret("plain", VALUE)

    assert local.annotations(reference) == {}


def test_local_annotations_of_unknown_secrets_are_not_found(local: LocalSecretStore) -> None:
    local.create_user_secret("team-hf", VALUE, owners=["*"])

    for reference in (
        "projects/proj-a/secrets/never-made/versions/1",
        "projects/proj-b/secrets/team-hf/versions/1",
    ):
        with pytest.raises(NotFoundError):
            local.annotations(reference)


def test_local_user_secrets_survive_job_clean_up_and_never_collide(
    local: LocalSecretStore,
) -> None:
    reference = local.create_user_secret("team-hf", VALUE, owners=["*"])
    local.put("job-1", "hf_token", "job value")

    local.delete_job_secrets("job-1")

    assert local.get(reference) == VALUE
    with pytest.raises(InvalidRequestError, match="already exists"):
        local.create_user_secret("team-hf", "another value", owners=["*"])
    assert local.get(reference) == VALUE


def test_user_secret_values_stay_out_of_reprs_and_errors(local: LocalSecretStore) -> None:
    local.create_user_secret("team-hf", VALUE, owners=["*"])

    with pytest.raises(InvalidRequestError) as duplicate:
        local.create_user_secret("team-hf", VALUE)
    with pytest.raises(InvalidRequestError) as bad_id:
        local.create_user_secret("bad/id", VALUE)

    for text in (repr(local), str(duplicate.value), str(bad_id.value)):
        assert VALUE not in text
    stored = json.loads(local.path.read_text())["secrets"]["team-hf"]
    assert stored["annotations"] == {USABLE_BY_ANNOTATION: "*"}


def test_both_stores_read_annotations_through_the_protocol(
    local: LocalSecretStore, manager: SecretManagerStore
) -> None:
    local.create_user_secret("team-hf", VALUE, owners=["alice@example.com", "*"])
    stores: list[SecretStore] = [local, manager]
    references = [
        "projects/proj-a/secrets/team-hf/versions/1",
        "projects/users-project/secrets/team-hf/versions/1",
    ]

    found = [store.annotations(ref) for store, ref in zip(stores, references, strict=True)]

    assert found == [{USABLE_BY_ANNOTATION: "alice@example.com *"}] * 2
