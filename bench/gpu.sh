#!/usr/bin/env bash
# LoRA SFT throughput, MFU and peak memory of a Gemma-3-1B-shaped model on the GPU machine:
# eager (the baseline), SDPA, FlashAttention-2 and Liger kernels where they import; then
# packed against unpacked batches per attention kernel (SDPA with its dense mask, SDPA one
# document at a time, FlashAttention-2 varlen, FlexAttention), real tokens/s and peak memory.
# Unattended, under 9 minutes; writes gpu.json and gpu.log to $OUT (else bench/results/).
#
#   bash bench/gpu.sh                 # on the accelerator machine
#   bash bench/gpu.sh --tiny          # the same code on CPU with a tiny model (a dry run)
#
# That machine has no network: optional packages (flash-attn, liger-kernel) come as wheels
# in .whl/ if someone carried them there; without them those variants are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
python="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/bench-gpu-site \
    .whl/*.whl && export PYTHONPATH="/tmp/bench-gpu-site${PYTHONPATH:+:$PYTHONPATH}"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader | tee "$out/gpu.log"
# 8.5 minutes for everything; each variant also has its own limit inside gpu.py.
PYTHONUNBUFFERED=1 timeout 510 "$python" bench/gpu.py --out "$out/gpu.json" "$@" 2>&1 \
  | tee -a "$out/gpu.log"
