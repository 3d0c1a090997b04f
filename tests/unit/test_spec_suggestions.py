"""A misspelt field is refused with the field it was probably meant to be, here and in the 422."""

from __future__ import annotations

import json
from pathlib import Path

import functions_framework
import pytest

from tuning.errors import InvalidRequestError
from tuning.spec import parse_train_request

REPO = Path(__file__).resolve().parents[2]
SEED = json.loads((REPO / "tests" / "fixtures" / "seed_train_request.json").read_text())


def misspelt(section: str, wrong: str, right: str) -> dict[str, object]:
    request = json.loads(json.dumps(SEED))
    parent = request["training_config"][section] if section else request
    parent[wrong] = parent.pop(right, 1)
    return request


@pytest.mark.parametrize(
    ("section", "wrong", "right"),
    [
        ("hyperparameters", "learning_rat", "learning_rate"),
        ("export_config", "include_ggfu", "include_gguf"),
        ("", "jobname", "job_name"),
    ],
)
def test_an_unknown_field_suggests_the_closest_one(section: str, wrong: str, right: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        parse_train_request(misspelt(section, wrong, right))

    assert raised.value.message.endswith(f"unknown field; did you mean '{right}'?")


def test_a_field_like_none_gets_no_suggestion() -> None:
    request = json.loads(json.dumps(SEED))
    request["training_config"]["hyperparameters"]["zzzzzz"] = 1

    with pytest.raises(InvalidRequestError) as raised:
        parse_train_request(request)

    assert raised.value.message == "training_config.hyperparameters.zzzzzz: unknown field"


def test_the_api_422_carries_the_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "PROJECT_ID": "unit-project",
        "GCS_CONFIG_BUCKET_NAME": "unit-config",
        "GCS_DATA_BUCKET_NAME": "unit-data",
        "GCS_MODELS_BUCKET_NAME": "unit-models",
        "OWNER_SCOPING": "false",
    }.items():
        monkeypatch.setenv(name, value)
    # create_app sets these two for good; set here, monkeypatch takes them away afterwards.
    monkeypatch.setenv("FUNCTION_TARGET", "submit_training_job")
    monkeypatch.setenv("FUNCTION_SIGNATURE_TYPE", "http")
    source = REPO / "functions" / "submit" / "main.py"
    app = functions_framework.create_app("submit_training_job", str(source)).test_client()

    answer = app.post("/train", json=misspelt("hyperparameters", "learning_rat", "learning_rate"))

    error = answer.get_json()["error"]
    assert answer.status_code == 422
    assert error["field"] == "training_config.hyperparameters.learning_rat"
    assert error["message"].endswith("did you mean 'learning_rate'?")
