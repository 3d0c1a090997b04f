"""Locating llama.cpp's converter and quantizer, and running them, with stand-in scripts."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from trainer.llama_cpp import (
    CACHE_ENV,
    LLAMA_CPP_DIR_ENV,
    LLAMA_QUANTIZE_ENV,
    GgufExportError,
    LlamaCppMissingError,
    LlamaCppTools,
    cache_dir,
    cached_source_dir,
)

# Stands in for convert_hf_to_gguf.py: records what it was given, writes the --outfile.
FAKE_CONVERTER = """
import json, os, sys
args = sys.argv[1:]
if os.environ.get("FAIL"):
    print("converting...", file=sys.stderr)
    print("NotImplementedError: Architecture 'Foo' not supported!", file=sys.stderr)
    sys.exit(1)
out = args[args.index("--outfile") + 1]
with open(out, "w") as file:
    json.dump({"args": args, "pythonpath": os.environ["PYTHONPATH"],
               "offline": os.environ.get("HF_HUB_OFFLINE")}, file)
"""


def make_llama_cpp(root: Path) -> Path:
    (root / "gguf-py" / "gguf").mkdir(parents=True)
    (root / "convert_hf_to_gguf.py").write_text(FAKE_CONVERTER)
    return root


def make_executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"#!{sys.executable}\nimport sys\nopen(sys.argv[2], 'w').write(' '.join(sys.argv[1:]))\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No llama.cpp configured, and an empty cache of our own."""
    for name in (LLAMA_CPP_DIR_ENV, LLAMA_QUANTIZE_ENV, "NO_LOCAL_GGUF"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path


def test_the_cache_is_per_pinned_version(environment: Path) -> None:
    assert cache_dir() == environment / "cache" / "llama-cpp-python-0.3.36"


def test_nothing_there_says_how_to_fetch(environment: Path) -> None:
    with pytest.raises(LlamaCppMissingError, match=r"python tools/llama_cpp.py fetch"):
        LlamaCppTools.locate()


def test_the_cache_is_used_without_a_quantizer(environment: Path) -> None:
    make_llama_cpp(cached_source_dir())
    tools = LlamaCppTools.locate()
    assert tools.source_dir == cached_source_dir()
    assert tools.quantize_binary is None
    with pytest.raises(LlamaCppMissingError, match="build-quantizer") as raised:
        tools.require_quantizer()
    assert "`make llama-cpp`" in raised.value.message  # the command a newcomer knows


def test_the_environment_may_point_at_the_extracted_sdist(
    environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llama_cpp = make_llama_cpp(environment / "sdist" / "vendor" / "llama.cpp")
    binary = make_executable(environment / "bin" / "llama-quantize")
    monkeypatch.setenv(LLAMA_CPP_DIR_ENV, str(environment / "sdist"))
    monkeypatch.setenv(LLAMA_QUANTIZE_ENV, str(binary))
    assert LlamaCppTools.locate() == LlamaCppTools(source_dir=llama_cpp, quantize_binary=binary)


def test_a_wrong_environment_is_an_error_not_a_fallback(
    environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_llama_cpp(cached_source_dir())
    monkeypatch.setenv(LLAMA_CPP_DIR_ENV, str(environment / "nowhere"))
    with pytest.raises(LlamaCppMissingError, match=r"holds no convert_hf_to_gguf\.py"):
        LlamaCppTools.locate()
    monkeypatch.delenv(LLAMA_CPP_DIR_ENV)
    monkeypatch.setenv(LLAMA_QUANTIZE_ENV, str(environment / "missing-binary"))
    with pytest.raises(LlamaCppMissingError, match="not an executable"):
        LlamaCppTools.locate()


def test_convert_uses_the_shipped_gguf_py_and_stays_offline(environment: Path) -> None:
    tools = LlamaCppTools(source_dir=make_llama_cpp(environment / "llama.cpp"))
    out = environment / "model-q8_0.gguf"
    tools.convert(environment / "merged", out, "q8_0", model_name="tiny")
    recorded = json.loads(out.read_text())
    assert recorded["args"] == [
        str(environment / "merged"),
        "--outfile",
        str(out),
        "--outtype",
        "q8_0",
        "--model-name",
        "tiny",
    ]
    assert recorded["pythonpath"].split(os.pathsep)[0] == str(tools.gguf_py)
    assert recorded["offline"] == "1"


def test_a_failed_conversion_reports_the_tools_last_words(
    environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = LlamaCppTools(source_dir=make_llama_cpp(environment / "llama.cpp"))
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(GgufExportError, match=r"(?s)--outtype f16 failed.*Architecture 'Foo'"):
        tools.convert(environment / "merged", environment / "out.gguf", "f16")


def test_quantize_passes_the_type_and_the_thread_count(environment: Path) -> None:
    binary = make_executable(environment / "llama-quantize")
    tools = LlamaCppTools(source_dir=environment, quantize_binary=binary)
    tools.quantize(environment / "in.gguf", environment / "out.gguf", "Q4_K_M")
    source, out, quant_type, threads = (environment / "out.gguf").read_text().split()
    assert (source, out) == (str(environment / "in.gguf"), str(environment / "out.gguf"))
    assert quant_type == "Q4_K_M"
    assert int(threads) >= 1
