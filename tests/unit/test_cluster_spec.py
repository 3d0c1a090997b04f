"""Where a node of a multi-node job sits, from Vertex AI's CLUSTER_SPEC (trainer/cluster.py).

The examples have the shape of https://cloud.google.com/vertex-ai/docs/training/distributed-training
("Environment variables"): cluster pools of "host:port" entries, the replica's task (type,
index, trial), environment "cloud", and the job's spec, which the parser ignores.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from trainer.cluster import (
    ClusterSpecError,
    Rendezvous,
    node_command,
    nproc_per_node,
    rendezvous_from_cluster_spec,
    torchrun_command,
)
from tuning.launchers.vertex import trainer_command

PRIMARY = "cmle-training-workerpool0-3f2a9c1b7e-0:2222"
WORKERS = [f"cmle-training-workerpool1-3f2a9c1b7e-{index}:2222" for index in range(3)]


def cluster_spec(task_type: str, index: int, cluster: dict[str, Any] | None = None) -> str:
    spec = {
        "cluster": cluster if cluster is not None else {"workerpool0": [PRIMARY]},
        "environment": "cloud",
        "task": {"type": task_type, "index": index, "trial": ""},
        "job": {"workerPoolSpecs": [{"replicaCount": "1"}], "scheduling": {"timeout": "3600s"}},
    }
    return json.dumps(spec)


FOUR_NODES = {"workerpool0": [PRIMARY], "workerpool1": WORKERS}


def test_one_pool_is_one_node_and_the_launchers_own_command() -> None:
    rendezvous = rendezvous_from_cluster_spec(cluster_spec("workerpool0", 0), gpu_count=8)

    assert rendezvous == Rendezvous(
        nnodes=1,
        node_rank=0,
        master_addr="cmle-training-workerpool0-3f2a9c1b7e-0",
        master_port=2222,
        nproc_per_node=8,
        task_type="workerpool0",
        task_index=0,
    )
    assert rendezvous.is_primary and rendezvous.world_size == 8
    # A one-machine job starts exactly as the Vertex launcher starts it today.
    assert torchrun_command(rendezvous) == trainer_command(8)


@pytest.mark.parametrize(
    ("task_type", "index", "node_rank"),
    [("workerpool0", 0, 0), ("workerpool1", 0, 1), ("workerpool1", 1, 2), ("workerpool1", 2, 3)],
)
def test_a_primary_and_three_workers_are_four_nodes_meeting_at_the_primary(
    task_type: str, index: int, node_rank: int
) -> None:
    rendezvous = rendezvous_from_cluster_spec(
        cluster_spec(task_type, index, FOUR_NODES), gpu_count=8
    )

    assert (rendezvous.nnodes, rendezvous.node_rank) == (4, node_rank)
    assert rendezvous.is_primary is (node_rank == 0)
    assert (rendezvous.master_addr, rendezvous.master_port) == (PRIMARY[:-5], 2222)
    assert rendezvous.world_size == 32
    assert rendezvous.global_ranks == range(8 * node_rank, 8 * node_rank + 8)
    assert torchrun_command(rendezvous) == [
        "torchrun",
        "--nnodes=4",
        f"--node_rank={node_rank}",
        "--master_addr=cmle-training-workerpool0-3f2a9c1b7e-0",
        "--master_port=2222",
        "--nproc_per_node=8",
        "-m",
        "trainer",
    ]


def test_every_node_gets_the_same_command_but_its_rank() -> None:
    commands = [
        node_command({"CLUSTER_SPEC": cluster_spec(task_type, index, FOUR_NODES)}, gpu_count=8)
        for task_type, index in [("workerpool0", 0)] + [("workerpool1", i) for i in range(3)]
    ]

    ranks = [next(arg for arg in command if arg.startswith("--node_rank=")) for command in commands]
    assert ranks == [f"--node_rank={rank}" for rank in range(4)]
    stripped = [
        [arg for arg in command if not arg.startswith("--node_rank=")] for command in commands
    ]
    assert all(command == stripped[0] for command in stripped)


def test_without_cluster_spec_a_node_runs_alone() -> None:
    assert node_command({}, gpu_count=2) == trainer_command(2)
    assert node_command({"CLUSTER_SPEC": ""}, gpu_count=0) == trainer_command(0)


def test_an_empty_worker_pool_counts_no_node() -> None:
    spec = cluster_spec("workerpool0", 0, {"workerpool0": [PRIMARY], "workerpool1": []})

    assert rendezvous_from_cluster_spec(spec, gpu_count=8).nnodes == 1


def test_processes_follow_the_gpus_and_one_without() -> None:
    assert [nproc_per_node(count) for count in (0, 1, 8)] == [1, 1, 8]
    spec = cluster_spec("workerpool1", 1, FOUR_NODES)
    assert rendezvous_from_cluster_spec(spec, gpu_count=0).world_size == 4
    for bad in (-1, True, 2.0):
        with pytest.raises(ValueError, match="gpu_count"):
            nproc_per_node(bad)  # type: ignore[arg-type]


def test_an_ipv6_primary_keeps_its_address_without_brackets() -> None:
    spec = cluster_spec("workerpool0", 0, {"workerpool0": ["[fd00::1]:2222"]})

    assert rendezvous_from_cluster_spec(spec, gpu_count=1).master_addr == "fd00::1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"task": {"type": "workerpool0", "index": 0}}), "no cluster object"),
        (cluster_spec("workerpool0", 0, {"workerpool1": WORKERS}), "no primary replica"),
        (cluster_spec("workerpool0", 0, {"workerpool0": []}), "no primary replica"),
        (
            cluster_spec("workerpool0", 0, {"workerpool0": [PRIMARY, WORKERS[0]]}),
            "exactly one",
        ),
        (
            cluster_spec(
                "workerpool0", 0, {**FOUR_NODES, "workerpool2": ["cmle-training-rs-0:2222"]}
            ),
            "workerpool2",
        ),
        (cluster_spec("workerpool0", 0, {"chief": [PRIMARY]}), "names a pool 'chief'"),
        (cluster_spec("workerpool0", 0, {"workerpool0": PRIMARY}), "list of host:port"),
        (json.dumps({"cluster": FOUR_NODES}), "no task object"),
        (cluster_spec("workerpool1", 3, FOUR_NODES), "task.index 3 is outside workerpool1"),
        (cluster_spec("workerpool1", -1, FOUR_NODES), "task.index -1 is outside"),
        (cluster_spec("workerpool1", 0), "task.type 'workerpool1' is not a pool"),
        (cluster_spec("chief", 0, FOUR_NODES), "task.type 'chief' is not a pool"),
        (cluster_spec("workerpool0", 0, {"workerpool0": ["primary"]}), "not host:port"),
        (cluster_spec("workerpool0", 0, {"workerpool0": [":2222"]}), "not host:port"),
        (cluster_spec("workerpool0", 0, {"workerpool0": ["primary:http"]}), "not host:port"),
        (cluster_spec("workerpool0", 0, {"workerpool0": ["primary:70000"]}), "outside 1-65535"),
        (
            cluster_spec("workerpool0", 0, {"workerpool0": [PRIMARY], "workerpool1": ["w"]}),
            r"workerpool1\[0\] is 'w'",
        ),
    ],
)
def test_a_malformed_spec_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ClusterSpecError, match=message):
        rendezvous_from_cluster_spec(text, gpu_count=8)


@pytest.mark.parametrize("index", ["0", 0.0, True, None])
def test_the_task_index_must_be_an_integer(index: Any) -> None:
    spec = json.dumps({"cluster": FOUR_NODES, "task": {"type": "workerpool1", "index": index}})

    with pytest.raises(ClusterSpecError, match=r"task\.index must be an integer"):
        rendezvous_from_cluster_spec(spec, gpu_count=8)
