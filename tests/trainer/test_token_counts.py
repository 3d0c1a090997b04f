"""The torch-free counter (tuning.dataset.tokens) counts what transformers and TRL tokenize.

Dispatch's validation before any GPU, `POST /train:estimate` and the trainer's statistics all
count with it, so these are the figures a user sees before and after training; here they are
held equal to transformers' own tokenizer and template, on every row format, and to what TRL's
SFTTrainer actually tokenizes for training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trainer.llama_cpp import LlamaCppTools
from trainer.modeling import load_processor, load_tokenizer
from trainer.sft import as_turns
from trainer.stats import token_lengths
from tuning.dataset.rows import RowFormat
from tuning.dataset.splits import SplitFile
from tuning.dataset.tokens import TOKENIZER_FILES, ChatTokenizer
from tuning.failures import DatasetError

SPLIT = SplitFile("train", "gs://data/processed_datasets/d/train.jsonl", ".jsonl")
ROWS: dict[RowFormat, list[dict[str, Any]]] = {
    RowFormat.MESSAGES: [
        {
            "messages": [
                {"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": 'What colour is a frog? <b>&amp;</b> "quoted"'},
                {"role": "assistant", "content": "Green."},
                {"role": "user", "content": "And the sky?"},
                {"role": "assistant", "content": "Blue, mostly."},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "é ü 漢字 🙂"},
                {"role": "assistant", "content": "ok"},
            ]
        },
    ],
    RowFormat.CONVERSATIONAL_PROMPT_COMPLETION: [
        {
            "prompt": [{"role": "user", "content": "hi there"}],
            "completion": [{"role": "assistant", "content": "hello, friend"}],
        }
    ],
    RowFormat.PREFERENCE: [{"prompt": "Q: 2+2?", "chosen": " 4, of course", "rejected": " 5"}],
    RowFormat.CONVERSATIONAL_PREFERENCE: [
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "hello there, how are you"}],
            "rejected": [{"role": "assistant", "content": "go away"}],
        }
    ],
    RowFormat.PROMPT_ONLY: [{"prompt": "What is 12 * 12?"}],
    RowFormat.CONVERSATIONAL_PROMPT_ONLY: [{"prompt": [{"role": "user", "content": "12 * 12?"}]}],
}


def counter_for(model_dir: Path, *, template: str | None = None) -> ChatTokenizer:
    files = {n: (model_dir / n).read_bytes() for n in TOKENIZER_FILES if (model_dir / n).is_file()}
    if template is not None:
        files["chat_template.jinja"] = template.encode()
    return ChatTokenizer.from_files(files)


@pytest.mark.parametrize("row_format", list(ROWS), ids=lambda f: f.value)
def test_every_row_format_counts_as_transformers_tokenizes(
    tiny_gemma3: Path, row_format: RowFormat
) -> None:
    rows = ROWS[row_format]
    expected = token_lengths(rows, row_format, load_tokenizer(tiny_gemma3), split=SPLIT)

    assert counter_for(tiny_gemma3).row_lengths(rows, row_format, split=SPLIT) == expected
    assert min(expected) > 3


def test_google_s_published_template_counts_the_same(tiny_gemma3: Path) -> None:
    # The template as Google published it (read from the pinned llama.cpp sources, which CI
    # builds): not one of ours or TRL's, whose rendering the counter could merely mirror.
    published = LlamaCppTools.locate().source_dir / "models/templates/google-gemma-2-2b-it.jinja"
    tokenizer = load_tokenizer(tiny_gemma3)
    tokenizer.chat_template = published.read_text()
    with_system, plain = ROWS[RowFormat.MESSAGES]
    without_system = {"messages": with_system["messages"][1:]}
    rows = [without_system, plain]
    expected = token_lengths(rows, RowFormat.MESSAGES, tokenizer, split=SPLIT)
    counter = counter_for(tiny_gemma3, template=published.read_text())

    assert counter.row_lengths(rows, RowFormat.MESSAGES, split=SPLIT) == expected
    # Its raise_exception refuses a system turn, and the row is named as the trainer names it.
    with pytest.raises(DatasetError, match=r"row 0, field 'messages': .*System role not supported"):
        counter.row_lengths([with_system], RowFormat.MESSAGES, split=SPLIT)


def test_plain_prompt_completion_rows_count_as_the_turns_they_train_as(tiny_gemma3: Path) -> None:
    # trainer/sft.py trains plain-string rows of a model with a chat template as a user and an
    # assistant turn: the count is that conversation's, not the raw text's.
    rows = [{"prompt": "The fox is", "completion": " red."}]
    turns = [as_turns(row) for row in rows]
    expected = token_lengths(
        turns,
        RowFormat.CONVERSATIONAL_PROMPT_COMPLETION,
        load_tokenizer(tiny_gemma3),
        split=SPLIT,
    )

    assert counter_for(tiny_gemma3).row_lengths(rows, RowFormat.PROMPT_COMPLETION, split=SPLIT) == (
        expected
    )


def test_counts_equal_the_lengths_trl_trains_on(tiny_gemma3: Path, tmp_path: Path) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    rows = ROWS[RowFormat.MESSAGES]
    tokenizer = load_tokenizer(tiny_gemma3)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_gemma3),
        args=SFTConfig(output_dir=str(tmp_path), max_length=4096, report_to=[], use_cpu=True),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trained = [len(example["input_ids"]) for example in trainer.train_dataset]

    assert counter_for(tiny_gemma3).row_lengths(rows, RowFormat.MESSAGES, split=SPLIT) == trained


def test_vision_rows_count_every_image_as_its_soft_tokens(tiny_gemma3_vision: Path) -> None:
    rows = [
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}],
                },
                {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
            ],
            "images": [b"unused by counting"],
        }
    ]
    processor = load_processor(tiny_gemma3_vision)
    expected = token_lengths(
        rows, RowFormat.VISION_MESSAGES, processor.tokenizer, split=SPLIT, processor=processor
    )
    counter = counter_for(tiny_gemma3_vision)

    assert counter.row_lengths(rows, RowFormat.VISION_MESSAGES, split=SPLIT) == expected
    with pytest.raises(DatasetError, match=r"row 0, field 'images': its images end at token"):
        counter.row_lengths(rows, RowFormat.VISION_MESSAGES, split=SPLIT, max_length=4)


def test_a_row_the_template_rejects_is_named(tiny_gemma3: Path) -> None:
    rows = [ROWS[RowFormat.MESSAGES][0], {"messages": [{"role": "assistant", "content": "x"}]}]
    with pytest.raises(DatasetError, match=r"row 11, field 'messages': the chat template rejects"):
        counter_for(tiny_gemma3).row_lengths(rows, RowFormat.MESSAGES, split=SPLIT, first_row=10)


def test_the_trainer_counts_a_model_without_a_template_with_the_one_it_trains_with(
    tiny_gemma3: Path, tmp_path: Path
) -> None:
    # A pretrained checkpoint ships no chat template; trainer/modeling.py gives its tokenizer
    # the Gemma one, and the trainer's counter must render that one, not fail for want of it.
    import shutil

    from trainer.pipeline import shared_counter

    bare = tmp_path / "pretrained"
    shutil.copytree(tiny_gemma3, bare)
    (bare / "chat_template.jinja").unlink()
    tokenizer = load_tokenizer(bare)
    rows = ROWS[RowFormat.MESSAGES]
    expected = token_lengths(rows, RowFormat.MESSAGES, tokenizer, split=SPLIT)

    counter = shared_counter(bare, tokenizer)

    assert counter is not None
    assert counter.row_lengths(rows, RowFormat.MESSAGES, split=SPLIT) == expected
