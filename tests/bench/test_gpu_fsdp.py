"""bench/gpu.sh's multi-GPU part where there is no GPU: two CPU processes under torchrun
shard the tiny model with FSDP2 over gloo, and the script reports them against one; without
a GPU and without --tiny the script says so and exits 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def gpu_sh(tmp_path: Path, *args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "bench/gpu.sh", *args],
        cwd=REPO,
        env={**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), **environ},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_two_processes_shard_the_model_and_are_set_against_one(tmp_path: Path) -> None:
    run = gpu_sh(tmp_path, "--tiny", "--variants", "sdpa", BENCH_FSDP_PROCESSES="2")
    assert run.returncode == 0, run.stdout + run.stderr

    one = json.loads((tmp_path / "fsdp-1.json").read_text())
    two = json.loads((tmp_path / "fsdp-2.json").read_text())
    assert (one["processes"], one["sharded"]) == (1, False)
    assert (two["processes"], two["sharded"]) == (2, True)
    for result in (one, two):
        assert result["tokens_per_second"] > 0 and result["finite_loss"] is True
        assert result["method"] == "Full"
    # FSDP divides weights, gradients and optimizer state: less per process on two.
    assert two["estimate_gib"] < one["estimate_gib"]

    report = json.loads((tmp_path / "fsdp.json").read_text())
    ratio = two["tokens_per_second"] / one["tokens_per_second"]
    assert report["speedup_vs_one_gpu"] == pytest.approx(ratio)
    assert report["estimate_gib_per_gpu"] == two["estimate_gib"]
    assert "FSDP over 2 GPUs (Full)" in run.stdout

    # The single-GPU benchmark's rows carry their estimate too.
    (row,) = json.loads((tmp_path / "gpu.json").read_text())["variants"]
    assert row["variant"] == "sdpa" and row["estimate_gib"] > 0
    assert "(estimate " in run.stdout


def test_one_process_alone_is_no_fsdp_comparison(tmp_path: Path) -> None:
    run = gpu_sh(tmp_path, "--tiny", "--variants", "sdpa")

    assert run.returncode == 0, run.stdout + run.stderr
    assert "FSDP) comparison needs two or more; skipped" in run.stdout
    assert not (tmp_path / "fsdp.json").exists()


@pytest.mark.skipif(cuda(), reason="checks the path of a machine without a GPU")
def test_without_a_gpu_the_script_says_so_and_exits_2(tmp_path: Path) -> None:
    run = gpu_sh(tmp_path)

    assert run.returncode == 2
    assert "no CUDA GPU visible" in run.stderr and "--tiny" in run.stderr
    assert not (tmp_path / "gpu.json").exists()


def test_without_torch_the_script_names_the_python_it_tried(tmp_path: Path) -> None:
    run = gpu_sh(tmp_path, PYTHON="/nonexistent/python3")

    assert run.returncode == 2
    assert "torch does not import with /nonexistent/python3" in run.stderr
