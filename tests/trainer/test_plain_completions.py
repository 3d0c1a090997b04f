"""Plain-string prompt/completion rows: through the chat template where the model has one."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tests.trainer.test_training_defaults import config_of, run_of, with_rows
from trainer.sft import sft_trainer
from tuning.dataset.rows import RowFormat

ROWS = [
    {"prompt": "What colour is the fox?", "completion": "The fox is red."},
    {"prompt": "What colour is the crow?", "completion": "The crow is black."},
]


def first_example(model_dir: Path, tmp_path: Path, tokenizer: Any) -> tuple[list[int], list[int]]:
    """The first training example as TRL tokenized it: ids, and 1 where a token is trained."""
    run = run_of(config_of("sft", "LoRA", packing=False), model_dir, tmp_path, tokenizer)
    run = with_rows(run, ROWS, RowFormat.PROMPT_COMPLETION)
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


def conversation_run(model_dir: Path, tmp_path: Path, tokenizer: Any, warnings: list[str]) -> Any:
    run = run_of(config_of("sft", "LoRA", packing=False), model_dir, tmp_path, tokenizer)
    rows = [
        {
            "messages": [
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["completion"]},
            ]
        }
        for row in ROWS
    ]
    return dataclasses.replace(with_rows(run, rows, RowFormat.MESSAGES), warn=warnings.append)


def test_an_unrecognised_chat_template_is_a_warning_that_says_what_the_loss_covers(
    tiny_gemma3: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma3)
    # Gemma's turns, but not a template string TRL knows (as a re-typed template would be).
    tokenizer.chat_template = (
        "{{ bos_token }}{% for message in messages %}<start_of_turn>"
        "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
        "{{ message['content'] }}<end_of_turn>\n{% endfor %}"
    )
    warnings: list[str] = []

    example = sft_trainer(conversation_run(tiny_gemma3, tmp_path, tokenizer, warnings))
    labels = example.train_dataset[0].get("labels")
    ids = example.train_dataset[0]["input_ids"]

    assert len(warnings) == 1 and "not one TRL recognises" in warnings[0]
    assert "user turns" in warnings[0]
    trained = (
        ids
        if labels is None
        else [t for t, label in zip(ids, labels, strict=True) if label != -100]
    )
    assert "What colour is the fox?" in tokenizer.decode(trained)  # the prompt is trained too


def test_gemma_s_own_template_trains_on_answers_only_without_a_warning(
    tiny_gemma3: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma3)
    warnings: list[str] = []

    trainer = sft_trainer(conversation_run(tiny_gemma3, tmp_path, tokenizer, warnings))
    example = trainer.train_dataset[0]

    assert warnings == []
    assert trainer.args.assistant_only_loss
    trained = tokenizer.decode(
        [
            token
            for token, label in zip(example["input_ids"], example["labels"], strict=True)
            if label != -100
        ]
    )
    assert trained.startswith("The fox is red.<end_of_turn>") and "fox?" not in trained


def test_masks_are_exact_with_google_s_published_gemma_template(
    tiny_gemma3: Path, tmp_path: Path
) -> None:
    # The real template as Google published it with gemma-2-2b-it, read from the pinned
    # llama.cpp sources (`make llama-cpp`, which CI runs): TRL recognises templates by their
    # exact string, so a copy of ours or TRL's would prove nothing. The GGUF package of the slow
    # tier carries no template (the pretrained 270M has none).
    from transformers import AutoTokenizer

    from trainer.llama_cpp import LlamaCppTools

    published = LlamaCppTools.locate().source_dir / "models/templates/google-gemma-2-2b-it.jinja"
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma3)
    tokenizer.chat_template = published.read_text()
    warnings: list[str] = []

    trainer = sft_trainer(conversation_run(tiny_gemma3, tmp_path, tokenizer, warnings))
    example = trainer.train_dataset[0]

    assert warnings == [] and trainer.args.assistant_only_loss
    text = tokenizer.decode(example["input_ids"])
    assert text.startswith("<bos><start_of_turn>user\nWhat colour is the fox?<end_of_turn>\n")
    trained = tokenizer.decode(
        [
            t
            for t, label in zip(example["input_ids"], example["labels"], strict=True)
            if label != -100
        ]
    )
    assert trained.startswith("The fox is red.<end_of_turn>") and "fox?" not in trained
