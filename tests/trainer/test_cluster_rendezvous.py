"""Two "nodes" on this machine meet with the torchrun commands trainer/cluster.py builds from
their CLUSTER_SPECs: the design of docs/architecture.md ("Multi-node") run as far as a CPU
allows (one process per node, gloo, the primary's address on localhost)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from trainer.cluster import rendezvous_from_cluster_spec, torchrun_command

# What each training process reports: torchrun's variables and a collective over all nodes.
PROBE = """
import json, os, sys
import torch.distributed as dist

dist.init_process_group("gloo")
mine = {name: int(os.environ[name]) for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK")}
everyone = [None] * dist.get_world_size()
dist.all_gather_object(everyone, mine)
if dist.get_rank() == 0:
    with open(os.environ["PROBE_OUT"], "w") as out:
        json.dump(everyone, out)
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_two_nodes_rendezvous_at_the_primary_from_their_cluster_specs(tmp_path: Path) -> None:
    (tmp_path / "cluster_probe.py").write_text(PROBE)
    port = free_port()
    cluster = {"workerpool0": [f"127.0.0.1:{port}"], "workerpool1": ["127.0.0.1:2222"]}
    environ = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "PROBE_OUT": str(tmp_path / "ranks.json"),
    }
    nodes = []
    for task in ({"type": "workerpool0", "index": 0}, {"type": "workerpool1", "index": 0}):
        spec = json.dumps({"cluster": cluster, "environment": "cloud", "task": task})
        command = torchrun_command(
            rendezvous_from_cluster_spec(spec, gpu_count=0), module="cluster_probe"
        )
        # torchrun is `python -m torch.distributed.run`; this venv's may not be on PATH.
        argv = [sys.executable, "-m", "torch.distributed.run", *command[1:]]
        nodes.append(subprocess.Popen(argv, env=environ, cwd=tmp_path))

    codes = [node.wait(timeout=120) for node in nodes]

    assert codes == [0, 0]
    ranks = json.loads((tmp_path / "ranks.json").read_text())
    # Node 0 (the primary) holds global rank 0, workerpool1's replica 0 is node 1.
    assert ranks == [
        {"RANK": 0, "LOCAL_RANK": 0, "WORLD_SIZE": 2, "GROUP_RANK": 0},
        {"RANK": 1, "LOCAL_RANK": 0, "WORLD_SIZE": 2, "GROUP_RANK": 1},
    ]
