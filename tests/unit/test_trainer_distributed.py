"""The pieces of multi-process training that need no second process: where a process sits,
the FSDP arguments, the batch spread over processes, and the callbacks on one process."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from trainer.batching import plan_batching, spread_over_processes
from trainer.distributed import SINGLE, Cohort, Ranks, check_shardable, fsdp_arguments
from trainer.errors import UnsupportedError
from tuning.spec import parse_train_request


def test_ranks_come_from_torchruns_variables() -> None:
    assert Ranks.from_env({}) == SINGLE and not SINGLE.distributed and SINGLE.is_main
    ranks = Ranks.from_env({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"})

    assert (ranks.rank, ranks.local_rank, ranks.world_size) == (1, 1, 2)
    assert ranks.distributed and not ranks.is_main
    with pytest.raises(ValueError, match="outside WORLD_SIZE"):
        Ranks.from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_one_process_trains_without_fsdp() -> None:
    assert fsdp_arguments(SINGLE, gradient_checkpointing=True) == {}


@pytest.mark.parametrize("checkpointing", [True, False])
def test_several_processes_shard_with_fsdp2_and_its_own_activation_checkpointing(
    checkpointing: bool,
) -> None:
    arguments = fsdp_arguments(Ranks(0, 0, 8), gradient_checkpointing=checkpointing)

    assert arguments["fsdp"] == "full_shard auto_wrap"
    assert arguments["fsdp_config"]["version"] == 2
    assert arguments["fsdp_config"]["state_dict_type"] == "SHARDED_STATE_DICT"
    assert arguments["fsdp_config"]["activation_checkpointing"] is checkpointing
    assert arguments["gradient_checkpointing"] is False  # never both: it gathers twice


def test_the_arguments_are_ones_transformers_takes_for_fsdp2() -> None:
    from transformers import TrainingArguments

    arguments = fsdp_arguments(Ranks(0, 0, 2), gradient_checkpointing=True)
    args = TrainingArguments(output_dir="unused", use_cpu=True, report_to="none", **arguments)

    assert args.fsdp_plugin_args["fsdp_version"] == 2
    assert args.fsdp_plugin_args["state_dict_type"] == "SHARDED_STATE_DICT"
    assert args.fsdp_plugin_args["activation_checkpointing"] is True


def plan(batch_size: int, accumulation: int) -> Any:
    return plan_batching(
        packing=False,
        batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        attention="sdpa",
    )


@pytest.mark.parametrize(
    ("batch_size", "accumulation", "processes", "per_device", "steps"),
    [
        (4, 8, 8, 4, 1),  # accumulation divides: each GPU does one micro-batch of 4
        (8, 1, 2, 4, 1),  # the micro-batch divides
        (4, 6, 2, 4, 3),  # accumulation first, where both divide
        (4, 2, 1, 4, 2),  # one process: as asked
    ],
)
def test_the_jobs_batch_is_kept_when_spread_over_processes(
    batch_size: int, accumulation: int, processes: int, per_device: int, steps: int
) -> None:
    spread, warning = spread_over_processes(plan(batch_size, accumulation), processes)

    assert warning is None
    assert (spread.per_device_batch_size, spread.gradient_accumulation_steps) == (per_device, steps)
    assert per_device * steps * processes == batch_size * accumulation


def test_a_batch_that_does_not_divide_grows_and_says_so() -> None:
    spread, warning = spread_over_processes(plan(3, 1), 2)

    assert (spread.per_device_batch_size, spread.gradient_accumulation_steps) == (3, 1)
    assert warning is not None and "each step trains on 6 rows instead" in warning


def job_config(**changes: Any) -> Any:
    data = {
        "processed_dataset_id": "ds",
        "training_config": {"base_model_id": "google/gemma-3-1b-it", "method": "LoRA"} | changes,
    }
    return parse_train_request(data).training_config


def test_what_trains_on_one_gpu_is_refused_on_several_before_any_download() -> None:
    check_shardable(job_config(method="QLoRA"), SINGLE)  # one process: fine
    check_shardable(job_config(method="Full"), Ranks(0, 0, 2))

    with pytest.raises(UnsupportedError, match="method QLoRA cannot train on 2 GPUs"):
        check_shardable(job_config(method="QLoRA"), Ranks(0, 0, 2))


def test_a_single_process_cohort_sends_nothing() -> None:
    cohort = Cohort(SINGLE)

    assert not cohort.awaiting
    cohort.expect_followers()
    cohort.release()  # no process group exists: a broadcast here would raise
    assert not cohort.awaiting


class Recording:
    def __init__(self, name: str, calls: list[str], raises: BaseException | None = None) -> None:
        self.name, self.calls, self.raises = name, calls, raises

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.calls.append(self.name)
        control.should_save = True
        if self.raises is not None:
            raise self.raises
        return control


def test_shared_decisions_on_one_process_are_the_job_callbacks_in_order() -> None:
    from transformers import TrainerControl

    from trainer.consensus import SharedDecisions, find_callback, job_callbacks

    calls: list[str] = []
    first, second = Recording("first", calls), Recording("second", calls, RuntimeError("gone"))
    shared = SharedDecisions([first, second], SINGLE)
    control = TrainerControl()

    with pytest.raises(RuntimeError, match="gone"):
        shared.on_step_end(SimpleNamespace(), SimpleNamespace(), control)
    assert calls == ["first", "second"] and control.should_save
    assert job_callbacks([first], SINGLE) == [first]  # one process: not wrapped at all
    (wrapped,) = job_callbacks([first, second], Ranks(0, 0, 2))
    trainer = SimpleNamespace(callback_handler=SimpleNamespace(callbacks=[wrapped]))
    assert find_callback(trainer, Recording) is first
    assert SharedDecisions([first], Ranks(1, 1, 2)).callbacks == []  # followers run none


def test_followers_wait_for_rank_0_as_long_as_the_task_may_run():
    from datetime import timedelta

    from trainer.distributed import collective_timeout

    # NCCL's own 10 minutes would end a follower while rank 0 fetches a large model.
    assert collective_timeout({"TRAINER_TASK_TIMEOUT_SECONDS": "86400"}) == timedelta(days=1)
    assert collective_timeout({}) == timedelta(hours=1)
    assert collective_timeout({"TRAINER_TASK_TIMEOUT_SECONDS": "60"}) == timedelta(hours=1)
