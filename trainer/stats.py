"""Token counts per row, with the tokenizer and chat template the trainer will use.

Rendering every row here also catches rows the chat template rejects, before
the model is loaded; the error names the row like the structural checks do.
"""

from __future__ import annotations

from typing import Any

from trainer.data import RowFormat, RowProblem, SplitFile, describe_problems
from trainer.errors import DatasetError
from tuning.jobs import DatasetStats


def token_lengths(
    rows: list[dict[str, Any]], row_format: RowFormat, tokenizer: Any, *, split: SplitFile
) -> list[int]:
    """Tokens per row as the SFT trainer will tokenize it (before truncation)."""
    from jinja2 import TemplateError

    lengths = []
    problems = []
    for index, row in enumerate(rows):
        try:
            lengths.append(_row_length(row, row_format, tokenizer))
        except TemplateError as error:
            problems.append(RowProblem(index, "messages", f"the chat template rejects it: {error}"))
    if problems:
        raise DatasetError(describe_problems(split, problems))
    return lengths


def _row_length(row: dict[str, Any], row_format: RowFormat, tokenizer: Any) -> int:
    if row_format is RowFormat.PROMPT_COMPLETION:
        # TRL appends the EOS token to plain-text completions.
        return len(tokenizer(row["prompt"] + row["completion"])["input_ids"]) + 1
    messages = (
        row["messages"] if row_format is RowFormat.MESSAGES else row["prompt"] + row["completion"]
    )
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
    return len(encoded["input_ids"])


def dataset_stats(
    train_lengths: list[int], eval_rows: int, max_length: int, *, packing: bool
) -> DatasetStats:
    """Rows, tokens trained on and rows cut at max_length (packing cuts them the same way)."""
    del packing  # TRL's default packing (best-fit decreasing) truncates overflow like padding does
    return DatasetStats(
        train_rows=len(train_lengths),
        eval_rows=eval_rows,
        train_tokens=sum(min(length, max_length) for length in train_lengths),
        truncated_rows=sum(length > max_length for length in train_lengths),
    )
