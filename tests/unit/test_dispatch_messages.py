"""What dispatch accepts on training-requests, and the record a refused request leaves."""

from __future__ import annotations

import json

import pytest

from tuning.dispatching import parse_request_message, rejected_job_record
from tuning.errors import InvalidRequestError
from tuning.jobs import ErrorType, JobStatus, new_job_id, stable_suffix
from tuning.spec import JobReference, TrainRequest

REQUEST = {
    "processed_dataset_id": "dataset_abc123",
    "training_config": {"base_model_id": "google/gemma-3-1b-it"},
}


def test_a_job_reference_and_a_full_request_are_told_apart():
    reference = parse_request_message(b'{"job_id": "job-1", "kind": "job_reference"}')
    request = parse_request_message(json.dumps(REQUEST).encode())

    assert reference == JobReference(job_id="job-1")
    assert isinstance(request, TrainRequest)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"\xff not json", None),
        (b'{"job_id": "../other", "kind": "job_reference"}', "job_id"),
        (b'{"job_id": "job-1", "kind": "job_reference", "extra": 1}', "extra"),
        (json.dumps({**REQUEST, "processed_dataset_id": "a/b"}).encode(), "processed_dataset_id"),
        (b"[1, 2]", None),
    ],
)
def test_messages_that_can_never_succeed_are_invalid(data, field):
    with pytest.raises(InvalidRequestError) as raised:
        parse_request_message(data)

    assert raised.value.field == field


def test_a_refused_request_becomes_a_failed_job_that_says_why():
    error = InvalidRequestError("training_config.method: bad", field="training_config.method")

    record = rejected_job_record({**REQUEST, "job_name": "nightly"}, error, message_id="42")

    assert record.job_id == new_job_id(
        "dataset_abc123", "google/gemma-3-1b-it", suffix=stable_suffix("42")
    )
    assert record.status is JobStatus.FAILED
    assert record.job_name == "nightly"
    assert record.error is not None and record.error.type is ErrorType.USER
    assert record.error.message == "training_config.method: bad"
    assert record.finished_at is not None


def test_a_refused_request_never_stores_ids_that_could_reach_other_paths():
    hostile = {"processed_dataset_id": "../../x", "training_config": {"base_model_id": "a/../b"}}

    record = rejected_job_record(hostile, InvalidRequestError("bad"), message_id="7")

    assert record.processed_dataset_id == ""
    assert record.base_model_id == ""
    assert record.job_id.startswith("training_invalid_request_")
