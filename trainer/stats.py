"""Token counts per row, with the tokenizer and chat template the trainer will use.

Rendering every row here also catches rows the chat template rejects, before
the model is loaded; the error names the row like the structural checks do.
A row's length is what its trainer tokenizes: prompt plus the longer answer
for preference rows, the prompt for GRPO rows (completions are generated),
and for vision rows the text with every image expanded to its soft tokens.
"""

from __future__ import annotations

from typing import Any

from trainer.errors import DatasetError
from tuning.dataset.rows import RowFormat, RowProblem, describe_problems
from tuning.dataset.splits import SplitFile
from tuning.jobs import DatasetStats

# The field a chat template error is reported on.
_TEMPLATE_FIELD = {RowFormat.MESSAGES: "messages", RowFormat.VISION_MESSAGES: "messages"}


def token_lengths(
    rows: list[dict[str, Any]],
    row_format: RowFormat,
    tokenizer: Any,
    *,
    split: SplitFile,
    processor: Any = None,
    max_length: int | None = None,
) -> list[int]:
    """Tokens per row as its trainer will tokenize it (before truncation).

    For vision rows `processor` expands the images; with `max_length`, a row whose images would
    be cut by truncation is an error (the image's features would lose their tokens).
    """
    from jinja2 import TemplateError

    lengths = []
    problems = []
    field = _TEMPLATE_FIELD.get(row_format, "prompt")
    for index, row in enumerate(rows):
        try:
            if row_format is RowFormat.VISION_MESSAGES:
                length, images_end = _vision_length(row, tokenizer, processor)
                if max_length is not None and images_end > max_length:
                    problems.append(
                        RowProblem(
                            index,
                            "images",
                            f"its images end at token {images_end}, beyond max_seq_length "
                            f"{max_length}: truncation would cut an image; raise "
                            "hyperparameters.max_seq_length",
                        )
                    )
            else:
                length = _row_length(row, row_format, tokenizer)
            lengths.append(length)
        except TemplateError as error:
            problems.append(RowProblem(index, field, f"the chat template rejects it: {error}"))
    if problems:
        raise DatasetError(describe_problems(split, problems))
    return lengths


def _chat_length(tokenizer: Any, messages: list[dict[str, Any]], **kwargs: Any) -> int:
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return len(encoded["input_ids"])


def _text_length(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text)["input_ids"])


def _row_length(row: dict[str, Any], row_format: RowFormat, tokenizer: Any) -> int:
    match row_format:
        case RowFormat.PROMPT_COMPLETION:
            # TRL appends the EOS token to plain-text completions.
            return _text_length(tokenizer, row["prompt"] + row["completion"]) + 1
        case RowFormat.MESSAGES:
            return _chat_length(tokenizer, row["messages"])
        case RowFormat.CONVERSATIONAL_PROMPT_COMPLETION:
            return _chat_length(tokenizer, row["prompt"] + row["completion"])
        case RowFormat.PREFERENCE:
            longer = max(row["chosen"], row["rejected"], key=len)
            return _text_length(tokenizer, row["prompt"] + longer) + 1
        case RowFormat.CONVERSATIONAL_PREFERENCE:
            return max(
                _chat_length(tokenizer, row["prompt"] + row[answer])
                for answer in ("chosen", "rejected")
            )
        case RowFormat.PROMPT_ONLY:
            return _text_length(tokenizer, row["prompt"])
        case RowFormat.CONVERSATIONAL_PROMPT_ONLY:
            return _chat_length(tokenizer, row["prompt"], add_generation_prompt=True)
    raise ValueError(f"no token count for {row_format}")


def _vision_length(row: dict[str, Any], tokenizer: Any, processor: Any) -> tuple[int, int]:
    """(tokens of the row, tokens up to the end of its last image) as the processor makes them.

    Gemma 3's processor replaces each `<start_of_image>` the template writes with the full
    image sequence (begin marker, image soft tokens, end marker); counting that text gives the
    length without decoding any image.
    """
    text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
    marker = getattr(processor, "boi_token", None)
    expanded_image = getattr(processor, "full_image_sequence", None)
    if not marker or not expanded_image:
        raise ValueError("the processor does not say how it expands images (not a Gemma 3 one?)")
    head, _, _ = text.rpartition(marker)
    expanded_head = head.replace(marker, expanded_image) + expanded_image
    images_end = len(tokenizer(expanded_head, add_special_tokens=False)["input_ids"])
    total = len(
        tokenizer(text.replace(marker, expanded_image), add_special_tokens=False)["input_ids"]
    )
    return total, images_end


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
