"""llama.cpp's GGUF converter and quantizer, from one pinned source package.

GGUF export runs llama.cpp's `convert_hf_to_gguf.py` (Python, with the `gguf-py` it ships) and,
for K-quants, its C++ `llama-quantize`. Both come from the `llama-cpp-python==0.3.36` sdist on
PyPI, so the converter, the gguf writer and the quantizer always agree on the file format.

Nothing is downloaded here. The Docker image sets `LLAMA_CPP_DIR` (the extracted sdist, or its
`vendor/llama.cpp`) and `LLAMA_QUANTIZE` (the built binary); elsewhere both come from the cache
that `python tools/llama_cpp.py fetch` and `... build-quantizer` fill.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import PermanentError, UnsupportedError, UserError
from tuning.jobs import ErrorType
from tuning.llama_cpp_cache import CACHE_ENV as CACHE_ENV  # the pins and paths live there
from tuning.llama_cpp_cache import LLAMA_CPP_PYTHON_VERSION as LLAMA_CPP_PYTHON_VERSION
from tuning.llama_cpp_cache import cache_dir as cache_dir
from tuning.llama_cpp_cache import cached_binary

# sha256 of llama_cpp_python-0.3.36.tar.gz as PyPI serves it; the fetch tool refuses any other.
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_DIR_ENV = "LLAMA_CPP_DIR"
LLAMA_QUANTIZE_ENV = "LLAMA_QUANTIZE"
CONVERT_SCRIPT = "convert_hf_to_gguf.py"
QUANTIZE_BINARY = "llama-quantize"
_LOG_TAIL_LINES = 25

logger = logging.getLogger(__name__)


class LlamaCppMissingError(UnsupportedError):
    """This trainer build has no llama.cpp converter or quantizer: the image must be fixed."""

    code = "llama_cpp_missing"


class GgufExportError(PermanentError):
    """A GGUF file could not be written or failed its check; the same model would fail again.

    Not the user's fault (their model trained and merged); reported as a system error.
    """

    error_type = ErrorType.SYSTEM
    code = "gguf_export_failed"


class GgufIncompatibleModelError(UserError):
    """The base model's config is one llama.cpp would run differently from transformers.

    The same request fails the same way every time, and only the request can change it (no
    GGUF, or another base model): a user error, refused before any GPU time.
    """

    code = "gguf_incompatible_model"


GGUF_INCOMPATIBLE_FIX = (
    "set export_config.include_gguf to false (the adapter and merged model export as usual; "
    "convert them yourself with a llama.cpp that supports this config), or use a base model "
    "whose config llama.cpp reads as transformers does (every released Gemma 2 and Gemma 3 "
    "checkpoint, or a fine-tune that keeps its query_pre_attn_scalar and layer_types)"
)


def cached_source_dir() -> Path:
    return cache_dir() / "llama.cpp"


def cached_quantizer() -> Path:
    return cached_binary(QUANTIZE_BINARY)


def find_source_dir(path: Path) -> Path | None:
    """The llama.cpp root in `path`: the sdist's `vendor/llama.cpp`, or `path` itself."""
    for candidate in (path, path / "vendor" / "llama.cpp"):
        if (candidate / CONVERT_SCRIPT).is_file() and (candidate / "gguf-py" / "gguf").is_dir():
            return candidate
    return None


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@dataclass(frozen=True)
class LlamaCppTools:
    """A llama.cpp source tree (converter + gguf-py) and, when built, its quantizer."""

    source_dir: Path
    quantize_binary: Path | None = None

    @classmethod
    def locate(cls) -> LlamaCppTools:
        """The tools the environment points at, else the cache; never downloads."""
        configured = os.environ.get(LLAMA_CPP_DIR_ENV)
        where = Path(configured) if configured else cached_source_dir()
        source = find_source_dir(where)
        if source is None:
            hint = (
                f"{LLAMA_CPP_DIR_ENV}={configured} holds no {CONVERT_SCRIPT} with its gguf-py"
                if configured
                else f"no llama.cpp sources in {where}; run `python tools/llama_cpp.py fetch`"
            )
            raise LlamaCppMissingError(f"GGUF export needs llama.cpp: {hint}")
        quantizer = os.environ.get(LLAMA_QUANTIZE_ENV)
        candidates = [Path(quantizer)] if quantizer else [cached_quantizer()]
        found = next((path for path in candidates if _executable(path)), None)
        if quantizer and found is None:
            raise LlamaCppMissingError(f"{LLAMA_QUANTIZE_ENV}={quantizer} is not an executable")
        return cls(source_dir=source, quantize_binary=found)

    @property
    def convert_script(self) -> Path:
        return self.source_dir / CONVERT_SCRIPT

    @property
    def gguf_py(self) -> Path:
        return self.source_dir / "gguf-py"

    def require_quantizer(self) -> Path:
        if self.quantize_binary is None:
            raise LlamaCppMissingError(
                f"K-quants need llama.cpp's {QUANTIZE_BINARY}, which is not built: run "
                f"`make llama-cpp` (python tools/llama_cpp.py build-quantizer; about 4 min on "
                f"2 idle cores), set {LLAMA_QUANTIZE_ENV}, or ask for f16, bf16 or q8_0 only"
            )
        return self.quantize_binary

    def convert(
        self, model_dir: Path, outfile: Path, outtype: str, *, model_name: str | None = None
    ) -> None:
        """Run convert_hf_to_gguf.py on a HF model directory, writing one GGUF file."""
        command = [
            sys.executable,
            str(self.convert_script),
            str(model_dir),
            "--outfile",
            str(outfile),
            "--outtype",
            outtype,
        ]
        if model_name:
            command += ["--model-name", model_name]
        env = dict(os.environ)
        # The converter must use the gguf-py it ships (the installed `gguf` may be older), and
        # must never reach the Hub: the trainer exports what it has on disk.
        env.pop("NO_LOCAL_GGUF", None)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(self.gguf_py), env.get("PYTHONPATH")])
        )
        env["HF_HUB_OFFLINE"] = "1"
        _run(command, env=env, what=f"{CONVERT_SCRIPT} --outtype {outtype}")

    def quantize(self, source: Path, outfile: Path, quant_type: str) -> None:
        """Run llama-quantize (`quant_type` as it names them, e.g. Q4_K_M) on a 16-bit GGUF."""
        threads = str(os.cpu_count() or 1)
        command = [str(self.require_quantizer()), str(source), str(outfile), quant_type, threads]
        _run(command, env=dict(os.environ), what=f"{QUANTIZE_BINARY} {quant_type}")


def _run(command: list[str], *, env: dict[str, str], what: str) -> None:
    logger.info("running %s", " ".join(command))
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        tail = "\n".join(output[-_LOG_TAIL_LINES:])
        raise GgufExportError(f"{what} failed with exit code {result.returncode}:\n{tail}")
    logger.debug("%s output:\n%s", what, result.stderr[-4000:])
