"""bench/gpu.sh runs where no GPU was ever lent to this project; its CPU dry run keeps the
script, its timing and its result file working until one is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_gpu_benchmark_dry_run_measures_the_baselines_and_skips_what_needs_cuda(
    tmp_path: Path,
) -> None:
    environ = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    run = subprocess.run(
        ["bash", "bench/gpu.sh", "--tiny"],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr

    results = json.loads((tmp_path / "gpu.json").read_text())
    variants = {variant["variant"]: variant for variant in results["variants"]}
    for measured in ("eager", "sdpa"):
        assert variants[measured]["tokens_per_second"] > 0
        assert variants[measured]["finite_loss"] is True
    assert variants["eager"]["speed_vs_eager"] == 1.0
    # Without CUDA these say why they did not run instead of failing the whole script.
    for needs_cuda in ("fa2", "sdpa+liger", "fa2+liger", "unpacked/fa2", "packed/fa2"):
        assert "CUDA" in variants[needs_cuda]["skipped"]
    assert "CUDA" in variants["packed/flex"]["skipped"]
    assert (tmp_path / "gpu.log").is_file()

    # Packed against unpacked, on the same documents: what CPU can run, it measures.
    unpacked = variants["unpacked/sdpa"]
    assert unpacked["speed_vs_unpacked_sdpa"] == 1.0
    assert unpacked["padding_fraction"] > 0
    for packed in ("packed/sdpa", "packed/document_sdpa"):
        assert variants[packed]["tokens_per_second"] > 0
        assert variants[packed]["finite_loss"] is True
        assert variants[packed]["real_tokens"] == variants["packed/sdpa"]["real_tokens"]
    assert "real tokens/s" in run.stdout
