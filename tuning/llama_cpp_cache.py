"""Where the pinned llama.cpp build lives on a workstation: one cache for its sources, the
trainer's quantizer and the chat command's CLI.

`python tools/llama_cpp.py fetch` / `build` (or `make llama-cpp`) fill it; the trainer
(trainer/llama_cpp.py) and `tuning chat --gguf` read it. No torch, no trainer imports: the CLI
uses it too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
CACHE_ENV = "GEMMA_TUNING_CACHE"
# llama.cpp's classic command-line chat (its `llama-cli` now needs the server build): reads the
# chat template from the GGUF file, `-cnv` for a conversation, `-st` for a single turn.
CLI_BINARY = "llama-completion"
LLAMA_CLI_ENV = "LLAMA_CLI"


def cache_dir() -> Path:
    """Where the fetch/build tool keeps the pinned sources and the built binaries."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = str(
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gemma-tuning"
        )
    return Path(root).expanduser() / f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}"


def cached_binary(name: str) -> Path:
    return cache_dir() / "bin" / name


def find_cli() -> Path | None:
    """llama.cpp's chat CLI: `$LLAMA_CLI`, else the cache's build, else one on PATH."""
    configured = os.environ.get(LLAMA_CLI_ENV)
    candidates = [Path(configured)] if configured else [cached_binary(CLI_BINARY)]
    found = next((path for path in candidates if path.is_file() and os.access(path, os.X_OK)), None)
    if found is None and not configured and (on_path := shutil.which(CLI_BINARY)):
        return Path(on_path)
    return found
