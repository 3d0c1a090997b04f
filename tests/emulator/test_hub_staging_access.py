"""What a job may write while staging a Hub model (review finding F5), against fake-gcs-server
with the store's own boundary checks (the local stand-in for a downscoped token): its own
`stage-<uuid>/` folder and, create-only, the marker of the commit it stages; it reads the
repo's other copies but writes none of them."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.emulator.test_hub_staging import FILES, MARKER, REPO, WANTED, names_below
from tests.fixtures.fake_hub import FakeHub
from trainer.hub_staging import (
    StagedModel,
    StagerStorage,
    stage_hub_model,
    stager_rules,
    staging_root,
    staging_rule,
)
from tuning.gcp.access_boundary import AccessBoundaryError, StorageBoundary
from tuning.gcp.storage import GcsStore, narrowed_store


@pytest.fixture
def store() -> GcsStore:
    return GcsStore()


@pytest.fixture
def bucket(store: GcsStore, unique: str) -> str:
    name = f"models-{unique}"
    store.create_bucket_if_absent(name)
    return name


@pytest.fixture
def hub() -> FakeHub:
    hub = FakeHub()
    hub.push(REPO, FILES, readers={"token-a"})
    return hub


def job_storage(store: GcsStore, bucket: str) -> GcsStore:
    """The job's own store: the repo's staged copies, read-only (trainer/storage_access.py)."""
    boundary = StorageBoundary(rules=(staging_rule(bucket, REPO),))
    return narrowed_store(store, boundary, project="local")


def stager_storage(store: GcsStore, bucket: str) -> StagerStorage:
    def narrowed(sha: str, folder: str) -> GcsStore:
        rules = (staging_rule(bucket, REPO), *stager_rules(bucket, REPO, sha, folder))
        return narrowed_store(store, StorageBoundary(rules=rules), project="local")

    return narrowed


def stage(hub: FakeHub, store: GcsStore, bucket: str, scratch: Path) -> StagedModel:
    return stage_hub_model(
        REPO,
        token="token-a",
        hub=hub,
        storage=job_storage(store, bucket),
        models_bucket=bucket,
        scratch=scratch,
        stager_storage=stager_storage(store, bucket),
    )


def test_two_narrowed_stagers_at_once_leave_one_copy_and_both_read_it(
    hub: FakeHub, store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    both_started = threading.Barrier(2, timeout=30)
    started: set[int] = set()

    def wait_for_the_other(name: str) -> None:
        if threading.get_ident() not in started:
            started.add(threading.get_ident())
            both_started.wait()

    hub.before_download = wait_for_the_other
    results: dict[int, StagedModel] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = stage(hub, store, bucket, tmp_path / f"job{index}")
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # The loser discarded its own folder and read the winner's copy, all within its rules.
    assert not errors, errors
    assert results[0].uri == results[1].uri
    assert sorted(staged.staged_now for staged in results.values()) == [False, True]
    root = staging_root(bucket, REPO, results[0].sha)
    folder = results[0].uri.removeprefix(root)
    assert names_below(store, root) == [MARKER] + [f"{folder}{name}" for name in WANTED]


def test_a_stager_writes_its_own_folder_and_creates_the_marker_only(
    hub: FakeHub, store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    staged = stage(hub, store, bucket, tmp_path / "first")
    root = staging_root(bucket, REPO, staged.sha)
    marker = f"{root}{MARKER}"
    before = store.download_bytes(marker)
    later = stager_storage(store, bucket)(staged.sha, "stage-" + "b" * 32)
    own = f"{root}stage-{'b' * 32}/"

    later.upload_bytes(f"{own}config.json", b"{}")  # its own folder: write, delete
    assert later.delete(f"{own}config.json")
    assert later.create_bytes(marker, b"{}") is False  # create-only: the marker stays
    for attempt in (
        lambda: later.upload_bytes(f"{staged.uri}config.json", b"poisoned"),  # another copy
        lambda: later.delete(f"{staged.uri}config.json"),
        lambda: later.upload_bytes(marker, b"{}"),  # replace the marker
        lambda: later.delete(marker),
        lambda: later.create_bytes(f"{staging_root(bucket, REPO, 'c' * 40)}{MARKER}", b"{}"),
        lambda: job_storage(store, bucket).create_bytes(marker, b"{}"),  # the job itself
    ):
        with pytest.raises(AccessBoundaryError):
            attempt()
    assert store.download_bytes(marker) == before
    assert later.download_bytes(f"{staged.uri}config.json") == FILES["config.json"]


def test_a_stager_that_cannot_replace_a_marker_reads_the_winner(
    hub: FakeHub, store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    """Cloud Storage may refuse a create-only token's create on an existing object with 403
    rather than 412: the stager then reads the marker that is there."""
    from google.api_core.exceptions import Forbidden

    first = stage(hub, store, bucket, tmp_path / "first")
    narrowed = stager_storage(store, bucket)

    def refusing(sha: str, folder: str) -> GcsStore:
        writer = narrowed(sha, folder)

        def create_bytes(uri: str, data: bytes, content_type: str = "") -> bool:
            raise Forbidden("storage.objects.delete is needed to replace an object")

        writer.create_bytes = create_bytes  # type: ignore[method-assign]
        return writer

    # Another job, racing with the first: it found no marker, staged, and lost.
    hub.before_download = None
    original = store.download_bytes
    calls = {"marker reads": 0}

    def no_marker_at_first(uri: str) -> bytes:
        if uri.endswith(MARKER):
            calls["marker reads"] += 1
            if calls["marker reads"] == 1:
                from tuning.errors import NotFoundError

                raise NotFoundError(uri)
        return original(uri)

    store.download_bytes = no_marker_at_first  # type: ignore[method-assign]
    second = stage_hub_model(
        REPO,
        token="token-a",
        hub=hub,
        storage=store,
        models_bucket=bucket,
        scratch=tmp_path / "second",
        stager_storage=refusing,
    )

    assert (second.uri, second.staged_now) == (first.uri, False)
    root = staging_root(bucket, REPO, first.sha)
    assert [
        name
        for name in names_below(store, root)
        if not name.startswith(first.uri.removeprefix(root))
    ] == [MARKER]  # the loser's folder is gone
