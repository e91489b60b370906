#!/usr/bin/env bash
# Triton kernels (issue 4) on a CUDA machine: correctness at realistic shapes, torch.compile
# + CUDA graphs, tuning sweep and the benchmark table, in one process. From the repo root:
#   bash scripts/gpu_check.sh [extra args for benchmarks/bench_gpu.py]
#   LOWBIT_GPU_PYTEST=1 bash scripts/gpu_check.sh --only env   # also run tests/test_triton_gpu.py
# Logs and JSON go to $OUT (or /tmp/lowbit-out). Needs no C++ extension (PYTHONPATH=.).
set -uo pipefail
out=${OUT:-/tmp/lowbit-out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi -L
if [ "${LOWBIT_GPU_PYTEST:-0}" = 1 ]; then
    python3 -m pytest -q -rs -p no:cacheprovider tests/test_triton_gpu.py 2>&1 | tee "$out/pytest_gpu.log" | tail -5
fi
python3 benchmarks/bench_gpu.py --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log" | grep -v "^  .* ok$\|exact$"
