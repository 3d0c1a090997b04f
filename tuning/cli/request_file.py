"""Reading a job request file (YAML or JSON) for `tuning submit`, with errors a person can act on.

A file that does not parse is reported as `FILE, line L, column C: what is wrong`, never as a
parser traceback; a field the API refuses is located in the file the same way, when it can be.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuning.cli.client import ClientError

YAML_SUFFIXES = {".yaml", ".yml"}


def load_request(path: Path) -> dict[str, Any]:
    """The request in `path`; ClientError naming the file, line and column when it is broken."""
    if not path.is_file():
        raise ClientError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ClientError(f"{path}: not UTF-8 text (byte {error.start})") from None
    yaml_file = path.suffix.lower() in YAML_SUFFIXES
    data = _parse_yaml(path, text) if yaml_file else _parse_json(path, text)
    if not isinstance(data, dict):
        raise ClientError(
            f"{path}: the request must be a mapping (processed_dataset_id: ..., "
            f"training_config: ...), not {type(data).__name__}"
        )
    return data


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ClientError(
            f"{path}, line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None


def _parse_yaml(path: Path, text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(part for part in (error.context, error.problem) if part)
        raise ClientError(f"{path}{where}: {problem or 'not valid YAML'}") from None
    except yaml.YAMLError as error:
        raise ClientError(f"{path}: not valid YAML ({error})") from None


def field_line(path: Path, field: str) -> int | None:
    """The 1-based line of a dotted field (`training_config.hyperparameters.learning_rat`) in a
    YAML or JSON request file (JSON is YAML), or None when it is not there."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text_field_line(text, field)


def text_field_line(text: str, field: str) -> int | None:
    """The 1-based line of a dotted field in a request's YAML or JSON text, or of its nearest
    parent that is there; None when not even the first part is (the dashboard uses it too)."""
    import yaml

    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in field.split("."):
        if isinstance(node, yaml.MappingNode):
            match = next((pair for pair in node.value if pair[0].value == part), None)
            if match is None:
                return line
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def locate_refusal(path: Path, error: ClientError) -> ClientError:
    """The API's 422 with the file and line of the field it names, when the file has it."""
    body = error.body if isinstance(error.body, dict) else {}
    field = (body.get("error") or {}).get("field") if isinstance(body.get("error"), dict) else None
    if error.status != 422 or not field:
        return error
    line = field_line(path, str(field))
    if line is None:
        return error
    return ClientError(f"{path}, line {line}: {error}", status=error.status, body=error.body)
