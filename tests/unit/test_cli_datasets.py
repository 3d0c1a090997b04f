"""`tuning datasets validate`: row-level errors before any upload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuning.cli import main


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def chat(user: str, assistant: str) -> dict[str, object]:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    }


def test_valid_split_reports_rows_and_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split = write_jsonl(tmp_path / "train.jsonl", [chat("hi", "hello there"), chat("a", "b c")])

    code = main(["--json", "datasets", "validate", str(split)])

    stats = json.loads(capsys.readouterr().out)
    assert code == 0
    assert stats == {"rows": 2, "format": "messages", "modality": "text", "words": 6}


def test_broken_row_is_named_and_nothing_is_uploaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [chat("hi", "hello"), {"messages": [{"role": "user", "content": "no answer"}]}]
    split = write_jsonl(tmp_path / "train.jsonl", rows)

    code = main(["datasets", "upload", str(split), "--id", "ds1", "--bucket", "never-used"])

    error = capsys.readouterr().err
    assert code == 1
    assert "row 1" in error


def test_unsafe_dataset_id_is_refused_before_upload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split = write_jsonl(tmp_path / "train.jsonl", [chat("hi", "hello")])

    code = main(["datasets", "upload", str(split), "--id", "../other", "--bucket", "data-bkt"])

    assert code == 1
    assert "processed_dataset_id" in capsys.readouterr().err
