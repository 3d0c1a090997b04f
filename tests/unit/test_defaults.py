"""Hyperparameter defaults per trainer type and method: resolved once, for the API and trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trainer.batching import plan_batching
from trainer.data import DatasetSplits
from trainer.hardware import Hardware
from trainer.run import TrainingRun
from trainer.training import common_arguments
from tuning.api.openapi import openapi_document
from tuning.dataset.rows import RowFormat
from tuning.defaults import DEFAULTED_FIELDS, describe_hyperparameters, tracked_training_config
from tuning.errors import InvalidRequestError
from tuning.spec import (
    Hyperparameters,
    Method,
    SchedulerType,
    TrainerType,
    TrainingConfig,
    TrainRequest,
    parse_train_request,
    resolve_hyperparameters,
)

REWARDS = {"functions": ["format", "exact_match"]}

# What an omitted field trains with: (learning_rate, epochs, scheduler, warmup, decay, beta).
# Written out here, not read from tuning.defaults, so that a changed default fails this test.
EXPECTED = {
    ("sft", "LoRA"): (2e-4, 3, "linear", 0.1, 0.0, 0.1),
    ("sft", "QLoRA"): (2e-4, 3, "linear", 0.1, 0.0, 0.1),
    ("sft", "Full"): (2e-5, 3, "linear", 0.1, 0.0, 0.1),
    ("dpo", "LoRA"): (5e-6, 3, "linear", 0.1, 0.0, 0.1),
    ("dpo", "QLoRA"): (5e-6, 3, "linear", 0.1, 0.0, 0.1),
    ("dpo", "Full"): (1e-6, 3, "linear", 0.1, 0.0, 0.1),
    ("orpo", "LoRA"): (5e-6, 3, "linear", 0.1, 0.0, 0.1),
    ("orpo", "QLoRA"): (5e-6, 3, "linear", 0.1, 0.0, 0.1),
    ("orpo", "Full"): (1e-6, 3, "linear", 0.1, 0.0, 0.1),
    ("grpo", "LoRA"): (5e-6, 1, "cosine", 0.1, 0.1, 0.0),
    ("grpo", "QLoRA"): (5e-6, 1, "cosine", 0.1, 0.1, 0.0),
    ("grpo", "Full"): (1e-6, 1, "cosine", 0.1, 0.1, 0.0),
}
# The seed service's defaults: a request giving all of them must train exactly as before.
SEED_VALUES = {
    "learning_rate": 2e-4,
    "epochs": 3,
    "lr_scheduler_type": "linear",
    "warmup_ratio": 0.0,
    "weight_decay": 0.0,
    "beta": 0.1,
}


def request_data(
    trainer_type: str = "sft", method: str = "QLoRA", **hyperparameters: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "base_model_id": "google/gemma-3-1b-it",
        "trainer_type": trainer_type,
        "method": method,
        "hyperparameters": hyperparameters,
    }
    if trainer_type == "grpo":
        config["reward_config"] = REWARDS
    return {"processed_dataset_id": "ds1", "training_config": config}


def config_of(trainer_type: str = "sft", method: str = "QLoRA", **values: Any) -> TrainingConfig:
    return parse_train_request(request_data(trainer_type, method, **values)).training_config


def used(config: TrainingConfig) -> tuple[Any, ...]:
    hp = config.resolved_hyperparameters
    return tuple(
        value.value if isinstance(value, SchedulerType) else value
        for value in (getattr(hp, name) for name in DEFAULTED_FIELDS)
    )


# --- the resolver ---------------------------------------------------------------------------


@pytest.mark.parametrize(("trainer_type", "method"), sorted(EXPECTED))
def test_an_omitted_field_takes_the_default_of_its_trainer_type_and_method(trainer_type, method):
    config = config_of(trainer_type, method)

    assert used(config) == EXPECTED[(trainer_type, method)]
    assert all(getattr(config.hyperparameters, name) is None for name in DEFAULTED_FIELDS)


def test_full_fine_tuning_learns_far_slower_than_an_adapter():
    for trainer_type in TrainerType:
        adapter = config_of(trainer_type.value, "LoRA").resolved_hyperparameters
        full = config_of(trainer_type.value, "Full").resolved_hyperparameters

        assert full.learning_rate <= adapter.learning_rate / 5, trainer_type


def test_preference_and_rl_learn_far_slower_than_sft():
    sft = config_of("sft", "LoRA").resolved_hyperparameters.learning_rate
    for trainer_type in ("dpo", "orpo", "grpo"):
        assert config_of(trainer_type, "LoRA").resolved_hyperparameters.learning_rate < sft / 10


@pytest.mark.parametrize("trainer_type", ["sft", "dpo", "orpo", "grpo"])
@pytest.mark.parametrize("method", ["LoRA", "QLoRA", "Full"])
def test_a_request_giving_every_field_trains_as_the_seed_did(trainer_type, method):
    config = config_of(trainer_type, method, **SEED_VALUES)

    assert used(config) == tuple(SEED_VALUES.values())


def test_a_given_value_is_kept_even_when_it_is_another_types_default():
    # 2e-4 is SFT-LoRA's default and 0.1 DPO's beta: given to GRPO Full, both stay.
    config = config_of("grpo", "Full", learning_rate=2e-4, beta=0.1, epochs=2)

    hp = config.resolved_hyperparameters
    assert (hp.learning_rate, hp.beta, hp.epochs) == (2e-4, 0.1, 2)
    assert (hp.warmup_ratio, hp.weight_decay) == (0.1, 0.1)  # the rest still default


def test_a_given_zero_is_kept_and_not_taken_for_omitted():
    config = config_of("sft", "LoRA", warmup_ratio=0, weight_decay=0)

    hp = config.resolved_hyperparameters
    assert (hp.warmup_ratio, hp.weight_decay) == (0, 0)
    assert config_of("sft", "LoRA").resolved_hyperparameters.warmup_ratio == 0.1


def test_an_explicit_null_means_the_default():
    nulls = dict.fromkeys(DEFAULTED_FIELDS)

    assert used(config_of("dpo", "Full", **nulls)) == EXPECTED[("dpo", "Full")]


def test_the_resolver_is_pure():
    hyperparameters = Hyperparameters(beta=0.3)

    first = resolve_hyperparameters(
        hyperparameters, trainer_type=TrainerType.GRPO, method=Method.FULL
    )
    second = resolve_hyperparameters(
        hyperparameters, trainer_type=TrainerType.DPO, method=Method.LORA
    )

    assert hyperparameters.learning_rate is None and hyperparameters.beta == 0.3
    assert (first.learning_rate, first.beta) == (1e-6, 0.3)
    assert (second.learning_rate, second.beta) == (5e-6, 0.3)


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("trainer_type", ["dpo", "orpo"])
def test_a_preference_job_refuses_beta_zero_and_names_the_field(trainer_type):
    with pytest.raises(InvalidRequestError) as raised:
        parse_train_request(request_data(trainer_type, "LoRA", beta=0))

    assert raised.value.field == "training_config.hyperparameters.beta"
    assert "omit it for the default 0.1" in raised.value.message


def test_grpo_accepts_beta_zero_given():
    assert config_of("grpo", "Full", beta=0).resolved_hyperparameters.beta == 0


def test_a_negative_beta_is_still_refused():
    with pytest.raises(InvalidRequestError) as raised:
        parse_train_request(request_data("grpo", "LoRA", beta=-0.1))

    assert raised.value.field == "training_config.hyperparameters.beta"


# --- what is stored, hashed and shown -------------------------------------------------------


def test_fingerprint_and_redacted_are_stable_for_the_same_request():
    data = request_data("dpo", "LoRA", beta=0.2)

    first, second = parse_train_request(data), parse_train_request(json.loads(json.dumps(data)))

    assert first.fingerprint() == second.fingerprint()
    assert first.redacted() == second.redacted()


def test_the_stored_request_resolves_to_the_same_values_in_the_trainer():
    # submit stores redacted(); the trainer parses that copy and must train with the same values.
    request = parse_train_request(request_data("grpo", "Full", learning_rate=3e-6))

    stored = TrainRequest.model_validate(json.loads(json.dumps(request.redacted())))

    assert stored.fingerprint() == request.fingerprint()
    assert stored.training_config.resolved_hyperparameters == (
        request.training_config.resolved_hyperparameters
    )
    assert stored.training_config.hyperparameters.beta is None  # still "the default", not 0.0


def test_omitting_a_field_and_giving_its_value_are_different_requests():
    omitted = parse_train_request(request_data("dpo", "LoRA"))
    given = parse_train_request(request_data("dpo", "LoRA", learning_rate=5e-6))

    assert omitted.fingerprint() != given.fingerprint()


def test_the_start_message_names_each_value_and_where_it_came_from():
    text = describe_hyperparameters(config_of("grpo", "Full", learning_rate=3e-6))

    assert text.startswith("hyperparameters for grpo with Full: ")
    assert "learning_rate 3e-06 (given)" in text
    assert "beta 0 (default)" in text
    assert "lr_scheduler_type cosine (default)" in text


def test_the_sft_start_message_leaves_out_beta():
    text = describe_hyperparameters(config_of("sft", "Full"))

    assert "learning_rate 2e-05 (default)" in text and "beta" not in text


def test_weights_and_biases_get_the_values_used_and_no_secret():
    data = request_data("dpo", "Full")
    data["hf_token"] = "hf_secret_value"
    request = parse_train_request(data)

    tracked = tracked_training_config(request)

    assert tracked["hyperparameters"]["learning_rate"] == 1e-6
    assert tracked["hyperparameters"]["beta"] == 0.1
    assert "hf_secret_value" not in json.dumps(tracked)


def test_the_openapi_document_shows_the_defaults_per_type():
    properties = openapi_document()["components"]["schemas"]["Hyperparameters"]["properties"]

    assert "| dpo | `5e-06` | `1e-06` |" in properties["learning_rate"]["description"]
    assert "| sft | `0.0002` | `2e-05` |" in properties["learning_rate"]["description"]
    assert "| grpo | `0` | `0` |" in properties["beta"]["description"]
    assert "| sft | not used | not used |" in properties["beta"]["description"]
    assert "| grpo | `cosine` | `cosine` |" in properties["lr_scheduler_type"]["description"]
    for name in DEFAULTED_FIELDS:
        description = properties[name]["description"]
        assert properties[name]["default"] is None, name
        assert "TRL" in description or "Unsloth" in description, name  # cites its source


# --- the trainer reads the resolved values --------------------------------------------------


def run_of(config: TrainingConfig, tmp_path: Path) -> TrainingRun:
    return TrainingRun(
        config=config,
        splits=DatasetSplits(
            train=[], eval=None, row_format=RowFormat.MESSAGES, train_source="t", eval_source=None
        ),
        model_dir=tmp_path / "model",
        output_dir=tmp_path / "output",
        tokenizer=None,
        hardware=Hardware(cuda=False, bf16=False, flash_attention=False),
        attention="sdpa",
        batching=plan_batching(
            packing=False, batch_size=2, gradient_accumulation_steps=4, attention="sdpa"
        ),
        evaluate=False,
    )


def test_the_trainer_arguments_carry_the_defaults_of_the_job(tmp_path: Path):
    arguments = common_arguments(
        run_of(config_of("grpo", "QLoRA"), tmp_path), gradient_checkpointing=False
    )

    assert arguments["learning_rate"] == 5e-6
    assert arguments["num_train_epochs"] == 1
    assert arguments["lr_scheduler_type"] == "cosine"
    assert arguments["warmup_steps"] == 0.1  # below 1: a ratio of the total steps
    assert arguments["weight_decay"] == 0.1


def test_the_trainer_arguments_keep_a_given_value(tmp_path: Path):
    config = config_of("sft", "Full", learning_rate=2e-4, warmup_ratio=0)

    arguments = common_arguments(run_of(config, tmp_path), gradient_checkpointing=False)

    assert (arguments["learning_rate"], arguments["warmup_steps"]) == (2e-4, 0)


def test_the_readme_table_states_the_defaults_in_force():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rows = {
        cells[0]: cells[1:]
        for line in readme.splitlines()
        if line.startswith("| `") and "/" in line
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
        if len(cells) == 7
    }

    for trainer_type, method in (
        ("sft", "LoRA"),
        ("dpo", "LoRA"),
        ("orpo", "LoRA"),
        ("grpo", "LoRA"),
    ):
        key = next(name for name in rows if f"`{trainer_type}`" in name)
        rate, epochs, schedule, warmup, decay, beta = rows[key]
        adapter = config_of(trainer_type, method).resolved_hyperparameters
        full = config_of(trainer_type, "Full").resolved_hyperparameters
        given = tuple(float(part) for part in rate.split(" / "))
        assert given == (adapter.learning_rate, full.learning_rate), trainer_type
        assert (float(epochs), schedule) == (adapter.epochs, adapter.lr_scheduler_type.value)
        assert (float(warmup), float(decay)) == (adapter.warmup_ratio, adapter.weight_decay)
        if trainer_type != "sft":
            assert float(beta.split()[0]) == adapter.beta == full.beta


@pytest.mark.parametrize(("batch_size", "expected"), [(1, 2), (2, 4), (6, 8), (16, 16)])
def test_evaluation_batches_default_to_twice_training_s_up_to_eight(batch_size, expected, tmp_path):
    config = config_of("sft", "LoRA", batch_size=batch_size)

    assert config.resolved_hyperparameters.eval_batch_size == expected
    arguments = common_arguments(run_of(config, tmp_path), gradient_checkpointing=False)
    assert arguments["per_device_eval_batch_size"] == expected


def test_a_given_evaluation_batch_size_is_kept():
    assert config_of("dpo", "Full", eval_batch_size=3).resolved_hyperparameters.eval_batch_size == 3
