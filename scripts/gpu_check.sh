#!/usr/bin/env bash
# Triton kernels (issue 4) on a CUDA machine: correctness at realistic shapes, torch.compile
# + CUDA graphs, tuning sweep and the benchmark table, in one process. From the repo root:
#   bash scripts/gpu_check.sh [extra args for benchmarks/bench_gpu.py]
# Logs and JSON go to $OUT (or /tmp/lowbit-out). Needs no C++ extension (PYTHONPATH=.).
set -uo pipefail
out=${OUT:-/tmp/lowbit-out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi -L
python3 benchmarks/bench_gpu.py --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log" | grep -v "^  .* ok$\|exact$"
