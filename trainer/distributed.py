"""Training on several GPUs of one machine: one trainer process per GPU under `torchrun`.

A multi-GPU tier (Vertex AI, tuning/launchers/vertex.py) starts the trainer as
`torchrun --standalone --nproc_per_node=<GPUs> -m trainer`; torchrun gives each process its
RANK, LOCAL_RANK and WORLD_SIZE (https://pytorch.org/docs/stable/elastic/run.html,
"Environment Variables"). The model is sharded with FSDP2, one unit per decoder layer
(transformers' `_no_split_modules`), through the Trainer's `fsdp` arguments.

Rank 0, the main process, is the job as one process would run it: it reads the job, checks
and downloads what training needs, publishes every event, talks to W&B, uploads checkpoints
and exports. The other processes follow it (`trainer.follower`): rank 0 hands them what it
prepared (`Cohort.tell`), every decision a callback takes during training (checkpoint now,
stop, hand off, the job is gone) is rank 0's and reaches them all at the same step
(`trainer.consensus`), and at the end they take part in gathering the full weights for the
export. All processes share the machine's disk, so the base model and the checkpoint are
downloaded once, by rank 0, into the folder they all read.

Checkpoints are FSDP's sharded state (one file per rank of the weights and of the optimizer,
`pytorch_model_fsdp_0/` and `optimizer_0/`, torch.distributed.checkpoint's format): a retried
job resumes them on the same number of GPUs, which is what its tier gives it. The format
itself can be read back on another count, but the per-rank RNG states and the data order
cannot, so such a resume would not continue the uninterrupted run exactly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from trainer.errors import UnsupportedError
from tuning.placement import single_gpu_only
from tuning.spec import TrainingConfig

logger = logging.getLogger(__name__)

MAIN_RANK = 0
DEFAULT_COLLECTIVE_TIMEOUT_SECONDS = 3600  # at least an hour, as Cloud Run's default task timeout


@dataclass(frozen=True)
class Ranks:
    """Where this process sits among the job's training processes."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ranks:
        env = os.environ if environ is None else environ
        world_size = int(env.get("WORLD_SIZE", "1"))
        if world_size < 1:
            raise ValueError(f"WORLD_SIZE must be 1 or more, not {world_size}")
        rank = int(env.get("RANK", "0"))
        if not 0 <= rank < world_size:
            raise ValueError(f"RANK {rank} is outside WORLD_SIZE {world_size}")
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
        return cls(rank=rank, local_rank=local_rank, world_size=world_size)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == MAIN_RANK


SINGLE = Ranks()


def start_process_group(ranks: Ranks) -> None:
    """Join the job's other processes: NCCL between GPUs, gloo between CPU processes (the
    local stack and the tests run a multi-GPU tier that way). The Trainer finds the group
    initialised and uses it. torchrun's rendezvous variables (MASTER_ADDR, MASTER_PORT) say
    where to meet."""
    if not ranks.distributed:
        return  # one process: no group, and no torch import before the settings are read
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    timeout = collective_timeout()
    if torch.cuda.is_available():
        torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group(
            "nccl", device_id=torch.device("cuda", ranks.local_rank), timeout=timeout
        )
    else:
        dist.init_process_group("gloo", timeout=timeout)
        allow_fsdp_on_cpu()
    logger.info("process %d of %d joined the job's process group", ranks.rank, ranks.world_size)


def collective_timeout(environ: Mapping[str, str] | None = None) -> timedelta:
    """How long a process waits in one collective call before it gives up.

    NCCL's default is 10 minutes (pytorch/pytorch#110947), but the followers wait in one
    broadcast while rank 0 fetches the base model and checks the data, and at each
    checkpoint while rank 0 uploads it: tens of minutes for a 27B model. A peer that dies is
    not what this bounds (torchrun stops the others when one process exits), so the wait
    may last as long as the task may: its timeout, which Vertex's scheduling.timeout also
    enforces (tuning/launchers/vertex.py)."""
    env = os.environ if environ is None else environ
    seconds = int(env.get("TRAINER_TASK_TIMEOUT_SECONDS") or DEFAULT_COLLECTIVE_TIMEOUT_SECONDS)
    return timedelta(seconds=max(seconds, DEFAULT_COLLECTIVE_TIMEOUT_SECONDS))


def allow_fsdp_on_cpu() -> None:
    """Let accelerate shard with FSDP across CPU processes, as it does across GPUs.

    accelerate (1.15) turns an FSDP plugin on only for GPU-like distributed types: on CPU
    processes it drops the plugin and the Trainer silently trains with DDP, whole copies of
    the model. FSDP2 itself runs on CPU with gloo (fully_shard, DTensor, sharded state dicts),
    so the two-process CPU runs of the tests and the local stack take the path a multi-GPU
    machine takes. Only called where there is no GPU.
    """
    import accelerate.state
    from accelerate.utils import DistributedType

    state_class: Any = accelerate.state.AcceleratorState
    if getattr(state_class, "_fsdp_on_cpu", False):
        return
    original = state_class.__init__

    def init(self: Any, *args: Any, fsdp_plugin: Any = None, **kwargs: Any) -> None:
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    state_class.__init__ = init
    state_class._fsdp_on_cpu = True


def fsdp_arguments(ranks: Ranks, *, gradient_checkpointing: bool) -> dict[str, Any]:
    """TrainingArguments fields that shard the model over the processes (none on one).

    FSDP2 (transformers' fsdp_config version 2) wraps each decoder layer as its own unit
    (the model's `_no_split_modules`, e.g. Gemma3DecoderLayer) and frees a layer's gathered
    weights after its forward pass. Activation checkpointing is FSDP's own: the Trainer's
    `gradient_checkpointing` beside FSDP would gather every layer's weights twice
    (transformers warns of it). Checkpoints are sharded: each rank writes its part, and no
    process ever holds the whole optimizer state.
    """
    if not ranks.distributed:
        return {}
    return {
        "fsdp": "full_shard auto_wrap",
        "fsdp_config": {
            "version": 2,
            "reshard_after_forward": True,
            "state_dict_type": "SHARDED_STATE_DICT",
            "activation_checkpointing": gradient_checkpointing,
        },
        "gradient_checkpointing": False,
    }


def full_state_dict(model: Any) -> dict[str, Any]:
    """The whole model's weights, gathered from every rank onto rank 0's CPU (rank 0 gets
    them all, the others an empty dict). Every process must call it: it is collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


class Cohort:
    """Rank 0's line to the processes that follow it, outside the training loop.

    The followers wait at two points: for what rank 0 prepared before training, and, after
    training, for whether to gather the weights for the export. `awaiting` says whether
    they wait now; whatever way rank 0's job ends, `release` lets waiting followers go, so
    that none is left blocked in a collective call once rank 0 has exited.
    """

    def __init__(self, ranks: Ranks) -> None:
        self.ranks = ranks
        self.awaiting = ranks.distributed

    def tell(self, message: Any) -> None:
        """Rank 0: send `message` (any picklable value) to every follower."""
        if self.ranks.distributed:
            broadcast(message)
        self.awaiting = False

    def hear(self) -> Any:
        """A follower: wait for rank 0's next message."""
        return broadcast(None)

    def expect_followers(self) -> None:
        """Rank 0: the followers are waiting again (training ended on every rank)."""
        self.awaiting = self.ranks.distributed

    def release(self) -> None:
        """Rank 0: stop followers that still wait, whatever ended the job. Never raises: it
        runs while the job's own outcome is being returned (or raised)."""
        if not self.awaiting:
            return
        try:
            self.tell(STOP)
        except Exception:  # a follower died: torchrun stops the rest
            logger.exception("could not tell the other training processes to stop")


STOP = "stop"  # rank 0's message when the job ends without the followers
GATHER = "gather"  # rank 0's message when the export gathers the trained weights


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank (a pickled object over the process group)."""
    import torch.distributed as dist

    holder = [value]
    dist.broadcast_object_list(holder, src=MAIN_RANK)
    return holder[0]


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def check_shardable(config: TrainingConfig, ranks: Ranks) -> None:
    """Refuse, before any download, what this build does not train over several processes
    (submit refuses it already: tuning/placement.py keeps such jobs off multi-GPU tiers)."""
    reasons = single_gpu_only(config) if ranks.distributed else []
    if reasons:
        raise UnsupportedError(
            f"{' and '.join(reasons)} cannot train on {ranks.world_size} GPUs in this trainer "
            "build: choose a one-GPU tier (training_config.compute.tier), or LoRA or Full"
        )
