"""Plain-string prompt/completion rows: through the chat template where the model has one."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tests.trainer.test_training_defaults import config_of, run_of
from trainer.data import DatasetSplits, RowFormat
from trainer.sft import sft_trainer

ROWS = [
    {"prompt": "What colour is the fox?", "completion": "The fox is red."},
    {"prompt": "What colour is the crow?", "completion": "The crow is black."},
]


def first_example(model_dir: Path, tmp_path: Path, tokenizer: Any) -> tuple[list[int], list[int]]:
    """The first training example as TRL tokenized it: ids, and 1 where a token is trained."""
    run = run_of(config_of("sft", "LoRA", packing=False), model_dir, tmp_path, tokenizer)
    run = dataclasses.replace(
        run,
        splits=DatasetSplits(
            train=ROWS,
            eval=None,
            row_format=RowFormat.PROMPT_COMPLETION,
            train_source="t",
            eval_source=None,
        ),
    )
    example = sft_trainer(run).train_dataset[0]
    return example["input_ids"], [int(label != -100) for label in example["labels"]]


def trained_text(tokenizer: Any, ids: list[int], mask: list[int]) -> str:
    return tokenizer.decode([token for token, keep in zip(ids, mask, strict=True) if keep])


def test_an_instruction_model_learns_its_turn_format_from_plain_rows(
    tiny_gemma3: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma3)

    ids, mask = first_example(tiny_gemma3, tmp_path, tokenizer)

    text = tokenizer.decode(ids)
    assert "<start_of_turn>user\nWhat colour is the fox?<end_of_turn>" in text
    assert "<start_of_turn>model\n" in text
    # The loss covers the answer and the end of the turn, not the prompt or the turn header.
    trained = trained_text(tokenizer, ids, mask)
    assert trained.startswith("The fox is red.<end_of_turn>")
    assert "fox?" not in trained and "<start_of_turn>" not in trained


def test_a_model_without_a_chat_template_joins_prompt_and_completion(
    tiny_gemma3: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma3)
    tokenizer.chat_template = None  # as a base checkpoint without a template ships

    ids, mask = first_example(tiny_gemma3, tmp_path, tokenizer)

    text = tokenizer.decode(ids)
    assert "<start_of_turn>" not in text
    assert "What colour is the fox?" in text
    assert ids[-1] == tokenizer.eos_token_id  # the model learns to stop
    assert trained_text(tokenizer, ids, mask).strip().startswith("The fox is red.")
