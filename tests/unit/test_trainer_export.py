"""The Hub uploader's calls, tokenizer-file completion, and the trainer's import weight (pure)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trainer.errors import UserError
from trainer.export import HuggingFaceHubUploader
from trainer.tokenizer_files import complete_tokenizer_files, stop_on_end_of_turn


class FakeHfApi:
    """Records the calls the real HfApi would receive."""

    instances: list[FakeHfApi] = []

    def __init__(self, token: str, fail_with: Exception | None = None) -> None:
        self.token = token
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_with = fail_with
        FakeHfApi.instances.append(self)

    def create_repo(self, **kwargs: Any) -> None:
        self.calls.append(("create_repo", kwargs))
        if self.fail_with:
            raise self.fail_with

    def upload_folder(self, **kwargs: Any) -> None:
        self.calls.append(("upload_folder", kwargs))


def test_hub_upload_creates_a_private_repo_then_uploads_the_folder(tmp_path: Path) -> None:
    uploader = HuggingFaceHubUploader(api_factory=FakeHfApi)

    url = uploader.upload(tmp_path, repo_id="me/model", token="tok", commit_message="Fine-tuned")

    api = FakeHfApi.instances[-1]
    assert url == "https://huggingface.co/me/model"
    assert api.token == "tok"
    assert api.calls == [
        (
            "create_repo",
            {"repo_id": "me/model", "repo_type": "model", "private": True, "exist_ok": True},
        ),
        (
            "upload_folder",
            {
                "folder_path": str(tmp_path),
                "repo_id": "me/model",
                "repo_type": "model",
                "commit_message": "Fine-tuned",
            },
        ),
    ]


def test_hub_refusing_the_token_is_a_user_error(tmp_path: Path) -> None:
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    response = httpx.Response(
        403, request=httpx.Request("POST", "https://huggingface.co/api/repos/create")
    )
    refused = HfHubHTTPError("forbidden", response=response)
    uploader = HuggingFaceHubUploader(api_factory=lambda token: FakeHfApi(token, fail_with=refused))

    with pytest.raises(UserError, match="HTTP 403"):
        uploader.upload(tmp_path, repo_id="me/model", token="tok", commit_message="x")


class Token:
    def __init__(self, content: str) -> None:
        self.content, self.lstrip, self.rstrip = content, False, False
        self.normalized, self.single_word, self.special = False, False, True


class FakeTokenizer:
    added_tokens_decoder = {1: Token("<eos>"), 106: Token("<end_of_turn>")}
    eos_token_id, bos_token_id, pad_token_id, unk_token_id = 1, 2, 0, 3

    def convert_tokens_to_ids(self, token: str) -> int:
        return 106 if token == "<end_of_turn>" else 3


def test_saved_tokenizer_is_completed_from_the_base_snapshot(tmp_path: Path) -> None:
    source, target = tmp_path / "base", tmp_path / "out"
    source.mkdir()
    target.mkdir()
    (source / "tokenizer.model").write_bytes(b"spm")
    (target / "tokenizer_config.json").write_text(
        json.dumps({"vocab_file": "/tmp/x", "eos_token": "<eos>"})
    )
    (target / "generation_config.json").write_text(json.dumps({"eos_token_id": 1}))

    complete_tokenizer_files(target, source=source, tokenizer=FakeTokenizer())
    stop_on_end_of_turn(target, FakeTokenizer())

    config = json.loads((target / "tokenizer_config.json").read_text())
    assert (target / "tokenizer.model").read_bytes() == b"spm"
    assert "vocab_file" not in config and config["eos_token"] == "<eos>"
    assert config["added_tokens_decoder"]["106"]["content"] == "<end_of_turn>"
    assert json.loads((target / "generation_config.json").read_text())["eos_token_id"] == [1, 106]


def test_the_entry_point_imports_without_the_ml_stack() -> None:
    code = (
        "import sys, trainer.main, trainer.pipeline\n"
        "print(sorted({'torch', 'transformers', 'trl', 'peft'} & set(sys.modules)))"
    )

    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout

    assert output.strip() == "[]"
