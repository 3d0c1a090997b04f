"""The request files the README points at stay valid requests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tuning.spec import parse_train_request

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_request_parses(path: Path) -> None:
    request = parse_train_request(yaml.safe_load(path.read_text()))

    assert request.processed_dataset_id


def test_there_are_examples() -> None:
    assert EXAMPLES
