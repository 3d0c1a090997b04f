"""`tuning datasets`: vision rows, split names, the field at fault, every broken line, tokens."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_cli_datasets import chat, write_jsonl
from tuning.cli import main


def vision_row(question: str, answer: str) -> dict[str, object]:
    return {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": answer},
        ],
        "images": ["gs://local-data/images/cat.png"],
    }


def test_vision_rows_are_detected_and_checked_as_vision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split = write_jsonl(tmp_path / "train.jsonl", [vision_row("what is it?", "a cat")] * 2)

    detected = main(["--json", "datasets", "validate", str(split)])
    stats = json.loads(capsys.readouterr().out)
    as_text = main(["datasets", "validate", str(split), "--modality", "text"])
    text_error = capsys.readouterr().err

    assert detected == 0
    assert stats == {"rows": 2, "format": "vision_messages", "modality": "vision", "words": 10}
    assert as_text == 1 and "image parts need modality 'vision'" in text_error


def test_vision_is_refused_for_a_trainer_type_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split = write_jsonl(tmp_path / "train.jsonl", [vision_row("q", "a")])

    code = main(
        ["datasets", "validate", str(split), "--trainer-type", "dpo", "--modality", "vision"]
    )

    assert code == 1
    assert "'dpo' with modality 'vision'" in capsys.readouterr().err


def test_problems_name_the_split_and_every_broken_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "my-chats.jsonl"
    path.write_text(json.dumps(chat("a", "b")) + "\n{oops\n" + json.dumps(chat("c", "d")) + "\n[\n")

    code = main(["datasets", "validate", str(path)])
    error = capsys.readouterr().err
    upload = main(
        ["datasets", "upload", str(path), "--id", "ds", "--split", "eval", "--bucket", "b"]
    )
    upload_error = capsys.readouterr().err

    assert code == 1
    assert f"split 'train' ({path})" in error  # the split it would be, the file beside it
    assert "line 2: not valid JSON" in error and "line 4: not valid JSON" in error
    assert upload == 1 and f"split 'eval' ({path})" in upload_error


def test_a_preference_row_names_the_field_of_the_wrong_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "3+3?", "chosen": "6", "rejected": 7},
        {"prompt": "1+1?", "chosen": [{"role": "assistant", "content": "2"}], "rejected": "3"},
    ]
    split = write_jsonl(tmp_path / "train.jsonl", rows)

    code = main(["datasets", "validate", str(split), "--trainer-type", "dpo"])

    error = capsys.readouterr().err
    assert code == 1
    assert "row 1, field 'rejected'" in error
    assert "row 2, field 'chosen'" in error


def test_tokens_are_counted_without_importing_torch(tmp_path: Path) -> None:
    # transformers loads torch (and its C++ thread pools); the counts need only tokenizers.
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocabulary = {"[UNK]": 0, "hi": 1, "hello": 2, "there": 3}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    model = tmp_path / "model"
    model.mkdir()
    tokenizer.save(str(model / "tokenizer.json"))
    split = write_jsonl(tmp_path / "train.jsonl", [chat("hi", "hello there"), chat("hi", "hi")])
    program = (
        "import json, sys; from tuning.cli import main; "
        f"code = main(['--json', 'datasets', 'validate', {str(split)!r}, "
        f"'--tokenizer', {str(model)!r}]); "
        "print(json.dumps({'torch': 'torch' in sys.modules, 'code': code}))"
    )

    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )

    lines = result.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    stats = json.loads("\n".join(lines[:-1]))
    assert report == {"torch": False, "code": 0}
    assert (stats["tokens"], stats["max_tokens"]) == (5, 3)
    assert "terminate called" not in result.stderr


def test_with_a_chat_template_tokens_are_counted_as_the_trainer_counts_them(
    tmp_path: Path,
) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    from tuning.cli.data_commands import check_file

    vocabulary = {"[UNK]": 0, "hi": 1, "hello": 2, "there": 3, "turn": 4}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    model = tmp_path / "model"
    model.mkdir()
    tokenizer.save(str(model / "tokenizer.json"))
    template = "{% for m in messages %}turn {{ m['content'] }} {% endfor %}"
    (model / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    split = write_jsonl(tmp_path / "train.jsonl", [chat("hi", "hello there"), chat("hi", "hi")])

    stats = check_file(split, "sft", model)

    # "turn hi turn hello there" and "turn hi turn hi": the template's words count too.
    assert (stats["tokens"], stats["max_tokens"]) == (9, 5)
