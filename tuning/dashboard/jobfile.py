"""A job typed or dropped on the submit page (YAML or JSON text): parsed with the line and
column of what is wrong, and the line of a field the API refuses, for inline errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from tuning.cli.request_file import text_field_line as field_line


@dataclass(frozen=True)
class JobFileError(Exception):
    message: str
    line: int | None = None
    column: int | None = None

    def as_dict(self) -> dict[str, Any]:
        where = {"line": self.line, "column": self.column}
        return {
            "code": "invalid_file",
            "message": self.message,
            **{k: v for k, v in where.items() if v is not None},
        }


def parse(text: str) -> dict[str, Any]:
    """The request in `text` (JSON is tried first; YAML is a superset for everything else)."""
    stripped = text.lstrip()
    if not stripped:
        raise JobFileError("the job is empty: paste a YAML or JSON request")
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise JobFileError(error.msg, error.lineno, error.colno) from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            problem = " ".join(part for part in (error.context, error.problem) if part)
            raise JobFileError(
                problem or "not valid YAML",
                mark.line + 1 if mark is not None else None,
                mark.column + 1 if mark is not None else None,
            ) from None
        except yaml.YAMLError as error:
            raise JobFileError(f"not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise JobFileError(
            "the request must be a mapping (processed_dataset_id: ..., training_config: ...), "
            f"not {type(data).__name__}"
        )
    return data


__all__ = ["JobFileError", "field_line", "parse"]
