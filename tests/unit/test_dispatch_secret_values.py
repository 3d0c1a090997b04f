"""Which request fields carry a secret's value, and how training-requests refuses them."""

from __future__ import annotations

import json

import pytest

from tuning.dispatching import (
    SECRET_IN_MESSAGE,
    SECRET_VALUE_FIELDS,
    SecretInMessageError,
    parse_request_message,
    rejected_job_record,
)
from tuning.spec import JobReference, TrainRequest, parse_train_request
from tuning.tenancy import HF_TOKEN_SECRET_FIELD, USABLE_BY_ANNOTATION, WANDB_KEY_SECRET_FIELD

REQUEST = {
    "processed_dataset_id": "dataset_abc123",
    "training_config": {"base_model_id": "google/gemma-3-1b-it"},
}
VALUE = "hf_a-value-that-must-not-be-repeated"
WANDB = {"project": "p", "api_key": VALUE}


def test_every_secret_value_field_is_found_with_the_reference_that_replaces_it():
    # The fields tenancy checks as references are exactly the ones that replace values.
    assert SECRET_VALUE_FIELDS == {
        "hf_token": HF_TOKEN_SECRET_FIELD,
        "training_config.wandb_config.api_key": WANDB_KEY_SECRET_FIELD,
    }


def test_a_request_naming_its_secrets_by_reference_is_accepted():
    reference = "projects/p/secrets/team-token/versions/1"
    body = {
        **REQUEST,
        "hf_token_secret": reference,
        "training_config": {
            **REQUEST["training_config"],
            "wandb_config": {"project": "p", "api_key_secret": reference},
        },
    }

    request = parse_request_message(json.dumps(body).encode())

    assert isinstance(request, TrainRequest) and request.hf_token_secret == reference


@pytest.mark.parametrize(
    ("changes", "field", "reference"),
    [
        ({"hf_token": VALUE}, "hf_token", "hf_token_secret"),
        ({"hf_token": ""}, "hf_token", "hf_token_secret"),  # any value but null counts
        ({"hf_token": 12}, "hf_token", "hf_token_secret"),
        (
            {"training_config": {**REQUEST["training_config"], "wandb_config": WANDB}},
            "training_config.wandb_config.api_key",
            "training_config.wandb_config.api_key_secret",
        ),
        # Refused for the secret before anything else that is wrong with it.
        ({"hf_token": VALUE, "processed_dataset_id": "../x"}, "hf_token", "hf_token_secret"),
    ],
)
def test_a_published_secret_value_is_refused_naming_its_field_and_the_fix(
    changes, field, reference
):
    data = json.dumps({**REQUEST, **changes}).encode()

    with pytest.raises(SecretInMessageError) as raised:
        parse_request_message(data)

    error = raised.value
    assert error.field == field
    assert error.message.startswith(f"{field}: ")
    assert f"publish {reference}:" in error.message
    assert USABLE_BY_ANNOTATION in error.message
    assert VALUE not in error.message and "12" not in error.message


def test_both_secret_values_are_listed():
    body = {
        **REQUEST,
        "hf_token": VALUE,
        "training_config": {**REQUEST["training_config"], "wandb_config": WANDB},
    }

    with pytest.raises(SecretInMessageError) as raised:
        parse_request_message(json.dumps(body).encode())

    assert [problem["field"] for problem in raised.value.problems] == [
        "hf_token",
        "training_config.wandb_config.api_key",
    ]


def test_a_null_token_is_no_token():
    assert isinstance(
        parse_request_message(json.dumps({**REQUEST, "hf_token": None}).encode()), TrainRequest
    )


def test_post_train_still_takes_the_values():
    # Submit parses with parse_train_request and stores the values in Secret Manager.
    request = parse_train_request({**REQUEST, "hf_token": VALUE})

    assert request.hf_token is not None and request.hf_token.get_secret_value() == VALUE


def test_job_references_are_not_affected():
    assert parse_request_message(b'{"job_id": "j", "kind": "job_reference"}') == JobReference(
        job_id="j"
    )


def test_the_refused_job_belongs_to_the_owner_and_says_secret_in_message():
    error = SecretInMessageError("hf_token: publish hf_token_secret", field="hf_token")

    record = rejected_job_record(
        {**REQUEST, "hf_token": VALUE}, error, message_id="9", owner="svc@example.com"
    )

    assert record.owner == "svc@example.com"
    assert record.error is not None and record.error.code == SECRET_IN_MESSAGE
    assert VALUE not in record.model_dump_json()
