"""The README's quick start works as written, in a fresh shell (issue 19).

Without starting a second stack: every command of the block parses as the CLI and the
Makefile take it, the files it names exist, and a `.local/stack.env` as `make up` writes it
is all a fresh shell needs to find `tuning`.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tuning.cli import build_parser
from tuning.local.stack import ENV_FILE, env_file_text

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def quick_start_block() -> list[str]:
    """The commands of the block after "To keep the stack running", comments removed."""
    section = README.split("To keep the stack running", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    return [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines() if line]


def commands() -> list[list[str]]:
    """Each command of the block, split on `&&`, with `X=$(command)` unwrapped."""
    found = []
    for line in quick_start_block():
        for part in line.split("&&"):
            words = shlex.split(part.replace("$JOB_ID", "training_demo_0123456789ab"))
            if words and "=$(" in words[0]:  # JOB_ID=$(tuning submit examples/job.yaml)
                words = shlex.split(part.split("=$(", 1)[1].rstrip().removesuffix(")"))
            found.append(words)
    return found


def test_the_quick_start_uses_the_cli_make_and_the_env_file_only() -> None:
    programs = {words[0] for words in commands()}

    assert programs == {"make", "source", "tuning"}


@pytest.mark.parametrize(
    "words", [w for w in commands() if w[0] == "tuning"], ids=lambda w: " ".join(w[1:3])
)
def test_each_tuning_command_parses_and_its_files_exist(words: list[str]) -> None:
    args = build_parser().parse_args(words[1:])  # exits (fails the test) on a bad command line

    assert hasattr(args, "run"), words
    for value in vars(args).values():
        if isinstance(value, Path) and value.suffix in {".yaml", ".jsonl", ".json"}:
            assert (REPO / value).is_file(), f"{value} is missing"


def test_each_make_target_exists() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = [words[1] for words in commands() if words[0] == "make"]

    assert targets == ["up", "down"]
    for target in targets:
        assert re.search(rf"^{target}:", makefile, re.M), target


def test_the_env_file_make_up_writes_puts_tuning_on_a_fresh_shells_path(tmp_path: Path) -> None:
    sourced = [words[1] for words in commands() if words[0] == "source"]
    assert sourced == [f".local/{ENV_FILE}"]
    env_file = tmp_path / ENV_FILE
    env_file.write_text(env_file_text({"TUNING_STATUS_URL": "http://127.0.0.1:9"}))
    fresh = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no virtual environment active

    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", f"source {env_file} && tuning --help"],
        env=fresh,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert "submit" in result.stdout and "watch" in result.stdout
