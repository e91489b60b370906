#!/usr/bin/env bash
# One device-machine call for the end-to-end decode (issue 6) after a change to how compiled
# models reach the kernels: the compile / CUDA-graph tests on the GPU, the 8B decode for bf16
# and W4 g128 at batch 1/16/32 (host ms a step in every row), then where the W4 step's host
# time goes (benchmarks/gpu_host_probe.py, 8 layers). From the repo root, ~5 minutes on an H100:
#   bash scripts/gpu_e2e_check.sh            (CONFIGS=bf16,w4g128,a8w4 BATCH=1,32 to change the rows)
source "$(dirname "$0")/gpu_env.sh"
python3 -m pytest -q -rs -p no:cacheprovider tests/test_compile.py 2>&1 | tee "$out/compile_tests.log" | tail -3
python3 -m lowbit.cli bench e2e --preset llama-3.1-8b --batch "${BATCH:-1,16,32}" --configs "${CONFIGS:-bf16,w4g128}" \
    --prompt 32 --tokens 64 --json "$out/e2e.json" 2>&1 | tee "$out/e2e.log"
python3 benchmarks/gpu_host_probe.py --configs w4g128,bf16 2>&1 | tee "$out/host_probe.log" | grep -v "^\s*$" | head -60
