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


# Each example job, and the example rows it trains on (the ones its comments upload).
EXAMPLE_ROWS = {
    "job.yaml": "chats.jsonl",
    "qlora-gemma3-4b.yaml": "chats.jsonl",
    "dpo.yaml": "preferences.jsonl",
    "grpo.yaml": "arithmetic.jsonl",
    "vision.yaml": "vision.jsonl",
}


def test_there_is_an_example_per_trainer_type_method_and_modality() -> None:
    configs = [parse_train_request(yaml.safe_load(p.read_text())).training_config for p in EXAMPLES]

    assert {c.trainer_type.value for c in configs} >= {"sft", "dpo", "grpo"}
    assert {c.method.value for c in configs} >= {"LoRA", "QLoRA"}
    assert {c.modality.value for c in configs} == {"text", "vision"}
    assert sorted(p.name for p in EXAMPLES) == sorted(EXAMPLE_ROWS)


@pytest.mark.parametrize("name", sorted(EXAMPLE_ROWS))
def test_each_examples_rows_pass_its_trainers_rules(name: str) -> None:
    from trainer.recipes import recipe_for
    from tuning.dataset.rows import validate_rows
    from tuning.dataset.splits import SplitFile, read_rows

    folder = Path(__file__).parents[2] / "examples"
    config = parse_train_request(yaml.safe_load((folder / name).read_text())).training_config
    rows_file = folder / "data" / EXAMPLE_ROWS[name]
    split = SplitFile(name="train", uri=str(rows_file), suffix=".jsonl")

    _, rows = validate_rows(
        read_rows(rows_file.read_bytes(), split),
        split=split,
        normalize=recipe_for(config).row_normalizer(config),
    )

    assert len(rows) >= 3
