"""The dashboard's one third-party front-end part: uPlot, from the npm registry.

Fetched at install time (`make install` runs `python -m tuning.dashboard.assets fetch`) into
an ignored build folder, checked against the sha512 integrity the registry publishes for the
pinned version (kept here, so a changed tarball is refused), and served by the dashboard from
there. Nothing is committed and nothing is fetched from a CDN at run time.

    python -m tuning.dashboard.assets fetch   # idempotent: a folder already checked is kept
    python -m tuning.dashboard.assets check   # exit 1 unless the files are there
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import shutil
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

ASSETS_ENV = "TUNING_DASHBOARD_ASSETS"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str  # the registry's dist.integrity: "sha512-<base64>"
    files: tuple[str, ...]  # paths inside the tarball's package/ folder that are served

    @property
    def tarball_url(self) -> str:
        return f"https://registry.npmjs.org/{self.name}/-/{self.name}-{self.version}.tgz"

    @property
    def folder_name(self) -> str:
        return f"{self.name}-{self.version}"


UPLOT = NpmPackage(
    name="uplot",
    version="1.6.32",
    integrity="sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==",
    files=("dist/uPlot.iife.min.js", "dist/uPlot.min.css", "LICENSE"),
)
# The names the pages ask for -> the file in the package's folder.
SERVED = {"uPlot.iife.min.js": "dist/uPlot.iife.min.js", "uPlot.min.css": "dist/uPlot.min.css"}
MARKER = ".integrity"  # written last: a folder without it is incomplete


class AssetError(Exception):
    """The assets are missing or do not match their pinned integrity."""


def assets_root() -> Path:
    """`$TUNING_DASHBOARD_ASSETS`, else build/dashboard/ of a source checkout, else the user's
    cache (an installed package has no checkout to write into)."""
    if os.environ.get(ASSETS_ENV):
        return Path(os.environ[ASSETS_ENV]).expanduser()
    if (REPO / "pyproject.toml").is_file():
        return REPO / "build" / "dashboard"
    return Path("~/.cache/gemma-tuning/dashboard").expanduser()


def package_dir(package: NpmPackage = UPLOT, root: Path | None = None) -> Path:
    return (root or assets_root()) / package.folder_name


def verify(data: bytes, integrity: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise AssetError(f"unsupported integrity {integrity!r} (sha512 only)")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise AssetError(f"integrity mismatch: expected sha512-{expected}, got sha512-{actual}")


def unpack(data: bytes, package: NpmPackage, target: Path) -> None:
    """The package's served files from its tarball into `target`, marker last."""
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for name in package.files:
            member = archive.getmember(f"package/{name}")
            source = archive.extractfile(member)
            if not member.isfile() or source is None:
                raise AssetError(f"{package.folder_name}: {name} is not a file in the tarball")
            out = staging / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(source.read())
    (staging / MARKER).write_text(package.integrity + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def is_ready(package: NpmPackage = UPLOT, root: Path | None = None) -> bool:
    folder = package_dir(package, root)
    marker = folder / MARKER
    return (
        marker.is_file()
        and marker.read_text().strip() == package.integrity
        and all((folder / name).is_file() for name in package.files)
    )


def fetch(package: NpmPackage = UPLOT, root: Path | None = None, *, download=None) -> Path:
    """The package's folder, downloaded and checked first unless already there."""
    folder = package_dir(package, root)
    if is_ready(package, root):
        return folder
    data = (download or _download)(package.tarball_url)
    verify(data, package.integrity)
    unpack(data, package, folder)
    return folder


def _download(url: str) -> bytes:
    import requests

    try:
        response = requests.get(url, timeout=60)
        response.raise_for_status()
    except requests.RequestException as error:
        raise AssetError(f"cannot download {url}: {error}") from error
    return response.content


def served_file(name: str, root: Path | None = None) -> Path:
    """The file the pages call `name` (e.g. uPlot.iife.min.js); AssetError when not fetched."""
    if not is_ready(UPLOT, root):
        raise AssetError(
            f"the dashboard's chart library ({UPLOT.folder_name}) is not in "
            f"{package_dir(UPLOT, root)}: run `make install` or "
            "`python -m tuning.dashboard.assets fetch`"
        )
    return package_dir(UPLOT, root) / SERVED[name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuning.dashboard.assets")
    parser.add_argument("action", choices=["fetch", "check"])
    args = parser.parse_args(argv)
    try:
        if args.action == "fetch":
            print(fetch())
        elif not is_ready():
            raise AssetError(f"{package_dir()} is missing or incomplete")
    except AssetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
