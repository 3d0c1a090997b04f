"""The row rules of every trainer type: what a row must hold, and the columns its trainer reads.

Each normalizer checks one row and returns its format and columns, or raises a `RowError` naming
the field; `validate_rows` checks a split and raises one `DatasetError` naming the split, the
rows (0-based, as in pandas and `datasets`) and fields. Pure Python: the same rules run in
`tuning datasets validate`, in the validation before any GPU is claimed, and in the trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tuning.dataset.splits import MAX_REPORTED_PROBLEMS, SplitFile
from tuning.failures import DatasetError

ROLES = {"system": "system", "user": "user", "assistant": "assistant", "model": "assistant"}


class RowFormat(StrEnum):
    MESSAGES = "messages"  # {"messages": [system?, user, assistant, ...]}
    PROMPT_COMPLETION = "prompt_completion"  # {"prompt": str, "completion": str}
    CONVERSATIONAL_PROMPT_COMPLETION = "conversational_prompt_completion"  # lists of messages
    PREFERENCE = "preference"  # {"prompt": str, "chosen": str, "rejected": str}
    CONVERSATIONAL_PREFERENCE = "conversational_preference"  # the same as lists of messages
    PROMPT_ONLY = "prompt_only"  # {"prompt": str, "reference"?: str}, for GRPO
    CONVERSATIONAL_PROMPT_ONLY = "conversational_prompt_only"  # prompt as messages
    VISION_MESSAGES = "vision_messages"  # messages with image parts, plus "images"


@dataclass(frozen=True)
class RowProblem:
    row: int
    field: str
    message: str


class RowError(ValueError):
    """One row breaks a rule; `field` is the path inside the row."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def text_of(content: Any, field: str) -> str:
    """A message's content as text: a string, or the text parts of a typed list joined."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RowError(
            field, f"content must be a string or a list of parts, got {kind_of(content)}"
        )
    texts = []
    for index, part in enumerate(content):
        where = f"{field}[{index}]"
        if not isinstance(part, dict):
            raise RowError(where, f"a content part must be an object, got {kind_of(part)}")
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise RowError(f"{where}.text", "a text part needs a string 'text'")
            texts.append(part["text"])
        elif kind == "image":
            raise RowError(where, "image parts need modality 'vision'; this is a text job")
        else:
            raise RowError(f"{where}.type", f"unknown part type {kind!r} (expected 'text')")
    return "\n".join(texts)


ContentParser = Callable[[Any, str, str], Any]  # (content, field, role) -> normalized content


def _text_content(content: Any, field: str, role: str) -> str:
    return text_of(content, field)


def parse_messages(
    value: Any, field: str, *, content: ContentParser = _text_content
) -> list[dict[str, Any]]:
    """Messages with canonical roles; `content` normalizes each message's content."""
    if not isinstance(value, list) or not value:
        raise RowError(field, f"expected a non-empty list of messages, got {kind_of(value)}")
    messages = []
    for index, message in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(message, dict):
            raise RowError(where, f"a message must be an object, got {kind_of(message)}")
        raw_role = message.get("role")
        role = ROLES.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            raise RowError(
                f"{where}.role",
                f"role must be one of system, user, assistant; got {raw_role!r}",
            )
        messages.append(
            {"role": role, "content": content(message.get("content"), f"{where}.content", role)}
        )
    return messages


def check_turn_order(messages: list[dict[str, Any]], field: str) -> None:
    """Optional system first, then user and assistant alternating, as Gemma's template demands."""
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    offset = len(messages) - len(turns)
    for index, message in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise RowError(
                f"{field}[{index + offset}].role",
                f"expected '{expected}' here: after an optional system message, "
                "turns alternate user, assistant, user, ...",
            )


def normalize_sft_row(row: Any) -> tuple[RowFormat, dict[str, Any]]:
    """Validate one SFT row and return its format and the columns the trainer uses."""
    if not isinstance(row, dict):
        raise RowError("", f"a row must be an object, got {kind_of(row)}")
    if row.get("messages") is not None:
        messages = parse_messages(row["messages"], "messages")
        check_turn_order(messages, "messages")
        answered = [
            i for i, m in enumerate(messages) if m["role"] == "assistant" and m["content"].strip()
        ]
        if not answered:
            raise RowError("messages", "no assistant message with content: nothing to learn")
        return RowFormat.MESSAGES, {"messages": messages}
    if row.get("prompt") is None or row.get("completion") is None:
        raise RowError("messages", "expected 'messages', or 'prompt' and 'completion'")
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, str) and isinstance(completion, str):
        if not completion.strip():
            raise RowError("completion", "the completion is empty: nothing to learn")
        return RowFormat.PROMPT_COMPLETION, {"prompt": prompt, "completion": completion}
    if isinstance(prompt, list) and isinstance(completion, list):
        prompt_messages = parse_messages(prompt, "prompt")
        completion_messages = parse_messages(completion, "completion")
        if prompt_messages[-1]["role"] != "user":
            raise RowError(
                f"prompt[{len(prompt) - 1}].role", "the prompt must end with a user turn"
            )
        if [m["role"] for m in completion_messages] != ["assistant"]:
            raise RowError("completion", "the completion must be one assistant message")
        if not completion_messages[0]["content"].strip():
            raise RowError("completion[0].content", "the completion is empty: nothing to learn")
        check_turn_order(prompt_messages, "prompt")
        return RowFormat.CONVERSATIONAL_PROMPT_COMPLETION, {
            "prompt": prompt_messages,
            "completion": completion_messages,
        }
    raise RowError(
        "prompt",
        "prompt and completion must both be strings or both be lists of messages, "
        f"got {kind_of(prompt)} and {kind_of(completion)}",
    )


RowNormalizer = Callable[[Any], tuple[RowFormat, dict[str, Any]]]


def validate_rows(
    rows: list[Any],
    *,
    split: SplitFile,
    normalize: RowNormalizer,
    expected_format: RowFormat | None = None,
    first_row: int = 0,
) -> tuple[RowFormat, list[dict[str, Any]]]:
    """Normalize every row; raise one DatasetError listing the first problems found.

    `first_row`: the index of rows[0] in its split, for a split checked in chunks.
    """
    if not rows and not first_row:
        raise DatasetError(f"split '{split.name}' ({split.uri}) has no rows")
    problems: list[RowProblem] = []
    normalized: list[dict[str, Any]] = []
    row_format = expected_format
    for index, row in enumerate(rows):
        try:
            found, columns = normalize(row)
        except RowError as error:
            problems.append(RowProblem(first_row + index, error.field, error.message))
            continue
        if row_format is None:
            row_format = found
        elif found is not row_format:
            message = f"row is {found.value} but the dataset is {row_format.value}"
            problems.append(RowProblem(first_row + index, "", message))
            continue
        normalized.append(columns)
    if problems:
        raise DatasetError(describe_problems(split, problems))
    if row_format is None:  # an empty chunk after the first
        raise ValueError("no rows to check")
    return row_format, normalized


def describe_problems(split: SplitFile, problems: list[RowProblem]) -> str:
    shown = [
        f"row {p.row}" + (f", field '{p.field}'" if p.field else "") + f": {p.message}"
        for p in problems[:MAX_REPORTED_PROBLEMS]
    ]
    more = len(problems) - len(shown)
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
    return f"split '{split.name}' ({split.uri}): " + "; ".join(shown) + tail


def kind_of(value: Any) -> str:
    return "null" if value is None else type(value).__name__
