"""Create (or refresh) the tf-check virtual environment and print its Python.

    python3 tools/tfcheck/bootstrap.py    # -> build/tfcheck/venv/bin/python

The environment is separate from the project's .venv: checkov pins versions the project's
packages do not want. It is rebuilt only when requirements.txt changes (a stamp holds its hash).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV = REPO / "build" / "tfcheck" / "venv"
REQUIREMENTS = HERE / "requirements.txt"


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    stamp = VENV / ".requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    print(f"tfcheck: installing the toolchain into {VENV} ...", file=sys.stderr, flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "install", "--quiet"]
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(wanted + "\n")
    return python


if __name__ == "__main__":
    print(ensure_venv())
