"""Row rules of the preference, GRPO and vision trainers (pure, no ML stack)."""

from __future__ import annotations

from typing import Any

import pytest

from trainer.errors import DatasetError
from tuning.dataset.formats import (
    normalize_preference_row,
    normalize_prompt_row,
    normalize_vision_row,
    prompt_row_normalizer,
)
from tuning.dataset.rows import RowError, RowFormat, validate_rows
from tuning.dataset.splits import SplitFile
from tuning.spec import RewardConfig

USER = {"role": "user", "content": "What colour is ember?"}
CHOSEN = {"role": "assistant", "content": "Ember is red."}
REJECTED = {"role": "assistant", "content": "Ember is blue."}
PNG = b"\x89PNG fake bytes"  # the row rules check types; trainer.images decodes


def error_of(normalize: Any, row: object) -> RowError:
    with pytest.raises(RowError) as raised:
        normalize(row)
    return raised.value


def test_preference_rows_in_both_shapes() -> None:
    plain = normalize_preference_row({"prompt": "Q", "chosen": "A", "rejected": "B", "id": 3})
    chat = normalize_preference_row(
        {"prompt": [USER], "chosen": [CHOSEN], "rejected": [{**REJECTED, "role": "model"}]}
    )

    assert plain == (RowFormat.PREFERENCE, {"prompt": "Q", "chosen": "A", "rejected": "B"})
    assert chat == (
        RowFormat.CONVERSATIONAL_PREFERENCE,
        {"prompt": [USER], "chosen": [CHOSEN], "rejected": [REJECTED]},
    )


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ({"messages": [USER, CHOSEN]}, "prompt", "an SFT row"),
        ({"prompt": "Q", "completion": "A"}, "chosen", "prompt/completion"),
        ({"prompt": "Q", "chosen": "A"}, "rejected", "'rejected' is missing"),
        ({"prompt": "Q", "chosen": " ", "rejected": "B"}, "chosen", "empty"),
        ({"prompt": "Q", "chosen": "A", "rejected": "A"}, "rejected", "identical"),
        ({"prompt": [USER], "chosen": "A", "rejected": "B"}, "prompt", "all be strings"),
        (
            {"prompt": [CHOSEN], "chosen": [CHOSEN], "rejected": [REJECTED]},
            "prompt[0].role",
            "user",
        ),
        ({"prompt": [USER], "chosen": [USER], "rejected": [REJECTED]}, "chosen", "assistant"),
        ({"prompt": [USER], "chosen": [CHOSEN, CHOSEN], "rejected": [REJECTED]}, "chosen", "one"),
        (
            {"prompt": [USER], "chosen": [CHOSEN], "rejected": [{**REJECTED, "content": ""}]},
            "rejected[0].content",
            "empty",
        ),
    ],
)
def test_broken_preference_rows_name_the_field(row: object, field: str, words: str) -> None:
    error = error_of(normalize_preference_row, row)

    assert error.field == field
    assert words in error.message


def test_dpo_on_sft_rows_names_the_row_and_the_field() -> None:
    rows = [{"messages": [USER, CHOSEN]}] * 2
    split = SplitFile("train", "gs://d/processed_datasets/x/train.jsonl", ".jsonl")

    with pytest.raises(DatasetError) as raised:
        validate_rows(rows, split=split, normalize=normalize_preference_row)

    assert "row 0, field 'prompt': preference rows (dpo, orpo) need" in raised.value.message


def test_grpo_rows_carry_their_reference_only_when_a_reward_needs_it() -> None:
    answer_based = prompt_row_normalizer(
        RewardConfig(functions=["format", "numeric_match"], reference_column="solution")
    )
    format_only = prompt_row_normalizer(RewardConfig(functions=["format"]))

    assert answer_based({"prompt": [USER], "solution": 42}) == (
        RowFormat.CONVERSATIONAL_PROMPT_ONLY,
        {"prompt": [USER], "reference": "42"},
    )
    assert format_only({"prompt": "2+2=", "answer": None}) == (
        RowFormat.PROMPT_ONLY,
        {"prompt": "2+2="},
    )


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ({"answer": "4"}, "prompt", "need a 'prompt'"),
        ({"messages": [USER, CHOSEN], "answer": "4"}, "prompt", "SFT row"),
        ({"prompt": "2+2=", "answer": None}, "answer", "missing"),
        ({"prompt": "2+2="}, "answer", "reference_column is 'answer'"),
        ({"prompt": "2+2=", "answer": " "}, "answer", "empty"),
        ({"prompt": "2+2=", "answer": True}, "answer", "string or a number"),
        ({"prompt": "2+2=", "answer": "four"}, "answer", "numeric_match needs a number"),
        ({"prompt": [USER, CHOSEN], "answer": "4"}, "prompt[1].role", "end with a user turn"),
        ({"prompt": 7, "answer": "4"}, "prompt", "string or a list"),
    ],
)
def test_broken_grpo_rows_name_the_field(row: object, field: str, words: str) -> None:
    def normalize(value: object) -> Any:
        return normalize_prompt_row(value, required=True, numeric=True)

    error = error_of(normalize, row)

    assert error.field == field
    assert words in error.message


def vision_row(**changes: Any) -> dict[str, Any]:
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
            {"role": "assistant", "content": "Red."},
        ],
        "images": [PNG],
    }
    return {**row, **changes}


def test_vision_rows_pair_placeholders_with_images_in_every_source_form() -> None:
    uri = "gs://data/images/a.png"
    from_bytes = normalize_vision_row(vision_row())
    from_struct = normalize_vision_row(vision_row(images=[{"bytes": None, "path": uri}]))
    embedded = vision_row(images=None)
    embedded["messages"][0]["content"][0] = {"type": "image", "image": {"bytes": PNG}}

    assert from_bytes == (
        RowFormat.VISION_MESSAGES,
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}],
                },
                {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
            ],
            "images": [PNG],
        },
    )
    assert from_struct[1]["images"] == [uri]
    assert normalize_vision_row(embedded)[1] == from_bytes[1]


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"images": None}, "images", "no images"),
        ({"images": []}, "images", "no images"),
        ({"images": [PNG, PNG]}, "messages", "1 image placeholder(s) in the user turns but 2"),
        ({"images": PNG}, "images", "must be a list"),
        ({"images": ["https://example.com/a.png"]}, "images[0]", "gs:// URI"),
        ({"images": [b""]}, "images[0]", "empty"),
        ({"images": [3]}, "images[0]", "bytes or a gs:// URI"),
        (
            {
                "messages": [
                    {"role": "user", "content": "Colour?"},
                    {"role": "assistant", "content": [{"type": "image"}]},
                ]
            },
            "messages[1].content[0]",
            "user turns",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image"}, {"type": "audio"}]},
                    {"role": "assistant", "content": "Red."},
                ]
            },
            "messages[0].content[1].type",
            "unknown part type",
        ),
        ({"messages": None}, "messages", "need 'messages'"),
    ],
)
def test_broken_vision_rows_name_the_field(changes: dict[str, Any], field: str, words: str) -> None:
    error = error_of(normalize_vision_row, vision_row(**changes))

    assert error.field == field
    assert words in error.message


def test_a_reference_answer_is_never_quoted_in_the_error() -> None:
    """Errors reach the submitter; another team's dataset text must not ride along."""
    secret_text = "ALICE PRIVATE ANSWER: the merger closes in March"

    error = error_of(
        lambda value: normalize_prompt_row(value, required=True, numeric=True),
        {"prompt": "2+2=", "answer": secret_text},
    )

    assert "numeric_match needs a number" in error.message
    assert "merger" not in error.message
