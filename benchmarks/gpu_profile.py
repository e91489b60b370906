#!/usr/bin/env python3
"""Three calls per M of one GEMM family (W4 g128 fp16, the dispatcher's config) at one shape,
as a target for Nsight Compute. On the device machine, e.g.:

    ncu --kernel-name regex:_gemm_swap_kernel --launch-skip 2 --launch-count 1 \
        --section WarpStateStats --page raw \
        python3 benchmarks/gpu_profile.py gemm_swap 32 --shape 28672x4096

``--page source --csv --print-source sass --section SourceCounters`` gives the stall samples
per SASS instruction. Usage: ``gpu_profile.py FAMILY M[,M...] [--shape NxK]``.
"""
import argparse
import importlib
import sys

import torch

from lowbit.backends.triton import ensure_kernels

ensure_kernels()
sys.path.insert(0, "benchmarks")
from bench_gpu import make_weight  # noqa: E402
from lowbit.kernels import dispatch  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("family", help="e.g. gemm_pairs, gemm_swap")
ap.add_argument("ms", help="comma-separated M values")
ap.add_argument("--shape", default="14336x4096", help="N x K")
a = ap.parse_args()
n, k = map(int, a.shape.split("x"))
run = getattr(importlib.import_module(f"lowbit.kernels.{a.family}"), a.family)
dw = make_weight(n, k, 4, 128, torch.float16, real=False)[3]
for m in map(int, a.ms.split(",")):
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    cfg = dispatch.config(a.family, m, dw, x.device)
    for _ in range(3):
        run(x, dw, None, **cfg)
    torch.cuda.synchronize()
    print(a.family, m, cfg, flush=True)
