"""The infrastructure tier: terraform/ and the tooling that checks and packages it.

Every test in this folder is marked `terraform` (by tests/conftest.py); the one that installs
a function zip from the package index is also marked `package_install`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def tfcheck_python() -> Path:
    """The tf-check toolchain's interpreter (build/tfcheck/venv), installed on first use."""
    if shutil.which("terraform") is None:
        pytest.fail("terraform is not on PATH: the offline checks need terraform 1.11")
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "tfcheck" / "bootstrap.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def terraform_copy(tmp_path: Path) -> Path:
    """A private copy of terraform/ (configuration and tests only) to plant faults in."""
    target = tmp_path / "terraform"
    shutil.copytree(
        REPO / "terraform",
        target,
        ignore=shutil.ignore_patterns(
            ".terraform", ".terraform.lock.hcl", "*.tfstate*", "terraform.tfvars", "*.tfplan"
        ),
    )
    return target
