"""LoRA SFT throughput on a GPU: a Gemma-3-1B-shaped model from its config, no download.

Self-contained on purpose (torch, transformers and peft only, no TRL and nothing of
this repository): the accelerator machine has its own Python with those packages and
no network. Each variant runs in its own process, so a kernel that fails or hangs
costs only its own row and peak memory is its own:

    eager        the seed's attention (the baseline of every ratio)
    sdpa         PyTorch scaled-dot-product attention (what the trainer picks by default)
    fa2          FlashAttention-2, when the flash_attn package imports
    sdpa+liger   Liger kernels (RMSNorm, GeGLU, RoPE, fused linear cross-entropy), when
    fa2+liger    the liger_kernel package imports

For each: tokens per second over full rows (batch x sequence, no padding) in bf16,
model FLOPs utilisation and peak GPU memory. FLOPs per token count what LoRA does:
forward 2N and backward 2N over the frozen linear weights N (no weight gradients),
plus attention (causal; sliding layers see at most their window), forward and the
twice-as-costly backward; `mfu_6n` uses the usual 6N for comparison.

    python bench/gpu.py --out bench/results/gpu.json     # on the GPU machine (bench/gpu.sh)
    python bench/gpu.py --tiny                           # a dry run on CPU, tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = ("eager", "sdpa", "fa2", "sdpa+liger", "fa2+liger")
# Dense bf16 peak of the accelerator, TFLOP/s (spec sheets; H100/H200 SXM share one).
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L4": 121.0}
GEMMA3_1B = {
    "vocab_size": 262144,
    "hidden_size": 1152,
    "intermediate_size": 6912,
    "num_hidden_layers": 26,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "sliding_window": 512,
    "query_pre_attn_scalar": 256,
    "max_position_embeddings": 32768,
}
TINY = {
    **GEMMA3_1B,
    "vocab_size": 1024,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "sliding_window": 32,
    "query_pre_attn_scalar": 16,
}


def missing_requirement(variant: str, cuda: bool) -> str | None:
    """Why the variant cannot run here, or None."""
    import importlib.util

    if "fa2" in variant:
        if not cuda:
            return "FlashAttention-2 needs CUDA"
        if importlib.util.find_spec("flash_attn") is None:
            return "flash_attn is not installed (carry a wheel matching torch and CUDA)"
    if "liger" in variant:
        if not cuda:
            return "Liger kernels need CUDA (Triton)"
        if importlib.util.find_spec("liger_kernel") is None:
            return "liger_kernel is not installed (carry its wheel)"
    return None


def build_model(variant: str, shape: dict[str, Any], device: str, dtype: Any) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    if "liger" in variant:
        from liger_kernel.transformers import apply_liger_kernel_to_gemma3_text

        # Patches the Gemma 3 modules before the model is built from them.
        apply_liger_kernel_to_gemma3_text(
            rope=True, rms_norm=True, geglu=True, fused_linear_cross_entropy=True
        )
    attention = {"eager": "eager", "sdpa": "sdpa", "fa2": "flash_attention_2"}[
        variant.split("+")[0]
    ]
    config = Gemma3TextConfig(**shape)
    config.use_cache = False
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attention)
    lora = LoraConfig(
        r=16, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    return get_peft_model(model, lora)


def flops_per_token(model: Any, shape: dict[str, Any], seq_len: int) -> tuple[float, float]:
    """(LoRA model FLOPs per token, 6N per token), N the base model's linear weights (the LM
    head included: tied to the embedding, it is a matmul all the same)."""
    import torch

    linear = sum(
        module.base_layer.weight.numel() if hasattr(module, "base_layer") else module.weight.numel()
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and "lora_" not in name
    )
    width = shape["num_attention_heads"] * shape["head_dim"]
    attention = 0.0
    for layer in model.config.layer_types:
        window = seq_len if layer == "full_attention" else min(shape["sliding_window"], seq_len)
        # The mean number of keys a causal query sees: min(position, window), averaged.
        context = (window * (window + 1) / 2 + (seq_len - window) * window) / seq_len
        attention += 4 * width * context  # QK^T and AV, 2 FLOPs per multiply-add
    return 4 * linear + 3 * attention, 6 * linear


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    missing = missing_requirement(variant, cuda)
    if missing:
        return {"variant": variant, "skipped": missing}
    device = "cuda" if cuda else "cpu"
    shape = TINY if args.tiny else GEMMA3_1B
    model = build_model(variant, shape, device, torch.bfloat16)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator(device="cpu").manual_seed(1)
    batch = torch.randint(
        3, shape["vocab_size"], (args.batch, args.seq_len), generator=generator
    ).to(device)

    def step() -> float:
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens_per_second = args.batch * args.seq_len * args.steps / seconds
    model_flops, six_n = flops_per_token(model, shape, args.seq_len)
    peak = peak_tflops(args) if cuda else None
    return {
        "variant": variant,
        "tokens_per_second": tokens_per_second,
        "step_seconds": seconds / args.steps,
        "mfu": model_flops * tokens_per_second / (peak * 1e12) if peak else None,
        "mfu_6n": six_n * tokens_per_second / (peak * 1e12) if peak else None,
        "model_tflops_per_second": model_flops * tokens_per_second / 1e12,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "final_loss": losses[-1],
        "finite_loss": all(loss == loss and abs(loss) < 1e4 for loss in losses),
    }


def peak_tflops(args: argparse.Namespace) -> float | None:
    import torch

    if args.peak_tflops:
        return float(args.peak_tflops)
    name = torch.cuda.get_device_name(0)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def environment() -> dict[str, Any]:
    import importlib.metadata

    import torch

    versions = {}
    for package in ("torch", "transformers", "peft", "flash_attn", "liger_kernel", "triton"):
        try:
            versions[package] = importlib.metadata.version(package.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model: a dry run on CPU")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch", type=int)
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak, if not known")
    parser.add_argument("--variant-timeout", type=float, default=120)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one variant (in a subprocess)
    args = parser.parse_args(argv)
    args.batch = args.batch or (2 if args.tiny else 8)
    args.seq_len = args.seq_len or (128 if args.tiny else 2048)
    args.steps = args.steps or (2 if args.tiny else 10)
    if args.tiny:
        args.warmup = 1
    if args.one:
        print(json.dumps(run_variant(args.one, args)))
        return 0
    results: dict[str, Any] = {
        "environment": environment(),
        "batch": args.batch,
        "seq_len": args.seq_len,
        "variants": [],
    }
    out = args.out or Path(os.environ.get("OUT") or "bench/results") / "gpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    given = sys.argv[1:] if argv is None else argv
    baseline = None
    for variant in args.variants.split(","):
        row = run_in_subprocess(variant, given, args)
        if variant == "eager" and "tokens_per_second" in row:
            baseline = row
        if baseline and "tokens_per_second" in row:
            row["speed_vs_eager"] = row["tokens_per_second"] / baseline["tokens_per_second"]
        print(summary(row), flush=True)
        results["variants"].append(row)
        # Written after every variant: an outer time limit still leaves what was measured.
        out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {out}")
    return 0


def run_in_subprocess(variant: str, argv: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """One variant in a fresh process, with a time limit: a failure costs only its row."""
    print(f"running {variant} ...", flush=True)
    command = [sys.executable, __file__, *argv, "--one", variant]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.variant_timeout)
    except subprocess.TimeoutExpired:
        return {"variant": variant, "failed": f"timed out after {args.variant_timeout:.0f}s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"variant": variant, "failed": done.stderr.strip()[-2000:]}
    return dict(json.loads(lines[-1]))


def summary(row: dict[str, Any]) -> str:
    if "tokens_per_second" not in row:
        return f"{row['variant']:>11}: {row.get('skipped') or 'FAILED ' + row['failed'][-300:]}"
    mfu = f"MFU {row['mfu']:.1%} (6N: {row['mfu_6n']:.1%})" if row["mfu"] is not None else "MFU -"
    memory = row["peak_memory_gib"]
    return (
        f"{row['variant']:>11}: {row['tokens_per_second']:,.0f} tokens/s"
        + (f" ({row['speed_vs_eager']:.2f}x eager)" if "speed_vs_eager" in row else "")
        + f", {mfu}"
        + (f", peak {memory:.1f} GiB" if memory is not None else "")
        + ("" if row["finite_loss"] else ", LOSS NOT FINITE")
    )


if __name__ == "__main__":
    sys.exit(main())
