"""A multi-GPU tier's job as two CPU processes under torchrun, FSDP2 over gloo (issue 16.4).

Each job runs as its launcher would start it (`torchrun --standalone --nproc_per_node=2 -m
trainer`) against the emulators, and is held against the same job run by one process with
the same global batch: the same loss at every step, one set of events, the export made
from the gathered weights, and a resume from FSDP's sharded checkpoint after a kill that
ends where the uninterrupted run ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.harness import TrainerStack, base_request, colour_rows, to_jsonl
from tests.trainer.test_exact_resume import adapter_weights, completed_of
from trainer.checkpoints import CheckpointStore
from trainer.main import main
from tuning.events import EventType, JobEvent, ProgressEvent, RestartedEvent

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 2
# Two processes sum their shares of a step's gradient in another order than one process
# does: the losses agree to float32 rounding, grown over a few optimizer steps.
LOSS_TOLERANCE = 2e-3


def torchrun(stack: TrainerStack, job_id: str, attempt: int = 0) -> subprocess.Popen[bytes]:
    """The trainer as a Vertex AI custom job starts it (tuning/launchers/vertex.py)."""
    environment = {**os.environ, **stack.environ(job_id, attempt), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={PROCESSES}", "-m", "trainer"]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def kill_with_workers(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL torchrun and its workers at once, as a machine that fails would stop them
    (torchrun puts its workers in process groups of their own)."""
    import psutil

    parent = psutil.Process(process.pid)
    for child in [*parent.children(recursive=True), parent]:
        child.send_signal(signal.SIGKILL)
    process.wait()


def finished(process: subprocess.Popen[bytes]) -> str:
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode == 0, output[-4000:]
    return output


def request_for(stack: TrainerStack, model: Path, method: str = "LoRA") -> dict[str, Any]:
    stack.upload_dataset("colours", {"train.jsonl": to_jsonl(colour_rows(32, seed=3))})
    request = base_request()
    request["processed_dataset_id"] = "colours"
    config = request["training_config"]
    config["base_model_id"] = stack.upload_model(model, "tiny-gemma3")
    config["method"] = method
    config["eval_config"] = None
    config["export_config"] = {"format": "merged", "destination": "gcs"}
    config["hyperparameters"].update(
        {
            "max_steps": 6,
            "batch_size": 4,  # one process: 4 rows per step; two: 2 rows each
            "gradient_accumulation_steps": 1,
            "logging_steps": 1,
            "save_steps": 3,
            "learning_rate": 1e-3,
        }
    )
    return request


def losses(events: list[JobEvent]) -> dict[int, float]:
    return {
        e.payload.step: e.payload.loss
        for e in events
        if isinstance(e, ProgressEvent) and e.payload.loss is not None
    }


def single_process_events(stack: TrainerStack, request: dict[str, Any]) -> list[JobEvent]:
    job_id = stack.submit(request)
    assert main(settings=stack.settings(job_id), services=stack.services(job_id)) == 0
    return stack.pull_events(job_id)


def assert_one_set_of_events(events: list[JobEvent]) -> None:
    """Rank 0 alone published: one sequence, each lifecycle event once."""
    assert [event.seq for event in events] == list(range(len(events)))
    types = [event.type for event in events]
    for once in (EventType.TRAINING, EventType.EXPORTING, EventType.COMPLETED):
        assert types.count(once) == 1, types
    steps = [e.payload.step for e in events if isinstance(e, ProgressEvent)]
    assert steps == sorted(set(steps))


def test_a_lora_job_on_two_processes_trains_as_one_process_does(
    stack: TrainerStack, tiny_gemma3: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from tests.trainer.reference import load_with_adapter

    request = request_for(stack, tiny_gemma3)
    alone = single_process_events(stack, request)
    job_id = stack.submit(request)

    finished(torchrun(stack, job_id))

    events = stack.pull_events(job_id)
    assert_one_set_of_events(events)
    sharded, single = losses(events), losses(alone)
    assert sorted(sharded) == sorted(single) == [1, 2, 3, 4, 5, 6]
    for step in single:
        assert sharded[step] == pytest.approx(single[step], abs=LOSS_TOLERANCE), step
    assert sharded[6] < sharded[1]  # it trained
    # The merged model is the base with the gathered adapter merged, as one process makes it.
    completed = completed_of(events)
    adapter = adapter_weights(stack, completed, tmp_path / "adapter")
    assert adapter and all(".lora_" in name for name in adapter)
    assert completed.payload.artifacts.merged_path is not None
    stack.storage.download_dir(completed.payload.artifacts.merged_path, tmp_path / "merged")
    merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
    reference = load_with_adapter(tiny_gemma3, tmp_path / "adapter").merge_and_unload()
    expected = {name: tensor for name, tensor in reference.state_dict().items()}
    for name, tensor in merged.items():
        assert name in expected, name
        difference = float((tensor.float() - expected[name].float()).abs().max())
        assert difference < 1e-2, f"{name} differs by {difference}"  # bfloat16 rounding


def test_a_full_fine_tuning_job_on_two_processes_trains_as_one_process_does(
    stack: TrainerStack, tiny_gemma3: Path, tmp_path: Path
) -> None:
    import json

    request = request_for(stack, tiny_gemma3, method="Full")
    request["training_config"]["export_config"] = {"format": "adapter"}
    request["training_config"]["hyperparameters"]["learning_rate"] = 1e-4
    alone = single_process_events(stack, request)
    job_id = stack.submit(request)

    finished(torchrun(stack, job_id))

    events = stack.pull_events(job_id)
    assert_one_set_of_events(events)
    sharded, single = losses(events), losses(alone)
    assert sorted(sharded) == sorted(single)
    for step in single:
        assert sharded[step] == pytest.approx(single[step], abs=LOSS_TOLERANCE), step
    completed = completed_of(events)
    assert completed.payload.artifacts.adapter_path is not None
    stack.storage.download_dir(completed.payload.artifacts.adapter_path, tmp_path / "full")
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"  # the whole model, in 16 bits as one process saves it
    from tests.trainer.reference import load_causal_lm

    model = load_causal_lm(tmp_path / "full")
    base = load_causal_lm(tiny_gemma3)
    changed = [
        name
        for name, tensor in model.state_dict().items()
        if float((tensor - base.state_dict()[name]).abs().max()) > 1e-4
    ]
    assert any(".layers." in name for name in changed)  # every rank's shard came home


def test_a_killed_two_process_job_resumes_from_its_sharded_checkpoint(
    stack: TrainerStack, tiny_gemma3: Path, tmp_path: Path
) -> None:
    request = request_for(stack, tiny_gemma3)
    request["training_config"]["export_config"] = {"format": "adapter"}
    whole = stack.submit(request)
    finished(torchrun(stack, whole))
    whole_completed = completed_of(stack.pull_events(whole))

    split = stack.submit(request)
    checkpoints = CheckpointStore(
        stack.storage, stack.settings(split).layout, split, ensure_job_active=lambda: None
    )
    process = torchrun(stack, split)
    deadline = time.monotonic() + 180
    while not checkpoints.complete_steps():
        assert process.poll() is None, process.communicate()[0].decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    kill_with_workers(process)
    latest = checkpoints.latest()
    assert latest is not None and latest.step == 3, "killed too late to test a resume"
    files = {uri.rsplit(latest.prefix, 1)[-1] for uri in stack.storage.list(latest.prefix)}
    assert any(name.startswith("pytorch_model_fsdp_0/") for name in files), files  # sharded
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= files

    finished(torchrun(stack, split, attempt=1))

    events = stack.pull_events(split)
    assert [e.payload.resumed_from_step for e in events if isinstance(e, RestartedEvent)] == [3]
    split_completed = completed_of(events)
    expected = adapter_weights(stack, whole_completed, tmp_path / "whole")
    resumed = adapter_weights(stack, split_completed, tmp_path / "split")
    assert expected.keys() == resumed.keys() and expected
    worst = max(float((expected[name] - resumed[name]).abs().max()) for name in expected)
    assert worst < 1e-5, f"resumed weights differ by {worst:.2e}"
