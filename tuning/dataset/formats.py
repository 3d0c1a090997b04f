"""Row formats of the preference (DPO/ORPO), prompt-only (GRPO) and vision (SFT) trainers.

Like `tuning.dataset.rows` for SFT rows: each normalizer checks one row and returns its format
and the columns its trainer reads, or raises a RowError naming the field. Pure Python: these run
in `tuning datasets validate`, in dispatch before any GPU is claimed, and in the trainer.

- preference: `{"prompt", "chosen", "rejected"}`, all strings, or a prompt of messages ending
  with a user turn and `chosen`/`rejected` each one assistant message.
- prompt-only: `{"prompt", <reference column>}`, a string or messages ending with a user turn;
  the reference answer (string or number) is carried as `reference` for the rewards.
- vision: `{"messages", "images"}`; user turns hold `{"type": "image"}` placeholders, one per
  image, in order. An image is bytes (a parquet binary column), `{"bytes": ...}` (a Hugging Face
  `Image` column), or a `gs://` URI of an image file in the data bucket. The older form with the
  image inside its content part (`{"type": "image", "image": ...}`) is accepted too.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from tuning.dataset.rows import (
    RowError,
    RowFormat,
    RowNormalizer,
    check_turn_order,
    kind_of,
    parse_messages,
)
from tuning.rewards import NEEDS_REFERENCE, REFERENCE, parse_number
from tuning.spec import RewardConfig, RewardFunction

GCS_SCHEME = "gs://"
ImageSource = bytes | str  # image file bytes, or a gs:// URI resolved by trainer.images


# Preference rows (DPO, ORPO) -----------------------------------------------------------------


def normalize_preference_row(row: Any) -> tuple[RowFormat, dict[str, Any]]:
    """Validate one preference row: a prompt and a chosen and a rejected answer."""
    if not isinstance(row, dict):
        raise RowError("", f"a row must be an object, got {kind_of(row)}")
    for name in ("prompt", "chosen", "rejected"):
        if row.get(name) is None:
            found = _shape_hint(row)
            raise RowError(
                name,
                f"preference rows (dpo, orpo) need 'prompt', 'chosen' and 'rejected'; "
                f"'{name}' is missing{found}",
            )
    prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
    if isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str):
        for name, text in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
            if not text.strip():
                raise RowError(name, f"'{name}' is empty")
        if chosen == rejected:
            raise RowError("rejected", "chosen and rejected are identical: nothing to prefer")
        return RowFormat.PREFERENCE, {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    if isinstance(prompt, list) and isinstance(chosen, list) and isinstance(rejected, list):
        prompt_messages = _prompt_messages(prompt)
        answers = {name: _one_answer(row[name], name) for name in ("chosen", "rejected")}
        if answers["chosen"] == answers["rejected"]:
            raise RowError("rejected", "chosen and rejected are identical: nothing to prefer")
        return RowFormat.CONVERSATIONAL_PREFERENCE, {"prompt": prompt_messages, **answers}
    raise RowError(
        _odd_one_out({"prompt": prompt, "chosen": chosen, "rejected": rejected}),
        "prompt, chosen and rejected must all be strings or all be lists of messages, got "
        f"{kind_of(prompt)}, {kind_of(chosen)} and {kind_of(rejected)}",
    )


def _odd_one_out(values: dict[str, Any]) -> str:
    """The field to fix when the three do not share a shape: one that is neither a string nor
    a list, else the one whose shape differs from the others' (`prompt` when all differ)."""
    for name, value in values.items():
        if not isinstance(value, str | list):
            return name
    shapes = {name: isinstance(value, str) for name, value in values.items()}
    for name, shape in shapes.items():
        if sum(other == shape for other in shapes.values()) == 1:
            return name
    return "prompt"


def _shape_hint(row: dict[str, Any]) -> str:
    if row.get("messages") is not None:
        return " (this row has 'messages': an SFT row; use trainer_type 'sft' for it)"
    if row.get("completion") is not None:
        return " (this row has 'completion': an SFT prompt/completion row)"
    return ""


def _prompt_messages(value: list[Any]) -> list[dict[str, Any]]:
    messages = parse_messages(value, "prompt")
    if messages[-1]["role"] != "user":
        raise RowError(f"prompt[{len(messages) - 1}].role", "the prompt must end with a user turn")
    check_turn_order(messages, "prompt")
    return messages


def _one_answer(value: list[Any], field: str) -> list[dict[str, Any]]:
    messages = parse_messages(value, field)
    if [message["role"] for message in messages] != ["assistant"]:
        raise RowError(field, f"'{field}' must be one assistant message")
    if not messages[0]["content"].strip():
        raise RowError(f"{field}[0].content", f"the {field} answer is empty")
    return messages


# Prompt-only rows (GRPO) ---------------------------------------------------------------------


def prompt_row_normalizer(reward_config: RewardConfig | None) -> RowNormalizer:
    """A normalizer for GRPO rows; the rewards decide whether a reference answer is required."""
    functions: Collection[RewardFunction] = reward_config.functions if reward_config else ()
    column = reward_config.reference_column if reward_config else "answer"
    required = any(function in NEEDS_REFERENCE for function in functions)
    numeric = RewardFunction.NUMERIC_MATCH in functions

    def normalize(row: Any) -> tuple[RowFormat, dict[str, Any]]:
        return normalize_prompt_row(
            row, reference_column=column, required=required, numeric=numeric
        )

    return normalize


def normalize_prompt_row(
    row: Any, *, reference_column: str = "answer", required: bool = False, numeric: bool = False
) -> tuple[RowFormat, dict[str, Any]]:
    """Validate one GRPO row: a prompt, and its reference answer when a reward compares with it."""
    if not isinstance(row, dict):
        raise RowError("", f"a row must be an object, got {kind_of(row)}")
    prompt = row.get("prompt")
    if prompt is None:
        hint = " (this row has 'messages': an SFT row)" if row.get("messages") is not None else ""
        raise RowError("prompt", f"grpo rows need a 'prompt' to generate completions for{hint}")
    columns: dict[str, Any]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise RowError("prompt", "the prompt is empty")
        row_format, columns = RowFormat.PROMPT_ONLY, {"prompt": prompt}
    elif isinstance(prompt, list):
        row_format, columns = (
            RowFormat.CONVERSATIONAL_PROMPT_ONLY,
            {"prompt": _prompt_messages(prompt)},
        )
    else:
        raise RowError(
            "prompt", f"prompt must be a string or a list of messages, got {kind_of(prompt)}"
        )
    reference = _reference(row, reference_column, required=required, numeric=numeric)
    if reference is not None:
        columns[REFERENCE] = reference
    return row_format, columns


def _reference(row: dict[str, Any], column: str, *, required: bool, numeric: bool) -> str | None:
    if not required:
        return None
    value = row.get(column)
    rule = f"(reward_config.reference_column is '{column}')"
    if value is None:
        raise RowError(column, f"the reference answer is missing {rule}")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RowError(
            column, f"the reference answer must be a string or a number, got {kind_of(value)}"
        )
    text = str(value).strip()
    if not text:
        raise RowError(column, f"the reference answer is empty {rule}")
    if numeric and parse_number(text) is None:
        raise RowError(
            # Never the row's text: errors reach whoever submitted the job, and datasets
            # are not owned yet (docs/deploy.md), so a quote could leak another's rows.
            column,
            f"numeric_match needs a number in the reference answer, got text of "
            f"{len(text)} characters with none",
        )
    return text


# Vision rows (SFT on Gemma 3 with images) ----------------------------------------------------


def normalize_vision_row(row: Any) -> tuple[RowFormat, dict[str, Any]]:
    """Validate one vision conversation and pair its image placeholders with its images."""
    if not isinstance(row, dict):
        raise RowError("", f"a row must be an object, got {kind_of(row)}")
    if row.get("messages") is None:
        raise RowError(
            "messages", "vision rows need 'messages' with image placeholders and 'images'"
        )
    embedded: list[tuple[str, ImageSource]] = []

    def content(value: Any, field: str, role: str) -> list[dict[str, Any]]:
        return _vision_parts(value, field, role, embedded)

    messages = parse_messages(row["messages"], "messages", content=content)
    check_turn_order(messages, "messages")
    if not any(m["role"] == "assistant" and _text(m["content"]).strip() for m in messages):
        raise RowError("messages", "no assistant message with content: nothing to learn")
    placeholders = sum(part["type"] == "image" for m in messages for part in m["content"])
    images = _images_column(row)
    if embedded and images:
        raise RowError(
            "images", "give images either in 'images' or inside the content parts, not both"
        )
    if embedded:
        images = embedded
    if not images:
        raise RowError(
            "images",
            "no images: modality 'vision' rows need an 'images' column with one image per "
            "{'type': 'image'} placeholder (use modality 'text' for text-only rows)",
        )
    if placeholders != len(images):
        raise RowError(
            "messages",
            f"{placeholders} image placeholder(s) in the user turns but {len(images)} image(s)",
        )
    return RowFormat.VISION_MESSAGES, {
        "messages": messages,
        "images": [source for _, source in images],
    }


def _text(parts: list[dict[str, Any]]) -> str:
    return "".join(part.get("text") or "" for part in parts if part["type"] == "text")


def _vision_parts(
    content: Any, field: str, role: str, embedded: list[tuple[str, ImageSource]]
) -> list[dict[str, Any]]:
    """Content as typed parts: text parts, and image placeholders (user turns only)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise RowError(
            field, f"content must be a string or a list of parts, got {kind_of(content)}"
        )
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        where = f"{field}[{index}]"
        if not isinstance(part, dict):
            raise RowError(where, f"a content part must be an object, got {kind_of(part)}")
        kind = part.get("type")
        if kind == "image":
            if role != "user":
                raise RowError(where, f"images belong in user turns, not in a {role} turn")
            if part.get("image") is not None:
                embedded.append((f"{where}.image", image_source(part["image"], f"{where}.image")))
            parts.append({"type": "image"})
        elif kind == "text":
            if not isinstance(part.get("text"), str):
                raise RowError(f"{where}.text", "a text part needs a string 'text'")
            parts.append({"type": "text", "text": part["text"]})
        else:
            raise RowError(f"{where}.type", f"unknown part type {kind!r} (expected text or image)")
    return parts


def _images_column(row: dict[str, Any]) -> list[tuple[str, ImageSource]]:
    if row.get("images") is not None:
        value = row["images"]
        if not isinstance(value, list):
            raise RowError("images", f"'images' must be a list of images, got {kind_of(value)}")
        return [
            (f"images[{i}]", image_source(item, f"images[{i}]")) for i, item in enumerate(value)
        ]
    if row.get("image") is not None:  # TRL's single-image column
        return [("image", image_source(row["image"], "image"))]
    return []


def image_source(value: Any, field: str) -> ImageSource:
    """Image bytes, or a gs:// URI; a Hugging Face `Image` struct gives its bytes or path."""
    if isinstance(value, dict):
        value = value.get("bytes") if value.get("bytes") is not None else value.get("path")
    if isinstance(value, bytes | bytearray):
        if not value:
            raise RowError(field, "the image is empty (0 bytes)")
        return bytes(value)
    if isinstance(value, str):
        if not value.startswith(GCS_SCHEME):
            raise RowError(field, f"an image given as text must be a gs:// URI, got {value[:80]!r}")
        return value
    raise RowError(field, f"an image must be bytes or a gs:// URI, got {kind_of(value)}")
