"""Bad numbers that would cost GPU time or break a write: too big, NaN, Infinity, on every path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.test_http_functions import (  # noqa: F401 (fixtures)
    _restore_framework_variables,
    client,
    environment,
)
from tuning.dispatching import parse_request_message
from tuning.errors import InvalidRequestError
from tuning.spec import MAX_STEPS, parse_train_request

GRPO = {
    "processed_dataset_id": "dataset_abc123",
    "training_config": {
        "base_model_id": "google/gemma-3-1b-it",
        "trainer_type": "grpo",
        "reward_config": {"functions": ["format", "exact_match"], "weights": [1.0, 0.5]},
    },
}


def with_config(section: str | None, **values: Any) -> dict[str, Any]:
    config = dict(GRPO["training_config"])  # type: ignore[arg-type]
    if section is None:
        config.update(values)
    else:
        config[section] = {**config.get(section, {}), **values}
    return {**GRPO, "training_config": config}


BIG = [
    ("hyperparameters", "max_steps", MAX_STEPS + 1),
    ("hyperparameters", "max_steps", 2**64),
    ("hyperparameters", "save_steps", MAX_STEPS + 1),
    ("hyperparameters", "logging_steps", 10**30),
    ("eval_config", "eval_steps", MAX_STEPS + 1),
    ("hyperparameters", "epochs", 101),
    ("hyperparameters", "batch_size", 10**9),
    ("hyperparameters", "gradient_accumulation_steps", 10**9),
    ("hyperparameters", "max_seq_length", 10**9),
    ("hyperparameters", "max_prompt_length", 10**9),
    ("hyperparameters", "max_completion_length", 10**9),
    ("hyperparameters", "num_generations", 10**9),
    ("hyperparameters", "lora_rank", 10**9),
    ("hyperparameters", "seed", 2**63),
]


@pytest.mark.parametrize(("section", "name", "value"), BIG, ids=[f"{n}={v}" for _, n, v in BIG])
def test_a_value_beyond_its_bound_is_422_naming_the_field(section: str, name: str, value: int):
    with pytest.raises(InvalidRequestError) as raised:
        parse_train_request(with_config(section, **{name: value}))

    assert raised.value.field == f"training_config.{section}.{name}"


def test_the_largest_step_counts_are_accepted():
    steps = {"max_steps": MAX_STEPS, "save_steps": MAX_STEPS, "logging_steps": MAX_STEPS}
    request = parse_train_request(with_config("hyperparameters", **steps))

    assert request.training_config.hyperparameters.max_steps == MAX_STEPS


NOT_FINITE = [
    ("reward_config", "weights", [float("inf"), 1.0], "weights.0"),
    ("reward_config", "weights", [1.0, float("nan")], "weights.1"),
    ("hyperparameters", "learning_rate", float("nan"), "learning_rate"),
    ("hyperparameters", "warmup_ratio", float("nan"), "warmup_ratio"),
    ("hyperparameters", "epochs", float("inf"), "epochs"),
    ("eval_config", "eval_holdout_fraction", float("nan"), "eval_holdout_fraction"),
]


@pytest.mark.parametrize(("section", "name", "value", "field"), NOT_FINITE)
def test_nan_and_infinity_are_refused_in_every_float_field(section, name, value, field):
    with pytest.raises(InvalidRequestError) as raised:
        parse_train_request(with_config(section, **{name: value}))

    assert raised.value.field == f"training_config.{section}.{field}"


def test_a_huge_literal_is_infinity_and_refused_over_http(environment):  # noqa: F811
    # json.loads("1e999") is inf: no NaN literal is needed to smuggle one in.
    body = json.dumps(GRPO).replace("0.5", "1e999").encode()

    answer = client("submit").post("/train", data=body, content_type="application/json")

    assert answer.status_code == 422, answer.get_data(as_text=True)
    assert answer.get_json()["error"]["field"] == "training_config.reward_config.weights.1"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_a_published_message_with_a_nan_literal_is_not_json(literal: str):
    data = json.dumps(GRPO).replace("0.5", literal).encode()

    with pytest.raises(InvalidRequestError) as raised:
        parse_request_message(data)

    assert "JSON" in raised.value.message


def test_a_published_message_with_a_huge_literal_names_the_field():
    data = json.dumps(GRPO).replace("0.5", "1e999").encode()

    with pytest.raises(InvalidRequestError) as raised:
        parse_request_message(data)

    assert raised.value.field == "training_config.reward_config.weights.1"
