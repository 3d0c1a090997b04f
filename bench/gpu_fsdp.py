"""Full fine-tuning sharded with FSDP2 over the GPUs of one machine, against one GPU.

A Gemma-3-1B-shaped model built from its config (as bench/gpu.py builds it), trained a few
steps the way a multi-GPU tier's trainer shards it (trainer/distributed.py `fsdp_arguments`):
FSDP2, one unit per decoder layer plus the root, weights resharded after each forward,
activation checkpointing per layer, float32 master weights with bf16 compute (FSDP's mixed
precision gathers each layer in bf16 and reduces gradients in float32), AdamW. Every process
trains its own micro-batch of `batch` rows of `seq_len` tokens, as data parallelism does.
With one process there is no FSDP: the one-GPU path of the same job (bf16 autocast over the
float32 masters, the model's own gradient checkpointing), the baseline of the ratios.

    torchrun --standalone --nproc_per_node=1 -m bench.gpu_fsdp --out fsdp-1.json
    torchrun --standalone --nproc_per_node=8 -m bench.gpu_fsdp --out fsdp-8.json
    python -m bench.estimate_check fsdp-1.json fsdp-8.json     # the comparison
    torchrun --standalone --nproc_per_node=2 -m bench.gpu_fsdp --tiny --out t.json  # CPU, gloo

Rank 0 writes tokens/s over all processes, the largest per-GPU peak of any process (device
level: PyTorch's peak reserved plus what lies outside its allocator) and `tuning.estimates`'
figure per GPU for that process count (bench/estimate_check.py). Not the trainer itself: no
Trainer, TRL or accelerate (the accelerator machine may lack them); the loss comes from the
model's full logits, which the estimate is told (see bench/estimate_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.estimate_check import bench_estimate, memory_comparison
from bench.gpu import GEMMA3_1B, TINY

NO_GPU = (
    "bench/gpu_fsdp.py: no CUDA GPU visible (torch.cuda.is_available() is False), so nothing "
    "was measured: run it on the accelerator machine, or with --tiny for the CPU dry run"
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model: a dry run on CPU")
    parser.add_argument("--method", choices=("Full", "LoRA"), default="Full")
    parser.add_argument("--batch", type=int, help="rows per process (default 2)")
    parser.add_argument("--seq-len", type=int, help="tokens per row (default 1024)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    # The request defaults (batch 2, 1024 tokens), as the README's estimates are made.
    args.batch = args.batch or 2
    args.seq_len = args.seq_len or (64 if args.tiny else 1024)
    args.steps = args.steps or (2 if args.tiny else 8)
    if args.tiny:
        args.warmup = 1
    return args


def build(args: argparse.Namespace, device: Any, world_size: int) -> Any:
    """The model on `device`, sharded when there are several processes."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(**(TINY if args.tiny else GEMMA3_1B))
    config.use_cache = False
    torch.manual_seed(0)
    # Full keeps float32 masters (trainer/modeling.py); LoRA trains adapters on bf16 weights.
    dtype = torch.float32 if args.method == "Full" else torch.bfloat16
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    if args.method == "LoRA":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=16, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    # Checkpointing per decoder layer, non-reentrant (it composes with FSDP2's hooks: the
    # recomputed forward gathers its layer again, as FSDP's own checkpointing does).
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    if world_size == 1:
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # bf16 gathers and float32 gradient reduction on GPUs; gloo (CPU) gathers float32.
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if device.type == "cuda"
        else MixedPrecisionPolicy()
    )
    layers = [m for m in model.modules() if type(m).__name__ == "Gemma3DecoderLayer"]
    for layer in layers:
        fully_shard(layer, mp_policy=policy, reshard_after_forward=True)
    fully_shard(model, mp_policy=policy, reshard_after_forward=True)
    return model


def train(args: argparse.Namespace) -> dict[str, Any] | None:
    """Train on this process; rank 0 returns the run's result, the others None."""
    import torch
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if world_size > 1:
        if cuda:
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    model = build(args, device, world_size)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    vocab = (TINY if args.tiny else GEMMA3_1B)["vocab_size"]
    generator = torch.Generator().manual_seed(100 + rank)  # each process its own rows
    batch = torch.randint(3, vocab, (args.batch, args.seq_len), generator=generator).to(device)

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    for _ in range(args.warmup):
        step()
    outside = 0
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        free, total = torch.cuda.mem_get_info()
        outside = max(0, total - free - torch.cuda.memory_reserved())
    if world_size > 1:
        dist.barrier()
    started = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    mine = {
        "sharded": type(trainable[0]).__name__ == "DTensor",  # FSDP2's parameters are
        "seconds": seconds,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_device_gib": (torch.cuda.max_memory_reserved() + outside) / 2**30 if cuda else None,
        "losses": losses,
    }
    everyone = [mine]
    if world_size > 1:
        everyone = [None] * world_size
        dist.all_gather_object(everyone, mine)
        dist.destroy_process_group()
    if rank != 0:
        return None
    return result(args, world_size, everyone, torch.cuda.get_device_name(0) if cuda else "cpu")


def result(
    args: argparse.Namespace, world_size: int, ranks: list[Any], device: str
) -> dict[str, Any]:
    """The run over all processes: tokens/s of them all, the largest peak of any one."""
    slowest = max(rank["seconds"] for rank in ranks)
    peaks = [rank["peak_device_gib"] for rank in ranks if rank["peak_device_gib"] is not None]
    allocated = [rank["peak_memory_gib"] for rank in ranks if rank["peak_memory_gib"] is not None]
    losses = [loss for rank in ranks for loss in rank["losses"]]
    row: dict[str, Any] = {
        "processes": world_size,
        "sharded": all(rank["sharded"] for rank in ranks),
        "device": device,
        "method": args.method,
        "batch_per_process": args.batch,
        "seq_len": args.seq_len,
        "tokens_per_second": world_size * args.batch * args.seq_len * args.steps / slowest,
        "step_seconds": slowest / args.steps,
        "peak_device_gib": max(peaks) if peaks else None,
        "peak_memory_gib": max(allocated) if allocated else None,
        "final_loss": ranks[0]["losses"][-1],
        "finite_loss": all(loss == loss and abs(loss) < 1e4 for loss in losses),
    }
    estimate = bench_estimate(
        TINY if args.tiny else GEMMA3_1B,
        variant="sdpa",
        batch=args.batch,
        seq_len=args.seq_len,
        method=args.method,
        gradient_checkpointing=True,
        gpu_count=world_size,
    )
    return row | memory_comparison(row["peak_device_gib"], estimate)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    if not args.tiny and not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    row = train(args)
    if row is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(row, indent=2) + "\n")
        memory = row["peak_device_gib"]
        print(
            f"{row['processes']} process(es), {row['method']}: "
            f"{row['tokens_per_second']:,.0f} tokens/s, peak per GPU "
            + (f"{memory:.1f} GiB" if memory is not None else "-")
            + f" (estimate {row['estimate_gib']:.1f} GiB)"
            + ("" if row["finite_loss"] else ", LOSS NOT FINITE"),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
