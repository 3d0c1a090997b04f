"""Several machines, one job: where this node sits, from Vertex AI's `CLUSTER_SPEC`.

Designed, not wired in (docs/architecture.md, "Multi-node"): nothing starts the trainer this
way yet. A Vertex AI custom job with more than one worker pool sets `CLUSTER_SPEC` in every
replica's container (https://cloud.google.com/vertex-ai/docs/training/distributed-training,
"Environment variables"; the same cluster under TensorFlow's task names is in `TF_CONFIG`,
which is not read here). It is JSON, e.g. on the first replica of the second pool:

    {"cluster": {"workerpool0": ["cmle-training-workerpool0-ab-0:2222"],
                 "workerpool1": ["cmle-training-workerpool1-ab-0:2222",
                                 "cmle-training-workerpool1-ab-1:2222"]},
     "environment": "cloud",
     "task": {"type": "workerpool1", "index": 0, "trial": ""},
     "job": {...the CustomJobSpec...}}

`workerPoolSpecs[0]` is the primary, with exactly one replica; `workerPoolSpecs[1]` holds the
other workers; pools 2 and 3 are parameter servers (or Reduction Server) and evaluators (same
page, "Configure a distributed training job"). Here every node is the same machine type, and
torchrun's nodes are the replicas of pools 0 and 1: the primary is node 0, replica i of
workerpool1 is node 1 + i, and the rendezvous is at the primary's "host:port". Pools 2 and 3
are refused: nothing in this design runs there.

    rendezvous = rendezvous_from_cluster_spec(os.environ["CLUSTER_SPEC"], gpu_count=8)
    os.execvp("torchrun", torchrun_command(rendezvous))

Torch-free, so it can run before anything heavy is imported (and in unit tests).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PRIMARY_POOL = "workerpool0"
WORKER_POOL = "workerpool1"
_POOL_NAME = re.compile(r"^workerpool(\d+)$")
MAX_PORT = 65535


class ClusterSpecError(ValueError):
    """CLUSTER_SPEC does not describe a cluster this trainer can rendezvous in."""


@dataclass(frozen=True)
class Rendezvous:
    """What torchrun needs on one node of a multi-node job."""

    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    nproc_per_node: int
    task_type: str = PRIMARY_POOL
    task_index: int = 0

    @property
    def is_primary(self) -> bool:
        """The node whose local rank 0 is global rank 0: the job's publisher."""
        return self.node_rank == 0

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    @property
    def global_ranks(self) -> range:
        """The global ranks of this node's processes (torchrun numbers them node by node)."""
        first = self.node_rank * self.nproc_per_node
        return range(first, first + self.nproc_per_node)


def nproc_per_node(gpu_count: int) -> int:
    """One process per GPU; one process on a machine without GPUs (gloo, as the tests run)."""
    if isinstance(gpu_count, bool) or not isinstance(gpu_count, int) or gpu_count < 0:
        raise ValueError(f"gpu_count must be a count of GPUs (0 or more), not {gpu_count!r}")
    return max(gpu_count, 1)


def rendezvous_from_cluster_spec(text: str, *, gpu_count: int) -> Rendezvous:
    """This node's place in the job described by `text` (CLUSTER_SPEC); ClusterSpecError
    saying what is wrong when it does not describe one primary and its workers."""
    processes = nproc_per_node(gpu_count)
    try:
        spec = json.loads(text)
    except (TypeError, json.JSONDecodeError) as error:
        raise ClusterSpecError(f"CLUSTER_SPEC is not JSON: {error}") from None
    if not isinstance(spec, Mapping):
        raise ClusterSpecError("CLUSTER_SPEC must be a JSON object with cluster and task")
    pools = _pools(spec.get("cluster"))
    task_type, task_index = _task(spec.get("task"), pools)
    primary = pools[PRIMARY_POOL]
    workers = pools.get(WORKER_POOL, [])
    master_addr, master_port = _address(primary[0], f"cluster.{PRIMARY_POOL}[0]")
    for index, entry in enumerate(workers):
        _address(entry, f"cluster.{WORKER_POOL}[{index}]")
    node_rank = 0 if task_type == PRIMARY_POOL else 1 + task_index
    return Rendezvous(
        nnodes=1 + len(workers),
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
        nproc_per_node=processes,
        task_type=task_type,
        task_index=task_index,
    )


def _pools(cluster: Any) -> dict[str, list[str]]:
    if not isinstance(cluster, Mapping):
        raise ClusterSpecError("CLUSTER_SPEC has no cluster object (its worker pools)")
    pools: dict[str, list[str]] = {}
    for name, entries in cluster.items():
        if not isinstance(name, str) or not _POOL_NAME.match(name):
            raise ClusterSpecError(
                f"CLUSTER_SPEC cluster names a pool {name!r}: Vertex AI names them "
                "workerpool0, workerpool1..."
            )
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise ClusterSpecError(f"CLUSTER_SPEC cluster.{name} must be a list of host:port")
        if entries:  # a pool left empty in the job ("skipped by providing an empty value")
            pools[name] = list(entries)
    if PRIMARY_POOL not in pools:
        raise ClusterSpecError(
            f"CLUSTER_SPEC has no primary replica ({PRIMARY_POOL}): the job's first worker "
            "pool must have one replica"
        )
    if len(pools[PRIMARY_POOL]) != 1:
        raise ClusterSpecError(
            f"CLUSTER_SPEC lists {len(pools[PRIMARY_POOL])} replicas in {PRIMARY_POOL}: the "
            "primary pool has exactly one (its replicaCount is 1); workers go in workerpool1"
        )
    others = sorted(set(pools) - {PRIMARY_POOL, WORKER_POOL})
    if others:
        raise ClusterSpecError(
            f"CLUSTER_SPEC has pools {', '.join(others)}: workerpool2 (parameter servers, "
            "Reduction Server) and workerpool3 (evaluators) are not training nodes of this "
            "trainer; a job uses workerpool0 and workerpool1 only"
        )
    return pools


def _task(task: Any, pools: Mapping[str, list[str]]) -> tuple[str, int]:
    if not isinstance(task, Mapping):
        raise ClusterSpecError("CLUSTER_SPEC has no task object (this replica's type and index)")
    task_type, index = task.get("type"), task.get("index")
    if not isinstance(task_type, str) or task_type not in pools:
        known = ", ".join(sorted(pools))
        raise ClusterSpecError(
            f"CLUSTER_SPEC task.type {task_type!r} is not a pool of the cluster ({known})"
        )
    if isinstance(index, bool) or not isinstance(index, int):
        raise ClusterSpecError(f"CLUSTER_SPEC task.index must be an integer, not {index!r}")
    replicas = len(pools[task_type])
    if not 0 <= index < replicas:
        raise ClusterSpecError(
            f"CLUSTER_SPEC task.index {index} is outside {task_type}, which has "
            f"{replicas} replica{'s' if replicas != 1 else ''}"
        )
    return task_type, index


def _address(entry: str, where: str) -> tuple[str, int]:
    """("host", port) from "host:port" (an IPv6 host in brackets: "[::1]:2222")."""
    host, separator, port_text = entry.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not separator or not host or not port_text.isdigit():
        raise ClusterSpecError(f"CLUSTER_SPEC {where} is {entry!r}, not host:port")
    port = int(port_text)
    if not 0 < port <= MAX_PORT:
        raise ClusterSpecError(f"CLUSTER_SPEC {where} has port {port}, outside 1-{MAX_PORT}")
    return host, port


def torchrun_command(rendezvous: Rendezvous, module: str = "trainer") -> list[str]:
    """torchrun's command line on this node: the same on every node but for --node_rank.

    One node is the single-machine command the Vertex launcher uses today
    (tuning/launchers/vertex.py `trainer_command`: `--standalone`, rendezvous on the machine
    itself). Several meet at the primary's address: torchrun's default `static` rendezvous
    with --nnodes, --node_rank, --master_addr and --master_port, the arguments it keeps from
    torch.distributed.launch (https://pytorch.org/docs/stable/elastic/run.html, "Transitioning
    from torch.distributed.launch to torchrun"); node 0 hosts the store the others connect to,
    and each waits there for the rest, which Vertex AI starts in parallel, as each machine
    becomes available (https://cloud.google.com/vertex-ai/docs/training/understanding-training-service).
    """
    processes = f"--nproc_per_node={rendezvous.nproc_per_node}"
    if rendezvous.nnodes == 1:
        return ["torchrun", "--standalone", processes, "-m", module]
    return [
        "torchrun",
        f"--nnodes={rendezvous.nnodes}",
        f"--node_rank={rendezvous.node_rank}",
        f"--master_addr={rendezvous.master_addr}",
        f"--master_port={rendezvous.master_port}",
        processes,
        "-m",
        module,
    ]


def node_command(environ: Mapping[str, str], *, gpu_count: int) -> list[str]:
    """The command an entry script would exec on this replica: from CLUSTER_SPEC when Vertex
    set one, else the single-machine command (a one-pool job, or any other engine)."""
    text = environ.get("CLUSTER_SPEC")
    if not text:
        single = Rendezvous(1, 0, "localhost", 0, nproc_per_node(gpu_count))
        return torchrun_command(single)
    return torchrun_command(rendezvous_from_cluster_spec(text, gpu_count=gpu_count))
