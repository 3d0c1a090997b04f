"""The GPU benchmark's memory comparison (bench/estimate_check.py), where no GPU measures: the
estimate it prints for each run, measured over estimate, and the FSDP report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import estimate_check, gpu, gpu_fsdp
from bench.estimate_check import (
    bench_estimate,
    bench_shape,
    describe_fsdp,
    describe_memory,
    fsdp_report,
    memory_comparison,
)
from tuning.estimates import GIB, estimate_training_memory
from tuning.model_catalog import CATALOG


def cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def test_the_benchmarks_model_is_gemma_3_1b_to_the_parameter() -> None:
    assert bench_shape(gpu.GEMMA3_1B).parameters == CATALOG["gemma-3-1b"]["exact_parameters"]


def test_the_tiny_shape_counts_what_transformers_builds() -> None:
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(Gemma3TextConfig(**gpu.TINY))

    assert bench_shape(gpu.TINY).parameters == sum(p.numel() for p in model.parameters())


def test_a_liger_run_is_the_trainers_estimate_and_the_others_add_their_full_logits() -> None:
    shape = bench_shape(gpu.GEMMA3_1B)
    trainer = estimate_training_memory(
        shape,
        method="LoRA",
        trainer_type="sft",
        max_seq_length=2048,
        micro_batch=8,
        lora_rank=16,
        gradient_checkpointing=False,
    )
    liger = bench_estimate(gpu.GEMMA3_1B, variant="sdpa+liger", batch=8, seq_len=2048)
    sdpa = bench_estimate(gpu.GEMMA3_1B, variant="sdpa", batch=8, seq_len=2048)
    packed = bench_estimate(gpu.GEMMA3_1B, variant="packed/fa2", batch=8, seq_len=2048)

    assert liger == trainer
    # float32 logits over the whole vocabulary for every token, and 5% fragmentation on them.
    assert sdpa.logits == 4 * 8 * 2048 * 262144
    extra = sdpa.logits - trainer.logits
    assert sdpa.overhead - trainer.overhead == pytest.approx(0.05 * extra, abs=1)
    assert (sdpa.weights, sdpa.activations) == (trainer.weights, trainer.activations)
    assert packed == sdpa  # the same tokens flattened into one row


def test_eager_attention_keeps_its_scores() -> None:
    eager = bench_estimate(gpu.GEMMA3_1B, variant="eager", batch=8, seq_len=2048)
    sdpa = bench_estimate(gpu.GEMMA3_1B, variant="sdpa", batch=8, seq_len=2048)

    # Two (heads x seq) bf16 matrices per token and layer: scores and their softmax.
    scores = 26 * 8 * 2048 * 2 * 2 * 4 * 2048
    assert eager.activations - sdpa.activations == scores


def test_fsdp_divides_what_it_shards_per_gpu() -> None:
    one = bench_estimate(
        gpu.GEMMA3_1B, variant="sdpa", batch=2, seq_len=1024, method="Full",
        gradient_checkpointing=True,
    )  # fmt: skip
    eight = bench_estimate(
        gpu.GEMMA3_1B, variant="sdpa", batch=2, seq_len=1024, method="Full",
        gradient_checkpointing=True, gpu_count=8,
    )  # fmt: skip

    assert eight.optimizer == one.optimizer // 8
    assert eight.activations == one.activations
    assert eight.total < one.total / 2


def test_measured_over_estimate() -> None:
    estimate = bench_estimate(gpu.TINY, variant="sdpa", batch=2, seq_len=128)
    total = estimate.total / GIB

    fields = memory_comparison(2 * total, estimate)
    assert fields["measured_over_estimate"] == pytest.approx(2.0)
    assert fields["estimate_gib"] == pytest.approx(total)
    assert sum(fields["estimate_parts_gib"].values()) == pytest.approx(total)
    assert memory_comparison(None, estimate)["measured_over_estimate"] is None

    row = {"peak_device_gib": 2 * total} | fields
    assert describe_memory(row) == f", peak {2 * total:.1f} GiB (estimate {total:.1f} GiB: 2.00x)"
    assert describe_memory({"peak_device_gib": None} | memory_comparison(None, estimate)) == (
        f", peak - (estimate {total:.1f} GiB)"
    )
    assert describe_memory({}) == ""


def run(processes: int, tokens_per_second: float, peak: float | None, estimate: float) -> dict:
    return {
        "processes": processes,
        "method": "Full",
        "tokens_per_second": tokens_per_second,
        "peak_device_gib": peak,
        "estimate_gib": estimate,
        "measured_over_estimate": peak / estimate if peak else None,
    }


def test_the_fsdp_report_sets_eight_gpus_against_one_and_against_the_estimate() -> None:
    report = fsdp_report(run(1, 10_000, 24.0, 20.0), run(8, 60_000, 6.0, 5.0))

    assert report["speedup_vs_one_gpu"] == pytest.approx(6.0)
    assert report["scaling_efficiency"] == pytest.approx(0.75)
    assert report["peak_vs_one_gpu"] == pytest.approx(0.25)
    assert report["measured_over_estimate"] == pytest.approx(1.2)
    assert report["one_gpu_measured_over_estimate"] == pytest.approx(1.2)
    text = describe_fsdp(report)
    assert (
        "FSDP over 8 GPUs (Full): 60,000 tokens/s, 6.00x one GPU's 10,000 (75% of linear)" in text
    )
    assert "peak per GPU 6.0 GiB, 0.25x one GPU's 24.0 GiB" in text
    assert "estimate per GPU 5.0 GiB (measured 1.20x)" in text


def test_without_measured_memory_the_report_leaves_the_ratios_out() -> None:
    report = fsdp_report(run(1, 100, None, 1.0), run(2, 150, None, 0.6))

    assert report["peak_vs_one_gpu"] is None and report["measured_over_estimate"] is None
    assert "peak per GPU -, - one GPU's -" in describe_fsdp(report)


def test_the_report_command_writes_it_and_says_when_a_run_left_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "one.json").write_text(json.dumps(run(1, 100, 2.0, 2.0)))
    (tmp_path / "many.json").write_text(json.dumps(run(2, 180, 1.5, 1.0)))

    code = estimate_check.main(
        [str(tmp_path / "one.json"), str(tmp_path / "many.json"), "--out", str(tmp_path / "r")]
    )
    assert code == 0
    assert json.loads((tmp_path / "r").read_text())["speedup_vs_one_gpu"] == pytest.approx(1.8)
    assert "1.80x one GPU's" in capsys.readouterr().out

    assert estimate_check.main([str(tmp_path / "one.json"), str(tmp_path / "gone.json")]) == 1
    assert "gone.json: the run failed or timed out" in capsys.readouterr().err


@pytest.mark.skipif(cuda(), reason="checks the path of a machine without a GPU")
def test_without_a_gpu_the_benchmarks_say_so_and_measure_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gpu.main(["--out", str(tmp_path / "gpu.json")]) == 2
    assert "no CUDA GPU visible" in capsys.readouterr().err
    assert gpu_fsdp.main(["--out", str(tmp_path / "fsdp.json")]) == 2
    assert "--tiny for the CPU dry run" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
