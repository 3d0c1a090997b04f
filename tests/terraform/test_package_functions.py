"""tools/package_functions.py: one reproducible zip per function that deploys on its own."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.terraform.conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import package_functions

# The function whose zip is installed from the package index (one is enough: they share
# requirements and the tuning package).
INSTALLED_FUNCTION = "status"


def test_one_zip_per_function_with_handler_package_and_pins(tmp_path: Path) -> None:
    names = package_functions.function_names()

    code = package_functions.main(["--out", str(tmp_path)])

    assert code == 0
    assert sorted(path.stem for path in tmp_path.glob("*.zip")) == names
    for name in names:
        with zipfile.ZipFile(tmp_path / f"{name}.zip") as archive:
            files = archive.namelist()
            assert archive.read("main.py") == (REPO / "functions" / name / "main.py").read_bytes()
            requirements = archive.read("requirements.txt").decode().splitlines()
        assert "tuning/__init__.py" in files and "tuning/settings.py" in files
        assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
        pins = [line for line in requirements if line and not line.startswith("#")]
        assert pins and all("==" in line for line in pins)
        assert any(line.startswith("functions-framework==") for line in pins)
        assert not any(line.lower().startswith("torch==") for line in pins)


def test_the_same_sources_give_the_same_bytes(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"

    package_functions.main(["--out", str(first), "--only", "submit"])
    package_functions.main(["--out", str(second), "--only", "submit"])

    assert (first / "submit.zip").read_bytes() == (second / "submit.zip").read_bytes()


def test_a_code_change_changes_the_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package_functions.main(["--out", str(tmp_path / "before"), "--only", "submit"])
    handler = tmp_path / "functions" / "submit" / "main.py"
    handler.parent.mkdir(parents=True)
    handler.write_bytes((REPO / "functions" / "submit" / "main.py").read_bytes() + b"\n# changed\n")
    (handler.parent / "requirements.txt").write_bytes(
        (REPO / "functions" / "submit" / "requirements.txt").read_bytes()
    )
    monkeypatch.setattr(package_functions, "FUNCTIONS", tmp_path / "functions")

    package_functions.main(["--out", str(tmp_path / "after"), "--only", "submit"])

    before = package_functions.sha256(tmp_path / "before" / "submit.zip")
    assert package_functions.sha256(tmp_path / "after" / "submit.zip") != before


@pytest.mark.package_install
def test_a_zip_installs_and_imports_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    """What Cloud Build does with the zip: install its requirements, then load the handler."""
    package_functions.main(["--out", str(tmp_path), "--only", INSTALLED_FUNCTION])
    source = tmp_path / "source"
    with zipfile.ZipFile(tmp_path / f"{INSTALLED_FUNCTION}.zip") as archive:
        archive.extractall(source)
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"

    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-cache-dir", "-r", "requirements.txt"],
        cwd=source, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    entry_point = "serve_job_status"
    # create_app loads main.py and resolves the target, as the functions runtime does.
    load_app = (
        "import functions_framework, main, tuning.settings\n"
        f"app = functions_framework.create_app({entry_point!r}, 'main.py')\n"
        "print(type(app).__name__)\n"
    )
    loaded = subprocess.run(
        [str(python), "-E", "-s", "-c", load_app],
        cwd=source, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip

    assert install.returncode == 0, install.stderr[-3000:]
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert loaded.stdout.strip() == "Flask"
