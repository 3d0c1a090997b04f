"""Hub staging (trainer/hub_staging.py) against fake-gcs-server, with an in-memory Hub: the
marker protocol, concurrent stagers, the per-job access check, revisions pinned to commits,
and the staged copy read through the imitated models volume (trainer/base_model.py)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.fake_hub import FakeHub
from trainer.base_model import ModelsMount, obtain_base_model
from trainer.errors import ModelNotFoundError, UserError
from trainer.hub_staging import (
    MARKER,
    StagedModel,
    StagingError,
    stage_hub_model,
    staging_prefix,
    staging_root,
)
from tuning.gcp.storage import GcsStore
from tuning.local.emulators import LOCAL_GCS_ROOT_ENV
from tuning.tenancy import BaseModelLocations

REPO = "google/gemma-tiny"
FILES = {
    "config.json": b'{"model_type": "gemma3_text"}',
    "model-00001-of-00002.safetensors": b"weights one" * 100,
    "model-00002-of-00002.safetensors": b"weights two" * 100,
    "tokenizer.json": b"{}",
    "original/consolidated.pth": b"not wanted",  # HUB_PATTERNS leave it on the Hub
}
WANTED = sorted(name for name in FILES if not name.startswith("original/"))


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


def stage(hub: FakeHub, store: GcsStore, bucket: str, tmp_path: Path, **kwargs: Any) -> StagedModel:
    arguments: dict[str, Any] = {"token": "token-a", "scratch": tmp_path / "scratch"}
    arguments.update(kwargs)
    return stage_hub_model(REPO, hub=hub, storage=store, models_bucket=bucket, **arguments)


def names_below(store: GcsStore, prefix: str) -> list[str]:
    return [uri.removeprefix(prefix) for uri in store.list(prefix)]


def test_a_first_job_stages_every_wanted_file_and_writes_the_marker_last(
    hub: FakeHub, store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    sha = hub.repos[REPO].refs["main"]
    root = staging_root(bucket, REPO, sha)
    marker_seen: list[bool] = []
    hub.before_download = lambda name: marker_seen.append(store.exists(f"{root}{MARKER}"))

    staged = stage(hub, store, bucket, tmp_path)

    assert staged.staged_now and staged.sha == sha
    assert staged.uri.startswith(root) and staged.uri.endswith("/")
    assert marker_seen == [False] * len(WANTED)  # no marker while any file was staging
    assert names_below(store, staged.uri) == WANTED
    assert (
        store.download_bytes(f"{staged.uri}model-00002-of-00002.safetensors")
        == FILES["model-00002-of-00002.safetensors"]
    )
    marker = json.loads(store.download_bytes(f"{root}{MARKER}"))
    assert marker["repo_id"] == REPO and marker["revision"] == sha
    assert marker["files"] == {name: len(FILES[name]) for name in WANTED}
    assert staged.uri == f"{root}{marker['folder']}/"
    assert not (tmp_path / "scratch").exists()  # one file at a time, gone afterwards


def test_a_later_job_reuses_the_copy_without_downloading(
    hub: FakeHub, store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    first = stage(hub, store, bucket, tmp_path)
    downloads = len(hub.downloads)

    again = stage(hub, store, bucket, tmp_path)

    assert not again.staged_now and again.uri == first.uri and again.files == first.files
    assert len(hub.downloads) == downloads


def test_a_token_without_access_never_reads_a_copy_staged_with_another(
    hub: FakeHub, store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    staged = stage(hub, store, bucket, tmp_path)  # by token-a, which accepted the licence

    for token in ("token-b", None):  # another caller's token, and anonymous access
        with pytest.raises(UserError, match="gated"):
            stage(hub, store, bucket, tmp_path, token=token)

    assert ("check_access", REPO, "token-b") in hub.calls
    assert names_below(store, staged.uri) == WANTED  # refused, nothing touched


def test_a_public_repo_stages_and_reuses_anonymously(
    store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    hub = FakeHub()
    hub.push(REPO, FILES)  # readers=None: public

    staged = stage(hub, store, bucket, tmp_path, token=None)
    again = stage(hub, store, bucket, tmp_path, token=None)

    assert staged.staged_now and not again.staged_now


def test_a_branch_is_pinned_to_its_commit_so_a_push_is_staged_anew(
    hub: FakeHub, store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    before = stage(hub, store, bucket, tmp_path)
    changed = {**FILES, "model-00002-of-00002.safetensors": b"retrained" * 100}
    new_sha = hub.push(REPO, changed)

    after = stage(hub, store, bucket, tmp_path)

    assert after.sha == new_sha != before.sha
    assert after.staged_now and after.uri.startswith(staging_root(bucket, REPO, new_sha))
    assert store.download_bytes(f"{after.uri}model-00002-of-00002.safetensors") == (
        b"retrained" * 100
    )
    assert (
        store.download_bytes(f"{before.uri}model-00002-of-00002.safetensors")
        == FILES["model-00002-of-00002.safetensors"]
    )
    # A pinned revision (a commit sha) still reaches the older copy.
    assert stage(hub, store, bucket, tmp_path, revision=before.sha).uri == before.uri


def test_two_jobs_staging_at_once_leave_one_copy_and_both_read_it(
    hub: FakeHub, store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    both_started = threading.Barrier(2, timeout=30)
    started: set[int] = set()

    def wait_for_the_other(name: str) -> None:
        if threading.get_ident() not in started:  # once per stager, at its first file
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

    assert not errors, errors
    assert results[0].uri == results[1].uri  # both read the winner's copy
    assert sorted(staged.staged_now for staged in results.values()) == [False, True]
    assert len(hub.downloads) == 2 * len(WANTED)  # both really staged
    root = staging_root(bucket, REPO, results[0].sha)
    folder = results[0].uri.removeprefix(root)
    assert names_below(store, root) == [MARKER] + [f"{folder}{name}" for name in WANTED]


def test_a_folder_without_its_marker_is_never_read(
    hub: FakeHub, store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    sha = hub.repos[REPO].refs["main"]
    root = staging_root(bucket, REPO, sha)
    orphan = f"{root}stage-{'0' * 32}/"  # a stager that died before its marker
    store.upload_bytes(f"{orphan}config.json", FILES["config.json"])

    staged = stage(hub, store, bucket, tmp_path)

    assert staged.staged_now and staged.uri != orphan
    assert names_below(store, staged.uri) == WANTED


def test_a_stager_that_fails_halfway_deletes_its_folder_and_writes_no_marker(
    hub: FakeHub, store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    def fail_on_the_second_shard(name: str) -> None:
        if name == "model-00002-of-00002.safetensors":
            raise ConnectionError("the Hub went away")

    hub.before_download = fail_on_the_second_shard

    with pytest.raises(ConnectionError):
        stage(hub, store, bucket, tmp_path)

    assert store.list(staging_prefix(bucket, REPO)) == []
    hub.before_download = None
    assert stage(hub, store, bucket, tmp_path).staged_now  # the next job stages it


def test_a_model_the_job_cannot_use_stages_nothing_but_its_config(
    hub: FakeHub, store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    def refuse(config: dict[str, Any]) -> None:
        raise UserError(f"text-only model ({config['model_type']})")

    with pytest.raises(UserError, match="text-only"):
        stage(hub, store, bucket, tmp_path, check_config=refuse)

    assert [name for _, _, name in hub.downloads] == ["config.json"]
    assert store.list(staging_prefix(bucket, REPO)) == []


def test_a_repo_without_config_json_is_not_a_model(
    store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    hub = FakeHub()
    hub.push(REPO, {"README.md": b"# not a model"})

    with pytest.raises(ModelNotFoundError, match=r"config\.json"):
        stage(hub, store, bucket, tmp_path, token=None)


def test_a_broken_marker_fails_once_naming_what_to_delete(
    hub: FakeHub, store: GcsStore, bucket: str, tmp_path: Path
) -> None:
    root = staging_root(bucket, REPO, hub.repos[REPO].refs["main"])
    store.upload_bytes(f"{root}{MARKER}", b'{"folder": "../../merged_models/victim"}')

    with pytest.raises(StagingError, match=f"delete it to stage {REPO} again"):
        stage(hub, store, bucket, tmp_path)


def test_create_bytes_writes_only_where_nothing_is(store: GcsStore, bucket: str) -> None:
    uri = f"gs://{bucket}/once/marker.json"

    assert store.create_bytes(uri, b"first") is True
    assert store.create_bytes(uri, b"second") is False
    assert store.download_bytes(uri) == b"first"


# Through the imitated models volume --------------------------------------------------------


@pytest.fixture
def mount(bucket: str) -> ModelsMount:
    """The models bucket's base_models/ as the volume shows it: fake-gcs-server's own folder."""
    root = Path(os.environ[LOCAL_GCS_ROOT_ENV]) / bucket / "base_models"
    return ModelsMount(path=root, bucket=bucket, only_dir="base_models")


def locations(bucket: str) -> BaseModelLocations:
    from tuning.tenancy import GcsLocation

    return BaseModelLocations(allowed=(GcsLocation(bucket, ("base_models",)),), refused=())


def test_a_hub_model_is_read_from_its_staged_copy_on_the_volume(
    hub: FakeHub, store: GcsStore, bucket: str, mount: ModelsMount, tmp_path: Path
) -> None:
    notes: list[str] = []
    checked: list[dict[str, Any]] = []

    model_dir = obtain_base_model(
        REPO,
        storage=store,
        work_dir=tmp_path / "work",
        token="token-a",
        locations=locations(bucket),
        mount=mount,
        check_config=checked.append,
        note=notes.append,
        hub=hub,
    )

    sha = hub.repos[REPO].refs["main"]
    assert model_dir.parent == mount.path / "hub" / REPO / sha
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == WANTED
    assert (model_dir / "model-00001-of-00002.safetensors").read_bytes() == FILES[
        "model-00001-of-00002.safetensors"
    ]
    assert checked and checked[-1] == {"model_type": "gemma3_text"}
    (note,) = notes
    assert f"gs://{bucket}/base_models/hub/{REPO}/{sha}/stage-" in note and "staged" in note
    assert not (tmp_path / "work" / "base").exists()  # nothing downloaded into the task


def test_a_gs_model_is_read_in_place_from_the_volume(
    store: GcsStore, bucket: str, mount: ModelsMount, tmp_path: Path
) -> None:
    uri = f"gs://{bucket}/base_models/team/tiny/"
    store.upload_bytes(f"{uri}config.json", FILES["config.json"])
    store.upload_bytes(f"{uri}model.safetensors", b"weights")

    model_dir = obtain_base_model(
        uri,
        storage=store,
        work_dir=tmp_path / "work",
        token=None,
        locations=locations(bucket),
        mount=mount,
    )

    assert model_dir == mount.path / "team" / "tiny"
    assert (model_dir / "model.safetensors").read_bytes() == b"weights"
    assert not (tmp_path / "work").exists()
