"""Build one deployable zip per Cloud Function, reproducibly.

    python tools/package_functions.py                  # build/functions/<name>.zip, each function
    python tools/package_functions.py --only submit    # one function
    python tools/package_functions.py --pins declared  # requirements as written, unpinned

Each zip holds what Cloud Functions' Python 3.11 buildpack expects at its root:
- main.py: functions/<name>/main.py, the handler;
- tuning/: the shared package (without caches), so the handler imports the same contract
  the tests ran against;
- requirements.txt: functions/<name>/requirements.txt (or, without one, the project's
  dependencies plus its `functions` extra) with every package of its dependency closure
  pinned (`==`) to the version installed in the environment running this script - the
  versions the tests passed with. `--pins declared` keeps the requirements as written.

The same inputs give byte-identical zips (sorted entries, fixed timestamps and permissions),
so the zip's hash - which terraform puts in the uploaded object's name - changes exactly
when the code or a pin changes, and only then is the function rebuilt and redeployed.
build/functions/manifest.json lists each zip's sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tomllib
import zipfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
FUNCTIONS = REPO / "functions"
PACKAGE = REPO / "tuning"
DEFAULT_OUT = REPO / "build" / "functions"
# 1980-01-01, the earliest time a zip can record: no build time leaks into the archive.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
SKIPPED_PARTS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
SKIPPED_SUFFIXES = {".pyc", ".pyo"}
# Cloud Functions' runtime: markers are evaluated for it, not for the machine packaging.
TARGET_ENVIRONMENT = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "x86_64",
}


class PackagingError(Exception):
    """A function cannot be packaged as asked."""


def function_names() -> list[str]:
    """Every folder of functions/ with a main.py, sorted."""
    return sorted(path.parent.name for path in FUNCTIONS.glob("*/main.py"))


def declared_requirements(name: str) -> list[str]:
    """The function's own requirements.txt, or the project's dependencies + `functions` extra."""
    own = FUNCTIONS / name / "requirements.txt"
    if own.exists():
        lines = own.read_text(encoding="utf-8").splitlines()
    else:
        project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        lines = [*project.get("dependencies", []), *project["optional-dependencies"]["functions"]]
    requirements = []
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if text.startswith("-"):
            raise PackagingError(f"{own}: pip options ({text!r}) are not supported here")
        requirements.append(text)
    return requirements


def pinned_requirements(requirements: list[str]) -> list[str]:
    """`name==version` for every package the requirements pull in, as installed here."""
    pins: dict[str, str] = {}
    pending: list[tuple[Requirement, tuple[str, ...]]] = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as error:
            raise PackagingError(f"invalid requirement {text!r}: {error}") from None
        if _marker_applies(requirement, ()):
            pending.append((requirement, tuple(sorted(requirement.extras))))
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while pending:
        requirement, extras = pending.pop()
        key = (canonicalize_name(requirement.name), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            raise PackagingError(
                f"{requirement.name} is not installed here, so it cannot be pinned to a tested "
                "version: run `make install` first, or use --pins declared"
            ) from None
        version = distribution.version
        if not requirement.specifier.contains(version, prereleases=True):
            raise PackagingError(
                f"installed {requirement.name} {version} does not satisfy {requirement}: "
                "reinstall the environment (make install)"
            )
        pins[canonicalize_name(requirement.name)] = f"{distribution.metadata['Name']}=={version}"
        for text in distribution.requires or []:
            dependency = Requirement(text)
            if _marker_applies(dependency, extras):
                pending.append((dependency, tuple(sorted(dependency.extras))))
    return [pins[name] for name in sorted(pins)]


def _marker_applies(requirement: Requirement, extras: Iterable[str]) -> bool:
    """A dependency applies if its marker holds with no extra or with one the parent asked for."""
    if requirement.marker is None:
        return True
    environment: dict[str, str] = {str(k): str(v) for k, v in default_environment().items()}
    environment.update(TARGET_ENVIRONMENT)
    return any(
        requirement.marker.evaluate({**environment, "extra": extra}) for extra in ("", *extras)
    )


def requirements_text(name: str, pins: str) -> str:
    declared = declared_requirements(name)
    if pins == "declared":
        body = declared
        header = f"# functions/{name}: requirements as declared (tools/package_functions.py).\n"
    else:
        body = pinned_requirements(declared)
        header = (
            f"# functions/{name}: its requirements and their whole dependency closure, pinned to\n"
            "# the versions the test suite ran with (tools/package_functions.py). Do not edit.\n"
        )
    return header + "\n".join(body) + "\n"


def package_files(root: Path, prefix: str) -> list[tuple[str, Path]]:
    """(archive name, path) of every file of a package, caches and bytecode left out."""
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or SKIPPED_PARTS.intersection(relative.parts):
            continue
        if path.suffix in SKIPPED_SUFFIXES:
            continue
        files.append((f"{prefix}/{relative.as_posix()}", path))
    return files


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100644 & 0xFFFF) << 16  # a regular file, rw-r--r--
    info.create_system = 3  # Unix, whatever machine packs it
    archive.writestr(info, data, compresslevel=9)


def build_zip(name: str, out_dir: Path, pins: str) -> Path:
    """Write out_dir/<name>.zip and return its path."""
    handler = FUNCTIONS / name / "main.py"
    if not handler.is_file():
        raise PackagingError(f"no handler at {handler.relative_to(REPO)}")
    entries: list[tuple[str, bytes]] = [
        ("main.py", handler.read_bytes()),
        ("requirements.txt", requirements_text(name, pins).encode("utf-8")),
    ]
    entries += [
        (archive_name, path.read_bytes()) for archive_name, path in package_files(PACKAGE, "tuning")
    ]
    names = [entry[0] for entry in entries]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise PackagingError(f"{name}: more than one file would be {sorted(duplicates)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.zip"
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for archive_name, data in sorted(entries):
            _add(archive, archive_name, data)
    partial.replace(target)
    return target


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--only", action="append", help="package only this function (repeatable)")
    parser.add_argument(
        "--pins",
        choices=["installed", "declared"],
        default="installed",
        help="pin the whole dependency closure to the installed versions (default), "
        "or keep the requirements as declared",
    )
    args = parser.parse_args(argv)
    available = function_names()
    names = args.only or available
    unknown = sorted(set(names) - set(available))
    if unknown:
        print(f"package_functions: no functions/<name>/main.py for {unknown}", file=sys.stderr)
        return 2
    manifest = {}
    try:
        for name in names:
            zip_path = build_zip(name, args.out, args.pins)
            digest = sha256(zip_path)
            manifest[name] = {"zip": zip_path.name, "sha256": digest}
            print(f"{zip_path}  {digest[:16]}")
    except PackagingError as error:
        print(f"package_functions: {error}", file=sys.stderr)
        return 1
    manifest_path = args.out / "manifest.json"
    previous = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    previous.update(manifest)
    manifest_path.write_text(json.dumps(dict(sorted(previous.items())), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
