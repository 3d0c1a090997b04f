"""GGUF from a LoRA job end to end: merged locally, converted, verified, uploaded to GCS.

trainer/gguf.py's own tests cover the quantizations (q4_k_m included) on a model whose shapes
allow K-quants; here the pipeline's wiring: files in gguf_models/{job}/, gguf_files on the
completed event, and a missing llama.cpp reported as a system error before any training.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.trainer.harness import (
    RecordingHubUploader,
    TrainerStack,
    base_request,
    colour_rows,
    to_jsonl,
)
from trainer.llama_cpp import LLAMA_CPP_DIR_ENV
from trainer.main import main
from tuning.events import CompletedEvent, EventType
from tuning.jobs import ErrorType

# The first run on a fresh machine fetches the pinned llama.cpp sources (about 30 s).
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def llama_cpp() -> None:
    """The converter from the pinned sources: reused from the cache, fetched on first use."""
    if not os.environ.get(LLAMA_CPP_DIR_ENV):  # the trainer image brings its own
        from tools.llama_cpp import fetch

        fetch()


def gguf_request(stack: TrainerStack, model_uri: str, quantization: object) -> dict[str, object]:
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl(colour_rows(16, seed=4))})
    request = base_request()
    request["processed_dataset_id"] = "colours"
    config = request["training_config"]
    config["base_model_id"] = model_uri
    config["hyperparameters"].update({"max_steps": 3, "save_strategy": "no", "logging_steps": 1})
    config["eval_config"] = None
    config["export_config"] = {
        "format": "adapter",
        "include_gguf": True,
        "gguf_quantization": quantization,
    }
    return request


def test_lora_job_exports_a_verified_f16_gguf_to_gcs(
    stack: TrainerStack, tiny_gemma3_gguf: Path, llama_cpp: None, tmp_path: Path
) -> None:
    from trainer.gguf import read_gguf

    request = gguf_request(stack, stack.upload_model(tiny_gemma3_gguf, "tiny-gguf"), "f16")
    job_id = stack.submit(request)

    code = main(settings=stack.settings(job_id), services=stack.services(job_id))

    events = stack.pull_events(job_id)
    assert code == 0 and isinstance(events[-1], CompletedEvent), events[-1]
    artifacts = events[-1].payload.artifacts
    expected = f"gs://{stack.models_bucket}/gguf_models/{job_id}/model-f16.gguf"
    assert artifacts.gguf_files == {"f16": expected}
    assert artifacts.gguf_path == expected
    assert artifacts.merged_path is None  # merged for the conversion only, not uploaded
    assert stack.storage.list(f"gs://{stack.models_bucket}/gguf_models/{job_id}/") == [expected]
    exporting = [e for e in events if e.type is EventType.EXPORTING]
    assert exporting[0].payload.formats == ["adapter", "gguf-f16"]
    local = tmp_path / "model-f16.gguf"
    local.write_bytes(stack.storage.download_bytes(expected))
    contents = read_gguf(local)
    assert contents.metadata["general.architecture"] == "gemma3"
    assert "<end_of_turn>" in contents.tokens


def test_missing_llama_cpp_is_a_system_error_before_training(
    stack: TrainerStack, tiny_gemma3_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LLAMA_CPP_DIR_ENV, str(tmp_path / "no-llama-cpp"))
    request = gguf_request(stack, stack.upload_model(tiny_gemma3_gguf, "tiny-gguf"), ["q8_0"])
    job_id = stack.submit(request)

    code = main(settings=stack.settings(job_id), services=stack.services(job_id))

    events = stack.pull_events(job_id)
    assert code == 0
    assert [e.type for e in events] == [EventType.PREPARING, EventType.FAILED]
    error = events[-1].payload.error
    assert (error.type, error.code) == (ErrorType.SYSTEM, "llama_cpp_missing")
    assert LLAMA_CPP_DIR_ENV in error.message


def test_a_model_llama_cpp_would_misread_is_refused_before_training(
    stack: TrainerStack, tiny_gemma3: Path, llama_cpp: None
) -> None:
    # The default tiny Gemma 3 has a global second layer; llama.cpp makes every sixth global.
    request = gguf_request(stack, stack.upload_model(tiny_gemma3, "tiny"), "f16")
    job_id = stack.submit(request)

    code = main(settings=stack.settings(job_id), services=stack.services(job_id))

    events = stack.pull_events(job_id)
    assert code == 0 and events[-1].type is EventType.FAILED
    assert EventType.TRAINING not in [e.type for e in events]
    error = events[-1].payload.error
    # The request is the caller's to change (issue 19): a user error that names the fix.
    assert error.type is ErrorType.USER and error.code == "gguf_incompatible_model"
    assert "layer_types" in error.message and "include_gguf to false" in error.message


def test_a_hub_destination_gets_the_gguf_files_beside_the_weights(
    stack: TrainerStack, tiny_gemma3_gguf: Path, llama_cpp: None
) -> None:
    request = gguf_request(stack, stack.upload_model(tiny_gemma3_gguf, "tiny-gguf"), "f16")
    request["training_config"]["export_config"].update(  # type: ignore[union-attr]
        {"destination": "hfhub", "hf_repo_id": "someone/tiny-colours-gguf"}
    )
    request["hf_token"] = "hf-token-for-the-gguf-hub-test"
    job_id = stack.submit(request)
    hub = RecordingHubUploader()

    code = main(settings=stack.settings(job_id), services=stack.services(job_id), hub_uploader=hub)

    events = stack.pull_events(job_id)
    assert code == 0 and isinstance(events[-1], CompletedEvent), events[-1]
    (published,) = hub.calls
    assert published["repo_id"] == "someone/tiny-colours-gguf"
    assert "model-f16.gguf" in published["files"]
    assert "adapter_model.safetensors" in published["files"]
    # GCS keeps its own copy where the download route looks for it.
    assert events[-1].payload.artifacts.gguf_files == {
        "f16": f"gs://{stack.models_bucket}/gguf_models/{job_id}/model-f16.gguf"
    }
