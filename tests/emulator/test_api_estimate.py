"""POST /train:estimate: the same body and refusals as POST /train, counts, and nothing made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.emulator.test_api_stack import ApiStack, caller_headers, seed_request
from tuning.dataset.tokens import TOKENIZER_FILES

ALICE = "alice@example.com"


@pytest.fixture(scope="module")
def tiny_model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    from trainer.tiny import build_tiny_gemma

    folder = build_tiny_gemma(tmp_path_factory.mktemp("tiny") / "gemma3", family="gemma3")
    names = [*TOKENIZER_FILES, "config.json"]
    return {name: (folder / name).read_bytes() for name in names if (folder / name).is_file()}


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str) -> ApiStack:
    return ApiStack.start(monkeypatch, tmp_path, unique, owner_scoping=True)


def estimate(stack: ApiStack, body: Any, caller: str | None = ALICE) -> Any:
    return stack.clients["submit"].post(
        "/train:estimate", json=body, headers=caller_headers(caller)
    )


def request_for(stack: ApiStack, files: dict[str, bytes], rows: int = 12) -> dict[str, Any]:
    model = f"gs://{stack.settings.models_bucket}/base_models/tiny/"
    for name, data in files.items():
        stack.services.storage.upload_bytes(model + name, data)
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"What colour is fox {i}?"},
                {"role": "assistant", "content": "Red."},
            ]
        }
        for i in range(rows)
    ]
    dataset = f"{stack.settings.layout.dataset_prefix('foxes')}train.jsonl"
    stack.services.storage.upload_bytes(
        dataset, "".join(json.dumps(r) + "\n" for r in lines).encode()
    )
    body = seed_request()
    body["processed_dataset_id"] = "foxes"
    config = body["training_config"]
    config["base_model_id"] = model
    config["hyperparameters"].update(batch_size=2, gradient_accumulation_steps=2, epochs=2)
    config["hyperparameters"]["max_seq_length"] = 256
    return body


def test_an_estimate_counts_rows_tokens_and_steps_and_creates_nothing(
    stack: ApiStack, tiny_model_files: dict[str, bytes]
) -> None:
    body = request_for(stack, tiny_model_files)
    before = stack.gcs_objects()

    answer = estimate(stack, body)

    assert answer.status_code == 200, answer.get_json()
    result = answer.get_json()
    validation = result["validation"]
    # The seed's eval_config evaluates without an eval split: 10% of the rows are held out.
    assert validation["eval"]["rows"] == 1 and "held out" in validation["eval"]["source"]
    assert validation["train"]["rows"] == 11 and validation["train"]["tokens"] > 11 * 10
    assert validation["train"]["truncated_rows"] == 0
    # 11 rows in micro-batches of 2 (6), two per step: 3 steps an epoch, 6 over two.
    assert (validation["steps_per_epoch"], validation["total_steps"]) == (3, 6)
    assert result["placement"]["tier"] == "default"
    assert result["estimate"]["tokens"] == 2 * validation["train"]["tokens"]
    (own,) = [tier for tier in result["estimate"]["tiers"] if tier["tier"] == "default"]
    assert own["estimated_seconds"] is not None and own["throughput_source"]  # a tiny model: ~0 s
    # Nothing was made: no job, no config, no secret (the body carries an hf_token value),
    # no message; the buckets hold what the test put there.
    assert stack.job_ids() == []
    assert stack.gcs_objects() == before
    assert stack.stored_secrets() == {}
    assert stack.pull(stack.settings.requests_topic, expected=0, timeout=2) == []
    assert body["hf_token"] not in answer.get_data(as_text=True)


def test_a_bad_row_is_a_422_naming_the_dataset_and_the_row(
    stack: ApiStack, tiny_model_files: dict[str, bytes]
) -> None:
    body = request_for(stack, tiny_model_files)
    bad = f"{stack.settings.layout.dataset_prefix('foxes')}train.jsonl"
    stack.services.storage.upload_bytes(bad, b'{"messages": [{"role": "user", "content": "hi"}]}\n')

    answer = estimate(stack, body)

    assert answer.status_code == 422
    error = answer.get_json()["error"]
    assert error["field"] == "processed_dataset_id"
    assert "row 0, field 'messages': no assistant message" in error["message"]


def test_a_missing_dataset_or_model_is_named_like_submit_would(
    stack: ApiStack, tiny_model_files: dict[str, bytes]
) -> None:
    body = request_for(stack, tiny_model_files)
    missing_dataset = {**body, "processed_dataset_id": "nothing_here"}
    answer = estimate(stack, missing_dataset)
    assert answer.status_code == 422
    assert answer.get_json()["error"]["field"] == "processed_dataset_id"
    assert "no dataset found" in answer.get_json()["error"]["message"]

    body["training_config"]["base_model_id"] = (
        f"gs://{stack.settings.models_bucket}/base_models/absent/"
    )
    answer = estimate(stack, body)
    assert answer.status_code == 422
    assert answer.get_json()["error"]["field"] == "training_config.base_model_id"


def test_it_refuses_what_the_caller_may_not_name_as_submit_does(
    stack: ApiStack, tiny_model_files: dict[str, bytes]
) -> None:
    body = request_for(stack, tiny_model_files)
    # Another job's outputs are never a base model, for an estimate as for a job.
    body["training_config"]["base_model_id"] = f"gs://{stack.settings.models_bucket}/adapters/x/"
    refused = estimate(stack, body)
    submitted = stack.submit(body, caller=ALICE)

    assert refused.status_code == submitted.status_code == 422
    assert refused.get_json()["error"] == submitted.get_json()["error"]

    body = request_for(stack, tiny_model_files)
    body["training_config"]["from_job"] = "training_someone_elses_job"
    assert estimate(stack, body).status_code == 404
