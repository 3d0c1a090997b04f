"""Dataset rules of the trainer: split names, row validation, hold-out (pure, no ML stack)."""

from __future__ import annotations

import json

import pytest

from trainer.errors import DatasetError
from tuning.dataset.rows import RowError, RowFormat, normalize_sft_row, validate_rows
from tuning.dataset.splits import SplitFile, choose_splits, holdout, read_rows, split_files

PREFIX = "gs://data/processed_datasets/abc/"


def files(*names: str) -> list[SplitFile]:
    return split_files([PREFIX + name for name in names], PREFIX)


@pytest.mark.parametrize(
    ("names", "train", "evaluation"),
    [
        (["train.parquet", "test.parquet"], "train", "test"),
        (["Training.jsonl", "Validation.jsonl"], "Training", "Validation"),
        (["eval.jsonl", "train.jsonl"], "train", "eval"),
        (["evaluation.parquet", "train.parquet"], "train", "evaluation"),
        (["data.parquet"], "data", None),
        (["b.jsonl", "a.jsonl"], "a", None),  # no train split: the first split trains
        (["test.jsonl", "zzz.jsonl"], "test", None),  # the only eval-named split has to train
    ],
)
def test_split_names_follow_the_seed(names: list[str], train: str, evaluation: str | None) -> None:
    chosen_train, chosen_eval = choose_splits(files(*names))

    assert chosen_train.name == train
    assert (chosen_eval.name if chosen_eval else None) == evaluation


def test_parquet_wins_over_jsonl_and_nested_or_other_files_are_ignored() -> None:
    found = files("train.jsonl", "train.parquet", "notes.txt", "old/train.parquet", ".jsonl")

    assert [(f.name, f.suffix) for f in found] == [("train", ".parquet")]


def test_no_split_files_is_a_dataset_error() -> None:
    with pytest.raises(DatasetError):
        choose_splits([])


def test_jsonl_with_a_bad_line_names_the_line() -> None:
    split = SplitFile("train", PREFIX + "train.jsonl", ".jsonl")

    with pytest.raises(DatasetError, match="line 2"):
        read_rows(b'{"messages": []}\n{oops\n', split)


def test_parquet_rows_read_back(tmp_path: object) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"prompt": "a", "completion": "b"}]), buffer)

    assert read_rows(buffer.getvalue(), SplitFile("train", "x", ".parquet")) == [
        {"prompt": "a", "completion": "b"}
    ]


def test_conversation_with_typed_parts_and_model_role_is_normalized() -> None:
    row = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}],
            },
            {"role": "model", "content": "Hello."},
        ],
        "id": 7,
    }

    assert normalize_sft_row(row) == (
        RowFormat.MESSAGES,
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi\nthere"},
                {"role": "assistant", "content": "Hello."},
            ]
        },
    )


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]},
            "messages[1].content",
            "null",
        ),
        ({"messages": [{"role": "bot", "content": "q"}]}, "messages[0].role", "bot"),
        (
            {"messages": [{"role": "assistant", "content": "a"}]},
            "messages[0].role",
            "expected 'user'",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}]},
            "messages[1].role",
            "alternate",
        ),
        ({"messages": [{"role": "user", "content": "q"}]}, "messages", "no assistant"),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "  "},
                ]
            },
            "messages",
            "no assistant",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image"}]},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "messages[0].content[0]",
            "vision",
        ),
        ({"messages": "hello"}, "messages", "list"),
        ({"text": "plain"}, "messages", "prompt"),
        ({"prompt": "p", "completion": ""}, "completion", "empty"),
        ({"prompt": "p", "completion": [{"role": "assistant", "content": "a"}]}, "prompt", "both"),
        ([1, 2], "", "object"),
    ],
)
def test_broken_rows_name_the_field(row: object, field: str, words: str) -> None:
    with pytest.raises(RowError) as raised:
        normalize_sft_row(row)

    assert raised.value.field == field
    assert words in raised.value.message


def test_prompt_completion_rows_in_both_shapes() -> None:
    text = normalize_sft_row({"prompt": "2+2=", "completion": "4"})
    chat = normalize_sft_row(
        {
            "prompt": [{"role": "user", "content": "2+2?"}],
            "completion": [{"role": "assistant", "content": "4"}],
        }
    )

    assert text[0] is RowFormat.PROMPT_COMPLETION
    assert chat[0] is RowFormat.CONVERSATIONAL_PROMPT_COMPLETION


def test_validation_reports_split_rows_and_fields_of_the_first_problems() -> None:
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    rows = [good, {"messages": []}, good, {"prompt": "p", "completion": "c"}] + [{"x": 1}] * 6
    split = SplitFile("train", PREFIX + "train.jsonl", ".jsonl")

    with pytest.raises(DatasetError) as raised:
        validate_rows(rows, split=split, normalize=normalize_sft_row)

    message = raised.value.message
    assert message.startswith(f"split 'train' ({PREFIX}train.jsonl): row 1, field 'messages'")
    assert "row 3: row is prompt_completion but the dataset is messages" in message
    assert "(and 3 more problems)" in message


def test_empty_split_is_an_error() -> None:
    with pytest.raises(DatasetError, match="no rows"):
        validate_rows([], split=SplitFile("train", "x", ".jsonl"), normalize=normalize_sft_row)


def test_holdout_is_seeded_disjoint_and_keeps_order() -> None:
    rows = [{"i": i} for i in range(50)]

    train, evaluation = holdout(rows, 0.1, seed=3)

    assert len(evaluation) == 5 and len(train) == 45
    assert holdout(rows, 0.1, seed=3) == (train, evaluation)
    assert holdout(rows, 0.1, seed=4)[1] != evaluation
    assert sorted(r["i"] for r in train + evaluation) == list(range(50))
    assert [r["i"] for r in evaluation] == sorted(r["i"] for r in evaluation)


def test_holdout_keeps_at_least_one_row_on_each_side() -> None:
    assert [len(part) for part in holdout([{"i": 0}, {"i": 1}], 0.5, seed=0)] == [1, 1]
    with pytest.raises(DatasetError):
        holdout([{"i": 0}], 0.5, seed=0)


def test_rows_survive_a_json_round_trip() -> None:
    row = {"prompt": "a", "completion": "b"}
    assert normalize_sft_row(json.loads(json.dumps(row)))[1] == row


def test_a_jsonl_line_longer_than_the_cap_is_refused_by_its_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tuning.dataset import splits

    monkeypatch.setattr(splits, "MAX_LINE_BYTES", 1024)
    data = b'{"prompt": "a", "completion": "b"}\n' + b'{"prompt": "' + b"x" * 4096 + b'"}\n'
    file = splits.SplitFile("train", "gs://d/processed_datasets/x/train.jsonl", ".jsonl")

    with pytest.raises(DatasetError, match=r"line 2 is longer than"):
        list(splits.row_chunks(data, file))
