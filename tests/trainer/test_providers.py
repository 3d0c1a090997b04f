"""Provider `unsloth` where it cannot run: a user error at validation, before any download."""

from __future__ import annotations

from tests.trainer.harness import TrainerStack, base_request
from trainer.main import main
from trainer.unsloth import unsloth_installed
from tuning.events import EventType
from tuning.jobs import ErrorType


def test_unsloth_without_a_cuda_gpu_fails_before_the_dataset_is_read(stack: TrainerStack) -> None:
    import pytest
    import torch

    if torch.cuda.is_available() and unsloth_installed():
        pytest.skip("unsloth can run here (tests/trainer/test_gpu.py covers it)")
    request = base_request()
    # Neither the dataset nor the model exists: either, looked at first, would be the error.
    request["processed_dataset_id"] = "never-uploaded"
    request["training_config"]["base_model_id"] = f"gs://{stack.models_bucket}/base_models/none/"
    request["training_config"]["provider"] = "unsloth"
    job_id = stack.submit(request)

    code = main(settings=stack.settings(job_id), services=stack.services(job_id))

    events = stack.pull_events(job_id)
    assert code == 0
    assert [e.type for e in events] == [EventType.PREPARING, EventType.FAILED]
    error = events[-1].payload.error
    assert error.type is ErrorType.USER
    assert error.message.startswith(
        "provider 'unsloth' needs a CUDA GPU with unsloth installed; use provider 'huggingface'"
    )
