"""The training request: seed compatibility, defaults, validation and secret handling."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tuning.errors import InvalidRequestError
from tuning.spec import (
    Destination,
    EvalConfig,
    ExportFormat,
    GgufQuantization,
    Hyperparameters,
    Method,
    Modality,
    Provider,
    TrainerType,
    TrainRequest,
    parse_train_request,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SEED_REQUEST = FIXTURES / "seed_train_request.json"
INVALID_REQUESTS = sorted((FIXTURES / "requests" / "invalid").glob("*.json"))

HF_TOKEN = "hf_SuperSecretTokenValue0123456789"
WANDB_KEY = "wandbSecretKeyValue9876543210abcdef"
REFERENCES = {
    "hf_token": "projects/demo/secrets/tuning-job1-hf-token/versions/1",
    "wandb_api_key": "projects/demo/secrets/tuning-job1-wandb/versions/1",
}


def seed_data() -> dict[str, Any]:
    return json.loads(SEED_REQUEST.read_text())


def minimal_data(**training_config: Any) -> dict[str, Any]:
    return {
        "processed_dataset_id": "ds1",
        "training_config": {"base_model_id": "google/gemma-3-1b-it", **training_config},
    }


def request_with_secrets() -> dict[str, Any]:
    data = seed_data()
    data["hf_token"] = HF_TOKEN
    data["training_config"]["wandb_config"] = {
        "api_key": WANDB_KEY,
        "project": "gemma-tuning",
        "entity": "team",
    }
    return data


# --- the seed's request -------------------------------------------------------------------------


def test_seed_example_request_parses_with_its_values():
    data = seed_data()

    request = parse_train_request(data)

    config = request.training_config
    assert request.processed_dataset_id == "dataset_abc123"
    assert request.job_name == "my-job-name"
    assert request.hf_token is not None
    assert request.hf_token.get_secret_value() == "hf_..."
    assert config.base_model_id == "google/gemma-2b"
    assert config.provider is Provider.HUGGINGFACE
    assert config.method is Method.LORA
    assert config.trainer_type is TrainerType.SFT
    assert config.modality is Modality.TEXT
    assert config.hyperparameters.learning_rate == 0.0001
    assert config.hyperparameters.batch_size == 4
    assert config.hyperparameters.max_seq_length == 2048
    assert config.hyperparameters.lr_scheduler_type == "linear"
    assert config.export_config.format is ExportFormat.MERGED
    assert config.export_config.destination is Destination.GCS
    assert config.export_config.hf_repo_id is None
    assert config.export_config.quantizations == []
    assert config.eval_config is not None
    assert config.eval_config.eval_strategy == "epoch"
    assert config.eval_config.eval_steps == 50
    assert config.wandb_config is None


def test_seed_example_request_round_trips_through_its_own_dump():
    request = parse_train_request(seed_data())

    again = parse_train_request(request.model_dump())

    assert again == request


def test_seed_example_does_not_modify_the_input_data():
    data = seed_data()
    before = copy.deepcopy(data)

    parse_train_request(data)

    assert data == before


# --- defaults -----------------------------------------------------------------------------------


def test_defaults_match_the_seed_service():
    data = minimal_data()

    request = parse_train_request(data)

    config = request.training_config
    hp = config.resolved_hyperparameters  # SFT with QLoRA: the seed's figures
    assert (hp.learning_rate, hp.batch_size, hp.gradient_accumulation_steps) == (2e-4, 2, 4)
    assert (hp.epochs, hp.max_steps, hp.packing, hp.max_seq_length) == (3, -1, False, 1024)
    assert (hp.lora_rank, hp.lora_alpha, hp.lora_dropout) == (16, 16, 0.05)
    assert (hp.beta, hp.max_prompt_length, hp.num_generations) == (0.1, 512, 4)
    assert config.method is Method.QLORA
    assert config.provider is Provider.HUGGINGFACE
    assert config.trainer_type is TrainerType.SFT
    assert config.modality is Modality.TEXT
    assert config.export_config.format is ExportFormat.ADAPTER
    assert config.export_config.destination is Destination.GCS
    assert config.export_config.include_gguf is False
    assert config.export_config.quantizations == []
    assert config.eval_config is None
    assert config.wandb_config is None
    assert config.reward_config is None
    assert request.hf_token is None
    assert request.job_name is None


def test_nested_sections_default_independently():
    first = parse_train_request(minimal_data())
    second = parse_train_request(minimal_data(hyperparameters={"batch_size": 8}))

    assert first.training_config.hyperparameters == Hyperparameters()
    assert second.training_config.hyperparameters.batch_size == 8
    assert second.training_config.resolved_hyperparameters.learning_rate == 2e-4


def test_eval_config_defaults_when_given_empty():
    request = parse_train_request(minimal_data(eval_config={}))

    assert request.training_config.eval_config == EvalConfig()
    assert request.training_config.eval_config.eval_strategy == "no"


def test_include_gguf_without_quantization_means_q8_0():
    request = parse_train_request(minimal_data(export_config={"include_gguf": True}))

    assert request.training_config.export_config.quantizations == [GgufQuantization.Q8_0]


def test_a_list_of_quantizations_is_kept_in_order():
    export = {"include_gguf": True, "gguf_quantization": ["q4_k_m", "f16"]}

    request = parse_train_request(minimal_data(export_config=export))

    assert request.training_config.export_config.quantizations == [
        GgufQuantization.Q4_K_M,
        GgufQuantization.F16,
    ]


# --- accepted variations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("lora", Method.LORA),
        ("LORA", Method.LORA),
        ("LoRA", Method.LORA),
        ("qlora", Method.QLORA),
        ("QLoRA", Method.QLORA),
        ("QLORA", Method.QLORA),
        ("full", Method.FULL),
        ("FULL", Method.FULL),
    ],
)
def test_method_is_accepted_in_any_case(given: str, expected: Method):
    data = minimal_data(method=given)

    request = parse_train_request(data)

    assert request.training_config.method is expected


def test_hub_export_with_token_and_repo_is_accepted():
    data = seed_data()
    data["training_config"]["export_config"].update(destination="hfhub", hf_repo_id="me/gemma-x")

    request = parse_train_request(data)

    assert request.training_config.export_config.hf_repo_id == "me/gemma-x"


def test_hub_export_with_token_secret_is_accepted():
    data = seed_data()
    del data["hf_token"]
    data["hf_token_secret"] = REFERENCES["hf_token"]
    data["training_config"]["export_config"].update(destination="hfhub", hf_repo_id="me/gemma-x")

    request = parse_train_request(data)

    assert request.has_hf_token
    assert request.hf_token_secret == REFERENCES["hf_token"]


def test_vision_with_a_gemma_3_4b_model_is_accepted():
    data = minimal_data(modality="vision", base_model_id="google/gemma-3-4b-it")

    request = parse_train_request(data)

    assert request.training_config.modality is Modality.VISION


def test_gcs_snapshot_base_model_is_accepted():
    data = minimal_data(base_model_id="gs://my-models/snapshots/gemma-3-4b-it/")

    request = parse_train_request(data)

    assert request.training_config.base_model_id == "gs://my-models/snapshots/gemma-3-4b-it/"


def test_grpo_with_rewards_and_a_matching_batch_is_accepted():
    data = minimal_data(
        trainer_type="grpo",
        reward_config={"functions": ["format", "exact_match"], "weights": [0.5, 1.0]},
        hyperparameters={"batch_size": 2, "gradient_accumulation_steps": 4, "num_generations": 8},
    )

    request = parse_train_request(data)

    assert request.training_config.reward_config is not None
    assert request.training_config.reward_config.reference_column == "answer"


# --- malformed requests -------------------------------------------------------------------------


def test_there_are_at_least_25_malformed_request_fixtures():
    assert len(INVALID_REQUESTS) >= 25


@pytest.mark.parametrize("path", INVALID_REQUESTS, ids=[path.stem for path in INVALID_REQUESTS])
def test_malformed_request_is_rejected_naming_the_field(path: Path):
    case = json.loads(path.read_text())

    with pytest.raises(InvalidRequestError) as caught:
        parse_train_request(case["request"])

    assert caught.value.field == case["field"]
    assert caught.value.problems
    assert caught.value.problems[0]["field"] == case["field"]


@pytest.mark.parametrize("data", [None, [], "text", 42])
def test_request_that_is_not_an_object_is_rejected(data: Any):
    with pytest.raises(InvalidRequestError):
        parse_train_request(data)


def test_error_to_dict_has_code_message_and_field():
    data = seed_data()
    data["training_config"]["hyperparameters"]["learning_rate"] = -1

    with pytest.raises(InvalidRequestError) as caught:
        parse_train_request(data)

    body = caught.value.to_dict()
    assert body["code"] == "invalid_argument"
    assert body["field"] == "training_config.hyperparameters.learning_rate"
    assert body["message"].startswith("training_config.hyperparameters.learning_rate: ")
    assert caught.value.http_status == 422


def test_error_lists_every_problem_in_details():
    data = seed_data()
    data["processed_dataset_id"] = "../x"
    data["training_config"]["hyperparameters"]["batch_size"] = 0

    with pytest.raises(InvalidRequestError) as caught:
        parse_train_request(data)

    fields = {item["field"] for item in caught.value.to_dict()["details"]}
    assert fields == {"processed_dataset_id", "training_config.hyperparameters.batch_size"}


def test_unknown_field_message_says_so():
    data = seed_data()
    data["surprise"] = True

    with pytest.raises(InvalidRequestError) as caught:
        parse_train_request(data)

    assert caught.value.message == "surprise: unknown field"


# --- secrets ------------------------------------------------------------------------------------


def test_repr_and_str_never_show_secret_values():
    request = parse_train_request(request_with_secrets())

    shown = repr(request) + str(request) + repr(request.training_config) + str(request.hf_token)

    assert HF_TOKEN not in shown
    assert WANDB_KEY not in shown


def test_json_dump_never_shows_secret_values():
    request = parse_train_request(request_with_secrets())

    dumped = request.model_dump_json() + json.dumps(request.model_dump(mode="json"))

    assert HF_TOKEN not in dumped
    assert WANDB_KEY not in dumped


def test_secret_values_stay_readable_to_the_service():
    request = parse_train_request(request_with_secrets())

    wandb = request.training_config.wandb_config
    assert request.hf_token is not None
    assert request.hf_token.get_secret_value() == HF_TOKEN
    assert wandb is not None
    assert wandb.api_key is not None
    assert wandb.api_key.get_secret_value() == WANDB_KEY


def test_redacted_holds_references_instead_of_secret_values():
    request = parse_train_request(request_with_secrets())

    redacted = request.redacted(REFERENCES)

    text = json.dumps(redacted)
    wandb = redacted["training_config"]["wandb_config"]
    assert HF_TOKEN not in text
    assert WANDB_KEY not in text
    assert "hf_token" not in redacted
    assert "api_key" not in wandb
    assert redacted["hf_token_secret"] == REFERENCES["hf_token"]
    assert wandb["api_key_secret"] == REFERENCES["wandb_api_key"]
    assert wandb["project"] == "gemma-tuning"


def test_redacted_request_parses_back_to_the_same_training_config():
    request = parse_train_request(request_with_secrets())

    again = parse_train_request(request.redacted(REFERENCES))

    assert again.hf_token is None
    assert again.hf_token_secret == REFERENCES["hf_token"]
    assert again.training_config.hyperparameters == request.training_config.hyperparameters
    assert again.training_config.export_config == request.training_config.export_config
    assert again.processed_dataset_id == request.processed_dataset_id


def test_redacted_without_references_still_drops_secret_values():
    request = parse_train_request(request_with_secrets())

    redacted = request.redacted()

    text = json.dumps(redacted)
    assert HF_TOKEN not in text
    assert WANDB_KEY not in text


def test_redacted_keeps_a_given_secret_reference():
    data = minimal_data()
    data["hf_token_secret"] = REFERENCES["hf_token"]
    request = parse_train_request(data)

    redacted = request.redacted()

    assert redacted["hf_token_secret"] == REFERENCES["hf_token"]


def test_validation_errors_never_echo_secret_values():
    data = request_with_secrets()
    data["hf_token_secret"] = REFERENCES["hf_token"]  # both: invalid
    data["training_config"]["hyperparameters"]["learning_rate"] = "x"

    with pytest.raises(InvalidRequestError) as caught:
        parse_train_request(data)

    shown = json.dumps(caught.value.to_dict()) + str(caught.value) + repr(caught.value.problems)
    assert HF_TOKEN not in shown
    assert WANDB_KEY not in shown


def test_overlong_token_is_rejected_without_echoing_it():
    data = seed_data()
    data["hf_token"] = "hf_" + "x" * 600

    with pytest.raises(InvalidRequestError) as caught:
        parse_train_request(data)

    assert caught.value.field == "hf_token"
    assert "x" * 50 not in json.dumps(caught.value.to_dict())


def test_train_request_is_the_model_parse_returns():
    assert isinstance(parse_train_request(seed_data()), TrainRequest)
