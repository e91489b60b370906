#!/usr/bin/env python3
"""Three gemm_pairs calls per M at 14336x4096 (W4 g128 fp16, the dispatcher's config), for
Nsight Compute. On the device machine:

    ncu --kernel-name regex:_gemm_pairs_kernel --launch-skip 2 --launch-count 1 \
        --section SpeedOfLight --section WarpStateStats --section ComputeWorkloadAnalysis \
        --section Occupancy --section LaunchStats python3 benchmarks/gpu_pairs_profile.py 64
"""
import sys
import torch
from lowbit.backends.triton import ensure_kernels
ensure_kernels()
sys.path.insert(0, "benchmarks")
from bench_gpu import make_weight  # noqa: E402
from lowbit.kernels import dispatch  # noqa: E402
from lowbit.kernels.gemm_pairs import gemm_pairs  # noqa: E402

dw = make_weight(14336, 4096, 4, 128, torch.float16, real=False)[3]
for m in map(int, sys.argv[1].split(",")):
    x = torch.randn(m, 4096, device="cuda", dtype=torch.float16)
    cfg = dispatch.config("gemm_pairs", m, dw, x.device)
    for _ in range(3):
        gemm_pairs(x, dw, None, **cfg)
    torch.cuda.synchronize()
    print(m, cfg, flush=True)
