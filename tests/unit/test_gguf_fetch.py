"""The fetch tool: pinned by sha256, extracts only the vendored llama.cpp, idempotent."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from tools import llama_cpp as tool
from trainer.llama_cpp import CACHE_ENV, LlamaCppTools, cached_source_dir

ROOT = "llama_cpp_python-0.3.36/"
VENDORED = ROOT + "vendor/llama.cpp/"
MEMBERS = {
    ROOT + "pyproject.toml": "the python bindings",
    VENDORED + "convert_hf_to_gguf.py": "print('converter')",
    VENDORED + "gguf-py/gguf/__init__.py": "",
    VENDORED + "models/templates/chat.jinja": "{{ messages }}",
    VENDORED + "models/ggml-vocab-llama.gguf": "large test vocabulary",
    VENDORED + "docs/build.md": "documentation",
}


def make_sdist(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, text in MEMBERS.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def sdist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in sdist that the tool accepts as the pinned one, and an empty cache."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    for name in ("LLAMA_CPP_DIR", "LLAMA_QUANTIZE"):
        monkeypatch.delenv(name, raising=False)
    path = make_sdist(tmp_path / tool.SDIST_FILE)
    monkeypatch.setattr(tool, "SDIST_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    return path


def test_fetch_extracts_the_vendored_tree_without_docs_or_test_vocabularies(sdist: Path) -> None:
    source = tool.fetch(sdist)
    assert source == cached_source_dir()
    files = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file())
    assert files == [
        ".complete",
        "convert_hf_to_gguf.py",
        "gguf-py/gguf/__init__.py",
        "models/templates/chat.jinja",
    ]
    assert LlamaCppTools.locate().source_dir == source


def test_fetch_is_idempotent(sdist: Path) -> None:
    tool.fetch(sdist)
    sdist.unlink()  # a second fetch must not need it
    assert tool.fetch(sdist) == cached_source_dir()


def test_an_sdist_with_another_digest_is_refused(
    sdist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tool, "SDIST_SHA256", "0" * 64)
    with pytest.raises(tool.LlamaCppBuildError, match="not the pinned"):
        tool.fetch(sdist)
    assert not cached_source_dir().exists()
