"""Reading resource configurations as checkov hands them to a check.

From a plan every value arrives wrapped in a one-item list (`{"labels": [{"a": "b"}]}`) and
nested blocks as lists of dicts; from HCL much the same. `first` and `blocks` hide it.
"""

from __future__ import annotations

from typing import Any


def first(value: Any) -> Any:
    """The value itself, unwrapped from checkov's one-item lists."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def blocks(conf: Any, name: str) -> list[dict[str, Any]]:
    """The instances of nested block `name` (an empty list when absent)."""
    if not isinstance(conf, dict):
        return []
    value = conf.get(name)
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    found = []
    for item in value if isinstance(value, list) else [value]:
        item = first(item)
        if isinstance(item, dict):
            found.append(item)
        elif isinstance(item, list):
            found.extend(entry for entry in item if isinstance(entry, dict))
    return found


def path(conf: Any, *names: str) -> list[dict[str, Any]]:
    """Every instance reached by following nested blocks `names` from `conf`."""
    current = [conf]
    for name in names:
        current = [child for parent in current for child in blocks(parent, name)]
    return current
