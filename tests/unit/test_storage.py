"""Offline parts of the GCS store: URIs, local target paths and URL signers."""

from __future__ import annotations

import datetime
import json
import stat
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from tuning.errors import InvalidRequestError, TuningError
from tuning.gcp.storage import (
    GcsStore,
    IamSigner,
    LocalKeySigner,
    default_signer,
    gcs_uri,
    local_target,
    parse_gcs_uri,
)


class StandInCredentials:
    """The attributes IamSigner reads from google-auth credentials, and a counted refresh."""

    def __init__(self, email: str, token_after_refresh: str) -> None:
        self.service_account_email = "default"  # what Compute Engine reports before a refresh
        self._email = email
        self._token_after_refresh = token_after_refresh
        self.token: str | None = None
        self.valid = False
        self.refreshed_with: list[Any] = []

    def refresh(self, request: Any) -> None:
        self.refreshed_with.append(request)
        self.service_account_email = self._email
        self.token = self._token_after_refresh
        self.valid = True


class RecordingBlob:
    """Records what a signer passes to `generate_signed_url` instead of calling IAM."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def generate_signed_url(self, **kwargs: Any) -> str:
        self.calls.append(kwargs)
        return "https://signed.example/url"


def test_iam_signer_passes_service_account_email_and_access_token() -> None:
    credentials = StandInCredentials("runner@proj.iam.gserviceaccount.com", "ya29.token")
    request = object()
    signer = IamSigner(credentials=credentials, request=request)  # type: ignore[arg-type]
    blob = RecordingBlob()

    url = signer.sign(blob, datetime.timedelta(minutes=15), "GET")

    assert url == "https://signed.example/url"
    assert credentials.refreshed_with == [request]
    assert blob.calls == [
        {
            "version": "v4",
            "expiration": datetime.timedelta(minutes=15),
            "method": "GET",
            "service_account_email": "runner@proj.iam.gserviceaccount.com",
            "access_token": "ya29.token",
        }
    ]


def test_iam_signer_reuses_a_valid_token() -> None:
    credentials = StandInCredentials("runner@proj.iam.gserviceaccount.com", "ya29.token")
    signer = IamSigner(credentials=credentials, request=object())  # type: ignore[arg-type]
    blob = RecordingBlob()

    signer.sign(blob, datetime.timedelta(minutes=1), "GET")
    signer.sign(blob, datetime.timedelta(minutes=1), "GET")

    assert len(credentials.refreshed_with) == 1
    assert len(blob.calls) == 2


def test_iam_signer_refuses_credentials_without_a_service_account() -> None:
    credentials = StandInCredentials("", "ya29.token")
    signer = IamSigner(credentials=credentials, request=object())  # type: ignore[arg-type]

    with pytest.raises(TuningError):
        signer.sign(RecordingBlob(), datetime.timedelta(minutes=1), "GET")


def test_local_key_signer_creates_a_private_key_once(tmp_path: Path) -> None:
    key_path = tmp_path / "keys" / "signer.json"
    blob = storage.Client(project="p", credentials=AnonymousCredentials()).bucket("b").blob("a b")
    signer = LocalKeySigner(key_path, endpoint="http://127.0.0.1:4443")

    url = signer.sign(blob, datetime.timedelta(minutes=5), "GET")
    first_key = key_path.read_text()
    LocalKeySigner(key_path, endpoint="http://127.0.0.1:4443").sign(
        blob, datetime.timedelta(minutes=5), "GET"
    )

    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_text() == first_key
    assert json.loads(first_key)["type"] == "service_account"
    assert url.startswith("http://127.0.0.1:4443/b/a%20b?")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert "private_key" not in repr(signer)


def test_default_signer_is_iam_outside_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)

    assert isinstance(default_signer(), IamSigner)


def test_default_signer_is_local_with_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:4443")

    assert isinstance(default_signer(), LocalKeySigner)


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/a",
        "bucket/a",
        "gs://",
        "gs://UPPER/a",
        "gs://b/a",
        "/etc/passwd",
        "gs://a..b/x",
    ],
)
def test_parse_rejects_non_gcs_uris(uri: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_gcs_uri(uri)


def test_parse_and_build_round_trip() -> None:
    assert parse_gcs_uri("gs://my-bucket/configs/job.json") == ("my-bucket", "configs/job.json")
    assert parse_gcs_uri("gs://my-bucket") == ("my-bucket", "")
    assert gcs_uri("my-bucket", "configs/job.json") == "gs://my-bucket/configs/job.json"
    assert gcs_uri("my-bucket", "/configs/") == "gs://my-bucket/configs/"


@pytest.mark.parametrize(
    "name", ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/..", "", "a\\..\\b", "a\0b"]
)
def test_local_target_refuses_escaping_names(tmp_path: Path, name: str) -> None:
    assert local_target(tmp_path, name) is None


def test_local_target_keeps_relative_paths(tmp_path: Path) -> None:
    assert local_target(tmp_path, "nested/model.safetensors") == (
        tmp_path.resolve() / "nested" / "model.safetensors"
    )


class ListingClient:
    """Lists literal names as GCS does (fake-gcs-server collapses '//' and resolves '..')."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def list_blobs(self, bucket: str, prefix: str) -> list[Any]:
        return [storage.Blob(name, bucket=None) for name in self.names if name.startswith(prefix)]  # type: ignore[arg-type]


def test_listed_names_with_empty_or_dot_segments_are_left_out() -> None:
    names = ["ds/train.jsonl", "ds//eval.jsonl", "ds/../other/train.jsonl", "ds/./x.jsonl"]
    store = GcsStore(client=ListingClient(names), signer=LocalKeySigner(endpoint="http://x"))  # type: ignore[arg-type]

    assert store.list("gs://data/ds/") == ["gs://data/ds/train.jsonl"]
