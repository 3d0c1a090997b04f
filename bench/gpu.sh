#!/usr/bin/env bash
# LoRA SFT throughput, MFU and peak memory of a Gemma-3-1B-shaped model on the GPU machine:
# eager (the baseline), SDPA, FlashAttention-2 and Liger kernels where they import; then
# packed against unpacked batches per attention kernel (SDPA with its dense mask, SDPA one
# document at a time, FlashAttention-2 varlen, FlexAttention), real tokens/s and peak memory.
# Every peak is printed beside tuning.estimates' figure for the same run (measured/estimate).
# With two or more GPUs, then Full fine-tuning sharded with FSDP2 under torchrun on all of
# them against the same job on one GPU (bench/gpu_fsdp.py): tokens/s and per-GPU peak, as
# ratios to one GPU and to the FSDP estimate.
# Unattended, under 9 minutes; writes gpu.json, fsdp*.json and gpu.log to $OUT (else
# bench/results/). Without a CUDA GPU (and without --tiny) it says so and exits 2.
#
#   bash bench/gpu.sh                 # on the accelerator machine
#   bash bench/gpu.sh --tiny          # the same code on CPU with a tiny model (a dry run)
#   BENCH_FSDP_PROCESSES=2 bash bench/gpu.sh --tiny   # ... with the FSDP run, two CPU processes
#
# That machine has no network: optional packages (flash-attn, liger-kernel) come as wheels
# in .whl/ if someone carried them there; without them those variants are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
python="${PYTHON:-python3}"
tiny=""
for arg in "$@"; do [[ $arg == --tiny ]] && tiny="--tiny"; done

reason=""
if ! gpus=$("$python" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null); then
  gpus=0
  reason="torch does not import with $python (PYTHON names the Python to use)"
elif ((gpus == 0)); then
  reason="no CUDA GPU visible (torch.cuda.device_count() is 0)"
fi
if [[ -z $tiny && -n $reason ]]; then
  echo "bench/gpu.sh: $reason, so nothing was measured: run it on the accelerator machine," \
    "or 'bash bench/gpu.sh --tiny' for the CPU dry run" | tee "$out/gpu.log" >&2
  exit 2
fi

if compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/bench-gpu-site \
    .whl/*.whl && export PYTHONPATH="/tmp/bench-gpu-site${PYTHONPATH:+:$PYTHONPATH}"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader | tee "$out/gpu.log"

# The FSDP comparison needs two processes or more: the machine's GPUs, or on CPU (--tiny)
# as many gloo processes as BENCH_FSDP_PROCESSES says.
processes="${BENCH_FSDP_PROCESSES:-$gpus}"
# 8.5 minutes for everything; each variant also has its own limit inside gpu.py.
kernels_limit=510
((processes > 1)) && kernels_limit=390
PYTHONUNBUFFERED=1 timeout "$kernels_limit" "$python" bench/gpu.py --out "$out/gpu.json" "$@" \
  2>&1 | tee -a "$out/gpu.log"
status=${PIPESTATUS[0]}

if ((processes > 1)); then
  # torchrun is `python -m torch.distributed.run`: the same Python as the rest.
  for count in 1 "$processes"; do
    PYTHONUNBUFFERED=1 timeout 55 "$python" -m torch.distributed.run --standalone \
      --nproc_per_node="$count" -m bench.gpu_fsdp $tiny --out "$out/fsdp-$count.json" 2>&1 \
      | grep -v "OMP_NUM_THREADS\|^\*\*\*\*\|^$" | tee -a "$out/gpu.log"
    if ((PIPESTATUS[0] != 0)); then
      echo "the FSDP run on $count process(es) failed or timed out" | tee -a "$out/gpu.log"
      status=1
    fi
  done
  "$python" -m bench.estimate_check "$out/fsdp-1.json" "$out/fsdp-$processes.json" \
    --out "$out/fsdp.json" 2>&1 | tee -a "$out/gpu.log"
  ((PIPESTATUS[0] == 0)) || status=1
else
  echo "$gpus GPU(s) visible: the multi-GPU (FSDP) comparison needs two or more; skipped" \
    | tee -a "$out/gpu.log"
fi
exit "$status"
