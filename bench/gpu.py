"""LoRA SFT throughput on a GPU: a Gemma-3-1B-shaped model from its config, no download.

Self-contained on purpose (torch, transformers and peft only, no TRL, and of this
repository only pure-Python modules: tuning/estimates.py, trainer/document_attention.py):
the accelerator machine has its own Python with those packages and no network. Each
variant runs in its own process, so a kernel that fails or hangs costs only its own row
and peak memory is its own (the `--tiny` dry run keeps them all in one, to stay quick on
CPU):

    eager        the seed's attention (the baseline of every ratio)
    sdpa         PyTorch scaled-dot-product attention (what the trainer picks by default)
    fa2          FlashAttention-2, when the flash_attn package imports
    sdpa+liger   Liger kernels (RMSNorm, GeGLU, RoPE, fused linear cross-entropy), when
    fa2+liger    the liger_kernel package imports

For each: tokens per second over full rows (batch x sequence, no padding) in bf16,
model FLOPs utilisation and peak GPU memory, beside what `tuning.estimates` says the same
run needs (bench/estimate_check.py: measured over estimate; the one module of this
repository the benchmark reads besides trainer/document_attention.py). FLOPs per token
count what LoRA does: forward 2N and backward 2N over the frozen linear weights N (no
weight gradients), plus attention (causal; sliding layers see at most their window),
forward and the twice-as-costly backward; `mfu_6n` uses the usual 6N for comparison.

Then packing against not packing, per attention kernel, on documents of long-tailed
(log-normal) lengths, the same documents for every variant:

    unpacked/sdpa           length-grouped batches of `batch` rows padded to their
                            longest (the baseline of these ratios)
    unpacked/fa2            the same batches on FlashAttention-2
    packed/sdpa             `batch` packed rows of `seq_len` flattened into one sequence
                            (padding-free, as TRL's collator makes it), SDPA with the dense
                            block-diagonal mask transformers builds from the position ids
    packed/document_sdpa    the same, SDPA on each document alone (the trainer's choice
                            without a varlen kernel: trainer/document_attention.py)
    packed/fa2              the same, FlashAttention-2's varlen kernel (cu_seq_lens)
    packed/flex             the same, FlexAttention with transformers' document BlockMask
                            (compiled by Triton: CUDA only)

Each reports real (non-padding) tokens per second, peak GPU memory over every step (and
the estimate) and its speed against unpacked/sdpa. Packed micro-batches are padded to
batch x seq_len (one padding document at the end) so that their shape is static, as FlexAttention's
compiled kernel wants; the others pay that little padding too.

    python bench/gpu.py --out bench/results/gpu.json     # on the GPU machine (bench/gpu.sh)
    python bench/gpu.py --tiny                           # a dry run on CPU, tiny model

Without a CUDA GPU and without --tiny it says so and exits 2, measuring nothing. Several GPUs:
bench/gpu_fsdp.py (FSDP2 under torchrun), which bench/gpu.sh runs after this.
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

KERNEL_VARIANTS = ("eager", "sdpa", "fa2", "sdpa+liger", "fa2+liger")
PACKING_VARIANTS = (
    "unpacked/sdpa",
    "unpacked/fa2",
    "packed/sdpa",
    "packed/document_sdpa",
    "packed/fa2",
    "packed/flex",
)
VARIANTS = (*KERNEL_VARIANTS, *PACKING_VARIANTS)
PACKING_BASELINE = "unpacked/sdpa"
REPO = Path(__file__).resolve().parents[1]
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
    if variant.endswith("/flex") and not cuda:
        return "FlexAttention compiles with Triton here: needs CUDA"
    if variant.endswith("/document_sdpa"):
        sys.path.insert(0, str(REPO))
        if importlib.util.find_spec("trainer.document_attention") is None:
            return "trainer/document_attention.py is not beside bench/"
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
    kernel = variant.split("/")[-1].split("+")[0]
    attention = {
        "eager": "eager",
        "sdpa": "sdpa",
        "fa2": "flash_attention_2",
        "flex": "flex_attention",
        "document_sdpa": "sdpa",  # switched below, once registered
    }[kernel]
    config = Gemma3TextConfig(**shape)
    config.use_cache = False
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attention)
    if kernel == "document_sdpa":
        from trainer.document_attention import document_attention_name, register

        register()
        model.set_attn_implementation(document_attention_name("sdpa"))
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
    if variant in PACKING_VARIANTS:
        return run_packing_variant(variant, args)
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
    outside = outside_allocator_bytes() if cuda else 0
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
        "peak_device_gib": device_peak_gib(outside) if cuda else None,
        "final_loss": losses[-1],
        "finite_loss": all(loss == loss and abs(loss) < 1e4 for loss in losses),
    }


def outside_allocator_bytes() -> int:
    """What this process holds on the GPU outside PyTorch's caching allocator (CUDA context,
    cuBLAS and NCCL workspaces): the device's used memory less what PyTorch reserved."""
    import torch

    free, total = torch.cuda.mem_get_info()
    return max(0, total - free - torch.cuda.memory_reserved())


def device_peak_gib(outside: int) -> float:
    """The peak as nvidia-smi would show it: peak reserved plus what lies outside PyTorch."""
    import torch

    return (torch.cuda.max_memory_reserved() + outside) / 2**30


def estimate_fields(variant: str, args: argparse.Namespace, row: dict[str, Any]) -> dict[str, Any]:
    """`tuning.estimates`' figure for the variant's run, beside the measured peak."""
    try:
        sys.path.insert(0, str(REPO))
        from bench.estimate_check import bench_estimate, memory_comparison
    except ImportError as error:  # tuning/ did not travel with bench/
        return {"estimate_skipped": f"tuning.estimates does not import: {error}"}
    shape = TINY if args.tiny else GEMMA3_1B
    estimate = bench_estimate(shape, variant=variant, batch=args.batch, seq_len=args.seq_len)
    return memory_comparison(row.get("peak_device_gib"), estimate)


# Packing against not packing -------------------------------------------------------------


def document_lengths(args: argparse.Namespace) -> list[int]:
    """Long-tailed document lengths (median seq_len / 8), enough for warmup + steps packed
    micro-batches."""
    import math
    import random

    rng = random.Random(2)
    wanted = (args.warmup + args.steps) * args.batch * args.seq_len * 0.95
    lengths: list[int] = []
    while sum(lengths) < wanted:
        length = rng.lognormvariate(math.log(args.seq_len / 8), 1.0)
        lengths.append(min(args.seq_len, max(8, round(length))))
    return lengths


def packed_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing, as TRL's BFD packing does: document indices per row."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        fits = [row for row, left in enumerate(room) if left >= lengths[index]]
        if fits:
            best = min(fits, key=lambda row: room[row])
            rows[best].append(index)
            room[best] -= lengths[index]
        else:
            rows.append([index])
            room.append(capacity - lengths[index])
    return rows


def packing_batches(variant: str, args: argparse.Namespace, vocab: int) -> list[dict[str, Any]]:
    """The micro-batches of one variant (on CPU), each with its count of real tokens."""
    import random

    import torch

    lengths = document_lengths(args)
    generator = torch.Generator().manual_seed(3)
    documents = [torch.randint(3, vocab, (length,), generator=generator) for length in lengths]
    order = random.Random(4)
    batches: list[dict[str, Any]] = []
    if variant.startswith("unpacked/"):
        by_length = sorted(range(len(documents)), key=lambda i: lengths[i])
        groups = [by_length[i : i + args.batch] for i in range(0, len(by_length), args.batch)]
        order.shuffle(groups)
        for group in groups:
            width = max(lengths[i] for i in group)
            ids = torch.zeros((len(group), width), dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for row, i in enumerate(group):
                ids[row, : lengths[i]] = documents[i]
                mask[row, : lengths[i]] = 1
            labels = ids.masked_fill(mask == 0, -100)
            real = int(mask.sum())
            batches.append(
                {"input_ids": ids, "attention_mask": mask, "labels": labels, "real": real}
            )
        return batches
    rows = packed_rows(lengths, args.seq_len)
    order.shuffle(rows)
    total = args.batch * args.seq_len
    # Whole micro-batches only (a last, partly filled one would be mostly padding).
    whole = max(args.batch, len(rows) - len(rows) % args.batch)
    for start in range(0, whole, args.batch):
        pieces = [i for row in rows[start : start + args.batch] for i in row]
        sizes = [lengths[i] for i in pieces]
        real = sum(sizes)
        if real < total:
            sizes.append(total - real)  # the padding document: a static shape
        ids = torch.zeros(total, dtype=torch.long)
        ids[:real] = torch.cat([documents[i] for i in pieces])
        labels = ids.clone()
        labels[real:] = -100
        positions = torch.cat([torch.arange(size) for size in sizes])
        labels[positions == 0] = -100  # no document predicts across a boundary
        edges = torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()], dtype=torch.int32)
        batches.append(
            {
                "input_ids": ids[None],
                "labels": labels[None],
                "position_ids": positions[None],
                "cu_seq_lens_q": edges,
                "cu_seq_lens_k": edges,
                "max_length_q": max(sizes),
                "max_length_k": max(sizes),
                "real": real,
            }
        )
    return batches


def run_packing_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    shape = TINY if args.tiny else GEMMA3_1B
    model = build_model(variant, shape, device, torch.bfloat16)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batches = packing_batches(variant, args, shape["vocab_size"])

    def step(batch: dict[str, Any]) -> float:
        inputs = {
            key: value.to(device) if isinstance(value, torch.Tensor) else value
            for key, value in batch.items()
            if key != "real"
        }
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()  # the peak over every step, warm-up included
    outside = outside_allocator_bytes() if cuda else 0
    warmup = min(args.warmup, len(batches) - 1)
    for batch in batches[:warmup]:
        step(batch)
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    losses = [step(batch) for batch in batches[warmup:]]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    real = sum(batch["real"] for batch in batches[warmup:])
    fed = sum(batch["input_ids"].numel() for batch in batches[warmup:])
    return {
        "variant": variant,
        "tokens_per_second": real / seconds,
        "micro_batches": len(batches) - warmup,
        "real_tokens": real,
        "padding_fraction": 1 - real / fed,
        "step_seconds": seconds / (len(batches) - warmup),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "peak_device_gib": device_peak_gib(outside) if cuda else None,
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
    if not args.tiny and not cuda_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "environment": environment(),
        "batch": args.batch,
        "seq_len": args.seq_len,
        "variants": [],
    }
    out = args.out or Path(os.environ.get("OUT") or "bench/results") / "gpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    given = sys.argv[1:] if argv is None else argv
    baseline = packing_baseline = None
    for variant in args.variants.split(","):
        row = run_in_subprocess(variant, given, args)
        if "tokens_per_second" in row:
            row |= estimate_fields(variant, args, row)
        if variant == "eager" and "tokens_per_second" in row:
            baseline = row
        if variant == PACKING_BASELINE and "tokens_per_second" in row:
            packing_baseline = row
        if variant in PACKING_VARIANTS:
            if packing_baseline and "tokens_per_second" in row:
                speed = row["tokens_per_second"] / packing_baseline["tokens_per_second"]
                row["speed_vs_unpacked_sdpa"] = speed
        elif baseline and "tokens_per_second" in row:
            row["speed_vs_eager"] = row["tokens_per_second"] / baseline["tokens_per_second"]
        print(summary(row), flush=True)
        results["variants"].append(row)
        # Written after every variant: an outer time limit still leaves what was measured.
        out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {out}")
    return 0


def run_in_subprocess(variant: str, argv: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """One variant in a fresh process, with a time limit: a failure costs only its row."""
    missing = missing_requirement(variant, cuda_available())
    if missing:  # said here, without starting a process for it
        return {"variant": variant, "skipped": missing}
    print(f"running {variant} ...", flush=True)
    if args.tiny:  # a dry run: one process is enough, and much faster on CPU
        return run_variant(variant, args)
    command = [sys.executable, __file__, *argv, "--one", variant]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.variant_timeout)
    except subprocess.TimeoutExpired:
        return {"variant": variant, "failed": f"timed out after {args.variant_timeout:.0f}s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"variant": variant, "failed": done.stderr.strip()[-2000:]}
    return dict(json.loads(lines[-1]))


NO_GPU = (
    "bench/gpu.py: no CUDA GPU visible (torch.cuda.is_available() is False), so nothing was "
    "measured: run it on the accelerator machine, or with --tiny for the CPU dry run"
)


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def summary(row: dict[str, Any]) -> str:
    if "tokens_per_second" not in row:
        return f"{row['variant']:>20}: {row.get('skipped') or 'FAILED ' + row['failed'][-300:]}"
    if row["variant"] in PACKING_VARIANTS:
        memory = row["peak_memory_gib"]
        return (
            f"{row['variant']:>20}: {row['tokens_per_second']:,.0f} real tokens/s"
            + (
                f" ({row['speed_vs_unpacked_sdpa']:.2f}x unpacked sdpa)"
                if "speed_vs_unpacked_sdpa" in row
                else ""
            )
            + f", padding {row['padding_fraction']:.0%}"
            + memory_text(row, memory)
            + ("" if row["finite_loss"] else ", LOSS NOT FINITE")
        )
    mfu = f"MFU {row['mfu']:.1%} (6N: {row['mfu_6n']:.1%})" if row["mfu"] is not None else "MFU -"
    memory = row["peak_memory_gib"]
    return (
        f"{row['variant']:>20}: {row['tokens_per_second']:,.0f} tokens/s"
        + (f" ({row['speed_vs_eager']:.2f}x eager)" if "speed_vs_eager" in row else "")
        + f", {mfu}"
        + memory_text(row, memory)
        + ("" if row["finite_loss"] else ", LOSS NOT FINITE")
    )


def memory_text(row: dict[str, Any], allocated: float | None) -> str:
    """The peak beside its estimate when there is one, else the allocator's peak alone."""
    if "estimate_gib" in row:
        from bench.estimate_check import describe_memory

        return describe_memory(row)
    return f", peak {allocated:.1f} GiB" if allocated is not None else ""


if __name__ == "__main__":
    sys.exit(main())
