"""What `tuning.estimates` says the GPU benchmark's runs need, beside what they measured.

Pure Python (no torch): bench/gpu.py and bench/gpu_fsdp.py measure, this compares, so the
comparison is unit-tested where there is no GPU (tests/bench/test_estimate_check.py).

The estimate is `estimate_training_memory` for the run as the benchmark makes it, which in
two ways is not the trainer's:

- the loss comes from the model's full logits (transformers' causal-LM loss over bf16 logits
  upcast to float32), where the trainer's TRL fused head holds one tile: the estimate's logits
  part is then the materialised float32 logits it counts for ORPO (4 B per token and
  vocabulary entry). Liger's fused linear cross-entropy (the `+liger` variants) never
  materialises them, which the estimate's fused-head tile stands for;
- `eager` attention keeps each layer's scores for the backward pass, as the estimate counts
  for Gemma 2 (`ModelShape.eager_attention`); SDPA and FlashAttention keep none.

What is measured is the device's peak as nvidia-smi would show it: PyTorch's peak reserved
memory plus what the process holds outside PyTorch's allocator (CUDA context, cuBLAS and NCCL
workspaces), which is what the estimate's overhead stands for. A ratio above 1 means the
estimate is short.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # bench/gpu.py runs as a script, from bench/
    sys.path.insert(0, str(REPO))

from tuning.estimates import (  # noqa: E402
    FRAGMENTATION,
    GIB,
    MemoryEstimate,
    ModelShape,
    estimate_training_memory,
)

MATERIALISED_LOGIT_BYTES = 4  # float32, as tuning.estimates counts ORPO's logits


def bench_shape(shape: Mapping[str, Any], *, eager_attention: bool = False) -> ModelShape:
    """The ModelShape of a Gemma3TextConfig built from `shape` (the benchmark's dicts leave
    out model_type, which decides the q/k norms and the sliding-layer pattern)."""
    parsed = ModelShape.from_config({"model_type": "gemma3_text", **shape})
    return dataclasses.replace(parsed, eager_attention=eager_attention)


def fused_head(variant: str) -> bool:
    """Whether the variant's loss never materialises the full logits (Liger's fused CE)."""
    return "liger" in variant


def bench_estimate(
    shape: Mapping[str, Any],
    *,
    variant: str,
    batch: int,
    seq_len: int,
    lora_rank: int = 16,
    method: str = "LoRA",
    gradient_checkpointing: bool = False,
    gpu_count: int = 1,
) -> MemoryEstimate:
    """The estimate for one of the benchmark's runs: `batch` rows of `seq_len` tokens on each
    GPU (the packed variants flatten the same tokens into one row: the same estimate)."""
    kernel = variant.split("/")[-1].split("+")[0]
    model = bench_shape(shape, eager_attention=kernel == "eager")
    estimate = estimate_training_memory(
        model,
        method=method,
        trainer_type="sft",
        max_seq_length=seq_len,
        micro_batch=batch,
        lora_rank=lora_rank,
        gradient_checkpointing=gradient_checkpointing,
        gpu_count=gpu_count,
    )
    if fused_head(variant):
        return estimate
    logits = MATERIALISED_LOGIT_BYTES * batch * seq_len * model.vocab_size
    more = logits - estimate.logits
    return dataclasses.replace(
        estimate, logits=logits, overhead=estimate.overhead + round(FRAGMENTATION * more)
    )


def memory_comparison(measured_gib: float | None, estimate: MemoryEstimate) -> dict[str, Any]:
    """The fields a result row carries: the estimate (in all and by part) and measured over it."""
    estimate_gib = estimate.total / GIB
    return {
        "estimate_gib": estimate_gib,
        "estimate_parts_gib": {
            name: getattr(estimate, name) / GIB
            for name in ("weights", "gradients", "optimizer", "activations", "logits", "overhead")
        },
        "measured_over_estimate": measured_gib / estimate_gib if measured_gib else None,
    }


def describe_memory(row: Mapping[str, Any]) -> str:
    """', peak 41.2 GiB (estimate 38.0 GiB: 1.08x)' for a summary line; '' without either."""
    measured, estimate = row.get("peak_device_gib"), row.get("estimate_gib")
    if measured is None and estimate is None:
        return ""
    parts = [f"peak {measured:.1f} GiB" if measured is not None else "peak -"]
    if estimate is not None:
        ratio = row.get("measured_over_estimate")
        parts.append(f"(estimate {estimate:.1f} GiB" + (f": {ratio:.2f}x)" if ratio else ")"))
    return ", " + " ".join(parts)


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top is not None and bottom else None


def fsdp_report(one: Mapping[str, Any], many: Mapping[str, Any]) -> dict[str, Any]:
    """The multi-GPU run against the one-GPU run of the same job and against its estimate.

    `one` and `many` are bench/gpu_fsdp.py's results (tokens/s over all processes, the
    largest per-GPU peak of any process, the estimate per GPU for that process count)."""
    processes = int(many["processes"])
    speedup = _ratio(many.get("tokens_per_second"), one.get("tokens_per_second"))
    return {
        "processes": processes,
        "method": many.get("method"),
        "tokens_per_second": many.get("tokens_per_second"),
        "one_gpu_tokens_per_second": one.get("tokens_per_second"),
        "speedup_vs_one_gpu": speedup,
        "scaling_efficiency": speedup / processes if speedup is not None else None,
        "peak_gib_per_gpu": many.get("peak_device_gib"),
        "one_gpu_peak_gib": one.get("peak_device_gib"),
        "peak_vs_one_gpu": _ratio(many.get("peak_device_gib"), one.get("peak_device_gib")),
        "estimate_gib_per_gpu": many.get("estimate_gib"),
        "one_gpu_estimate_gib": one.get("estimate_gib"),
        "measured_over_estimate": many.get("measured_over_estimate"),
        "one_gpu_measured_over_estimate": one.get("measured_over_estimate"),
    }


def _gib(value: float | None) -> str:
    return f"{value:.1f} GiB" if value is not None else "-"


def _times(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def describe_fsdp(report: Mapping[str, Any]) -> str:
    """Three lines: throughput, per-GPU peak against one GPU, and against the estimates."""
    n = report["processes"]
    tps, one_tps = report["tokens_per_second"], report["one_gpu_tokens_per_second"]
    efficiency = report["scaling_efficiency"]
    return "\n".join(
        [
            f"FSDP over {n} GPUs ({report['method']}): {tps:,.0f} tokens/s, "
            f"{_times(report['speedup_vs_one_gpu'])} one GPU's {one_tps:,.0f}"
            + (f" ({efficiency:.0%} of linear)" if efficiency is not None else ""),
            f"  peak per GPU {_gib(report['peak_gib_per_gpu'])}, "
            f"{_times(report['peak_vs_one_gpu'])} one GPU's {_gib(report['one_gpu_peak_gib'])}",
            f"  estimate per GPU {_gib(report['estimate_gib_per_gpu'])} "
            f"(measured {_times(report['measured_over_estimate'])}); one GPU: estimate "
            f"{_gib(report['one_gpu_estimate_gib'])} "
            f"(measured {_times(report['one_gpu_measured_over_estimate'])})",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="compare bench/gpu_fsdp.py's two runs")
    parser.add_argument("one", type=Path, help="the one-GPU run's JSON")
    parser.add_argument("many", type=Path, help="the multi-GPU run's JSON")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    missing = [str(path) for path in (args.one, args.many) if not path.is_file()]
    if missing:
        print(f"no result in {', '.join(missing)}: the run failed or timed out", file=sys.stderr)
        return 1
    report = fsdp_report(json.loads(args.one.read_text()), json.loads(args.many.read_text()))
    print(describe_fsdp(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
