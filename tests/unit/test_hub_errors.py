"""The Hub's exceptions as the trainer's, one mapping for every Hub call it makes."""

from __future__ import annotations

import pytest
from huggingface_hub.errors import LocalEntryNotFoundError

from trainer.hub import hub_errors
from trainer.modeling import _download_from_hub
from tuning.errors import TransientError


def test_an_uncached_file_while_offline_is_transient_not_a_broken_repository():
    # LocalEntryNotFoundError is an EntryNotFoundError: it once read as "not a model repository".
    with pytest.raises(TransientError, match="unreachable"), hub_errors("google/x", "main"):
        raise LocalEntryNotFoundError("offline and not cached")


def test_the_snapshot_download_maps_errors_the_same_way(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)

    with pytest.raises(TransientError, match="unreachable"):
        _download_from_hub("google/not-cached-here", tmp_path / "m", None, ["config.json"])
