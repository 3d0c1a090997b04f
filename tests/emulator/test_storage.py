"""GcsStore against fake-gcs-server: round trips, prefixes, deletion and signed URLs."""

from __future__ import annotations

import datetime
import os
import stat
import urllib.request
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from tuning.errors import InvalidRequestError, NotFoundError
from tuning.gcp.storage import GcsStore, LocalKeySigner, default_signer, gcs_uri


@pytest.fixture
def store(tmp_path: Path) -> GcsStore:
    return GcsStore(signer=LocalKeySigner(tmp_path / "signer" / "key.json"))


@pytest.fixture
def bucket(store: GcsStore, unique: str) -> str:
    name = f"test-{unique}"
    store.create_bucket_if_absent(name)
    return name


def test_client_targets_the_emulator_anonymously() -> None:
    store = GcsStore()

    assert store.client.api_endpoint == os.environ["STORAGE_EMULATOR_HOST"]
    assert isinstance(default_signer(), LocalKeySigner)


def test_bytes_round_trip(store: GcsStore, bucket: str) -> None:
    uri = gcs_uri(bucket, "configs/job-a.bin")

    store.upload_bytes(uri, b"\x00\x01payload")

    assert store.download_bytes(uri) == b"\x00\x01payload"
    assert store.exists(uri)


def test_json_round_trip(store: GcsStore, bucket: str) -> None:
    uri = gcs_uri(bucket, "configs/job-a.json")
    document = {"job_id": "job-a", "steps": 3, "tags": ["ü", None]}

    store.upload_json(uri, document)

    assert store.download_json(uri) == document


def test_upload_overwrites(store: GcsStore, bucket: str) -> None:
    uri = gcs_uri(bucket, "x/obj")
    store.upload_bytes(uri, b"one")

    store.upload_bytes(uri, b"two")

    assert store.download_bytes(uri) == b"two"


def test_missing_object_raises_not_found(store: GcsStore, bucket: str) -> None:
    uri = gcs_uri(bucket, "nothing/here.json")

    with pytest.raises(NotFoundError):
        store.download_bytes(uri)
    assert not store.exists(uri)


def test_list_returns_uris_under_prefix(store: GcsStore, bucket: str) -> None:
    for name in ["a/1", "a/2/x", "ab/3", "b/4"]:
        store.upload_bytes(gcs_uri(bucket, name), b".")

    listed = store.list(gcs_uri(bucket, "a/"))

    assert listed == [gcs_uri(bucket, "a/1"), gcs_uri(bucket, "a/2/x")]


def test_dir_round_trip(store: GcsStore, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "nested").mkdir(parents=True)
    (source / "adapter_config.json").write_text('{"r": 8}')
    (source / "nested" / "weights.bin").write_bytes(os.urandom(3000))
    prefix = gcs_uri(bucket, "trained_adapters/job-a/")

    uploaded = store.upload_dir(source, prefix)
    written = store.download_dir(prefix, tmp_path / "dst")

    assert uploaded == [prefix + "adapter_config.json", prefix + "nested/weights.bin"]
    assert sorted(p.relative_to(tmp_path / "dst").as_posix() for p in written) == [
        "adapter_config.json",
        "nested/weights.bin",
    ]
    for path in written:
        relative = path.relative_to(tmp_path / "dst")
        assert path.read_bytes() == (source / relative).read_bytes()


def test_download_dir_refuses_names_escaping_the_target(
    store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    # fake-gcs-server normalises '..' out of object names, so escape through a symlink that
    # already sits in the target; the '..' names are covered in tests/unit/test_storage.py.
    prefix = gcs_uri(bucket, "hostile/")
    store.upload_bytes(prefix + "ok.txt", b"fine")
    store.upload_bytes(prefix + "link/escaped.txt", b"evil")
    target = tmp_path / "dst"
    target.mkdir()
    (tmp_path / "outside").mkdir()
    (target / "link").symlink_to(tmp_path / "outside")

    with pytest.raises(InvalidRequestError):
        store.download_dir(prefix, target)

    assert not (tmp_path / "outside" / "escaped.txt").exists()
    assert not (target / "ok.txt").exists()


def test_delete_prefix_leaves_sibling_with_longer_name(store: GcsStore, bucket: str) -> None:
    store.upload_bytes(gcs_uri(bucket, "models/job1/a"), b"1")
    store.upload_bytes(gcs_uri(bucket, "models/job1/sub/b"), b"1")
    store.upload_bytes(gcs_uri(bucket, "models/job10/a"), b"10")

    deleted = store.delete_prefix(gcs_uri(bucket, "models/job1/"))

    assert deleted == [gcs_uri(bucket, "models/job1/a"), gcs_uri(bucket, "models/job1/sub/b")]
    assert store.list(gcs_uri(bucket, "models/")) == [gcs_uri(bucket, "models/job10/a")]
    assert store.delete_prefix(gcs_uri(bucket, "models/job1/")) == []


@pytest.mark.parametrize("prefix", ["models/job1", ""])
def test_delete_prefix_refuses_prefix_without_trailing_slash(
    store: GcsStore, bucket: str, prefix: str
) -> None:
    store.upload_bytes(gcs_uri(bucket, "models/job1/a"), b"1")

    with pytest.raises(InvalidRequestError):
        store.delete_prefix(gcs_uri(bucket, prefix))

    assert store.exists(gcs_uri(bucket, "models/job1/a"))


def test_delete_is_idempotent(store: GcsStore, bucket: str) -> None:
    uri = gcs_uri(bucket, "x/y")
    store.upload_bytes(uri, b".")

    assert store.delete(uri) is True
    assert store.delete(uri) is False


def test_create_bucket_if_absent_twice(store: GcsStore, unique: str) -> None:
    store.create_bucket_if_absent(f"twice-{unique}")

    store.create_bucket_if_absent(f"twice-{unique}")

    assert store.client.bucket(f"twice-{unique}").exists()


def test_signed_url_fetches_bytes_from_emulator(
    store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    uri = gcs_uri(bucket, "gguf_models/job-a/model-q8_0.gguf")
    store.upload_bytes(uri, b"GGUF-bytes")

    url = store.signed_url(uri, datetime.timedelta(minutes=5))

    assert url.startswith(os.environ["STORAGE_EMULATOR_HOST"] + "/")
    assert "X-Goog-Signature=" in url
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - emulator URL
        assert response.read() == b"GGUF-bytes"
    key_file = tmp_path / "signer" / "key.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_signed_url_rejects_lifetime_over_seven_days(store: GcsStore, bucket: str) -> None:
    with pytest.raises(InvalidRequestError):
        store.signed_url(gcs_uri(bucket, "a/b"), datetime.timedelta(days=8))


def test_store_accepts_an_explicit_client() -> None:
    client = storage.Client()

    store = GcsStore(client=client)

    assert store.client is client


UNSAFE_NAMES = ["a/../b", "a/./b", "a//b", "/a", "..", ".", "a/..", "a/b//", "a/../"]


@pytest.fixture
def unreachable_store() -> GcsStore:
    """A store whose every request would fail as a transport error, not as a refusal."""
    client = storage.Client(
        project="unused",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": "http://127.0.0.1:9"},
    )
    return GcsStore(client=client, signer=LocalKeySigner(endpoint="http://127.0.0.1:9"))


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_names_with_empty_or_dot_segments_are_refused_before_any_request(
    unreachable_store: GcsStore, name: str, tmp_path: Path
) -> None:
    uri = f"gs://bucket/{name}"
    prefix = uri if uri.endswith("/") else f"{uri}/"
    store = unreachable_store
    (tmp_path / "f").write_bytes(b"x")
    attempts = {
        "upload_bytes": lambda: store.upload_bytes(uri, b"x"),
        "download_bytes": lambda: store.download_bytes(uri),
        "exists": lambda: store.exists(uri),
        "delete": lambda: store.delete(uri),
        "list": lambda: store.list(uri),
        "total_size": lambda: store.total_size(uri),
        "download_dir": lambda: store.download_dir(prefix, tmp_path / "dst"),
        "upload_dir": lambda: store.upload_dir(tmp_path, prefix),
        "delete_prefix": lambda: store.delete_prefix(prefix),
        "signed_url": lambda: store.signed_url(uri, datetime.timedelta(minutes=1)),
    }

    for operation, attempt in attempts.items():
        with pytest.raises(InvalidRequestError, match="segment") as raised:
            attempt()
        assert name in raised.value.message, operation


def test_fake_gcs_server_resolves_what_gcs_keeps_literally(store: GcsStore, bucket: str) -> None:
    # Why such names are refused: written around the store, "ds//train.jsonl" lands on (and
    # overwrites) "ds/train.jsonl" here, while GCS would keep two objects.
    raw = store.client.bucket(bucket)
    raw.blob("ds/train.jsonl").upload_from_string(b"{}")
    raw.blob("ds//train.jsonl").upload_from_string(b"hidden")

    assert store.list(gcs_uri(bucket, "ds/")) == [gcs_uri(bucket, "ds/train.jsonl")]
    assert store.download_bytes(gcs_uri(bucket, "ds/train.jsonl")) == b"hidden"
    with pytest.raises(InvalidRequestError, match="segment"):
        store.upload_bytes(gcs_uri(bucket, "ds//train.jsonl"), b"hidden")


def test_a_narrowed_store_refuses_everything_outside_its_boundary(
    store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    from tuning.gcp.access_boundary import (
        Access,
        AccessBoundaryError,
        StorageBoundary,
        StorageRule,
    )

    store.upload_bytes(gcs_uri(bucket, "mine/data.txt"), b"mine")
    store.upload_bytes(gcs_uri(bucket, "theirs/data.txt"), b"theirs")
    store.upload_bytes(gcs_uri(bucket, "out/job1/old.txt"), b"old")
    boundary = StorageBoundary(
        (
            StorageRule(bucket, "mine/"),
            StorageRule(bucket, "out/job1/", access=Access.READ_WRITE),
        )
    )
    narrowed = store.narrowed(boundary)
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "f.txt").write_bytes(b"new")

    assert narrowed.download_bytes(gcs_uri(bucket, "mine/data.txt")) == b"mine"
    assert narrowed.list(gcs_uri(bucket, "mine/")) == [gcs_uri(bucket, "mine/data.txt")]
    assert narrowed.upload_dir(tmp_path / "up", gcs_uri(bucket, "out/job1/"))
    assert narrowed.delete_prefix(gcs_uri(bucket, "out/job1/"))
    refused = {
        "read": lambda: narrowed.download_bytes(gcs_uri(bucket, "theirs/data.txt")),
        "exists": lambda: narrowed.exists(gcs_uri(bucket, "theirs/data.txt")),
        "list": lambda: narrowed.list(gcs_uri(bucket, "theirs/")),
        "list the bucket": lambda: narrowed.list(gcs_uri(bucket, "")),
        "size": lambda: narrowed.total_size(gcs_uri(bucket, "theirs/")),
        "download": lambda: narrowed.download_dir(gcs_uri(bucket, "theirs/"), tmp_path / "d"),
        "write": lambda: narrowed.upload_bytes(gcs_uri(bucket, "mine/data.txt"), b"changed"),
        "upload": lambda: narrowed.upload_dir(tmp_path / "up", gcs_uri(bucket, "out/job10/")),
        "delete": lambda: narrowed.delete(gcs_uri(bucket, "theirs/data.txt")),
        "delete a prefix": lambda: narrowed.delete_prefix(gcs_uri(bucket, "theirs/")),
        "sign": lambda: narrowed.signed_url(
            gcs_uri(bucket, "theirs/data.txt"), datetime.timedelta(minutes=1)
        ),
        "create a bucket": lambda: narrowed.create_bucket_if_absent(f"{bucket}-2"),
    }
    for operation, attempt in refused.items():
        with pytest.raises(AccessBoundaryError):
            attempt()
        assert operation  # every one refused before any request changed anything

    # The unnarrowed store is untouched, and what was refused did not happen.
    assert store.boundary is None
    assert store.download_bytes(gcs_uri(bucket, "mine/data.txt")) == b"mine"
    assert store.download_bytes(gcs_uri(bucket, "theirs/data.txt")) == b"theirs"
    assert store.list(gcs_uri(bucket, "out/job10/")) == []
    assert not (tmp_path / "d").exists()
