"""`tuning chat`: a completed demo job's model answers in the terminal, through the CLI only.

The safetensors path always; the GGUF path where llama.cpp's CLI is built (`make llama-cpp`,
which CI runs before the suite).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import LocalStack
from tuning.llama_cpp_cache import LLAMA_CLI_ENV, find_cli
from tuning.local.demo import demo_request

QUESTION = "Tell me the colour of the cat."


def gguf_available() -> bool:
    from trainer.llama_cpp import LlamaCppMissingError, LlamaCppTools

    try:
        LlamaCppTools.locate()
    except LlamaCppMissingError:
        return False
    return True


@pytest.fixture(scope="module")
def chat_job(local_stack: LocalStack) -> dict[str, Any]:
    request = demo_request(
        local_stack.exports["TUNING_DEMO_MODEL"], local_stack.exports["TUNING_DEMO_DATASET"]
    )
    config = request["training_config"]
    config["hyperparameters"].update({"max_steps": 6, "save_strategy": "no"})
    config["eval_config"] = {"eval_strategy": "no", "samples": 0}
    if gguf_available():  # the demo model has llama.cpp's layout, so its GGUF exports
        config["export_config"].update({"include_gguf": True, "gguf_quantization": "f16"})
    job_id = local_stack.submit(request, "chat")
    job = local_stack.wait_for(job_id, lambda job: job["status"] in {"completed", "failed"})
    assert job["status"] == "completed", job.get("error")
    return job


def test_chat_prompt_answers_once_from_the_downloaded_model(
    local_stack: LocalStack, chat_job: dict[str, Any], tmp_path: Path
) -> None:
    job_id = chat_job["job_id"]
    command = ("chat", job_id, "--prompt", QUESTION, "--max-new-tokens", "8", "--dir")

    first = local_stack.cli(*command, str(tmp_path / "model"), timeout=300)
    again = local_stack.cli(*command, str(tmp_path / "model"), timeout=300)

    assert first.stdout.strip() and len(first.stdout.strip().splitlines()) == 1, first
    assert "downloading" in first.stderr
    assert any(path.suffix == ".safetensors" for path in (tmp_path / "model").iterdir())
    # Greedy: the same answer again, from the copy already downloaded.
    assert again.stdout == first.stdout and "downloading" not in again.stderr


def test_chat_on_a_gguf_file_runs_llama_cpp(
    local_stack: LocalStack, chat_job: dict[str, Any], tmp_path: Path
) -> None:
    if not chat_job["artifacts"]["gguf_files"] or find_cli() is None:
        pytest.skip("llama.cpp's CLI is not built (make llama-cpp)")
    result = local_stack.cli(
        "chat", chat_job["job_id"], "--gguf", "f16", "--prompt", QUESTION,
        "--max-new-tokens", "8", "--dir", str(tmp_path / "gguf"), timeout=300,
    )  # fmt: skip

    assert result.stdout.strip(), result
    assert [path.name for path in (tmp_path / "gguf").glob("*.gguf")] == ["model-f16.gguf"]


def test_chat_on_gguf_without_llama_cli_names_make_llama_cpp(
    local_stack: LocalStack, chat_job: dict[str, Any], tmp_path: Path
) -> None:
    if not chat_job["artifacts"]["gguf_files"]:
        pytest.skip("no GGUF exported: llama.cpp's sources are not fetched")
    local_stack.environ[LLAMA_CLI_ENV] = str(tmp_path / "no-llama-cli")
    try:
        result = local_stack.cli("chat", chat_job["job_id"], "--gguf", "--prompt", "?", check=False)
    finally:
        del local_stack.environ[LLAMA_CLI_ENV]

    assert result.returncode == 1 and "make llama-cpp" in result.stderr
