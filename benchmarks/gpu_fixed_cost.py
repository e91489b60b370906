#!/usr/bin/env python3
"""Fixed cost per call and marginal bandwidth of the family the dispatcher picks at one M:
times it over widening N (K fixed; method as bench_gpu: one CUDA graph over weight copies > 4x
L2, median) and fits ``us = fixed + slope * floor_us``. The fixed part (launch, ramp-up, the
split-K tail) is what dominates narrow layers; 1 / slope is the bandwidth share of the bulk.
Also times a near-empty Triton kernel in the same kind of graph (the launch floor).

Usage: PYTHONPATH=. python3 benchmarks/gpu_fixed_cost.py [--ns 1024,4096,14336,57344] [--k 4096] [--m 1]
"""
import argparse
import sys

import numpy as np
import torch
import triton
import triton.language as tl

sys.path.insert(0, "benchmarks")
import bench_gpu as bg  # noqa: E402

from lowbit.backends.triton import ensure_kernels  # noqa: E402

ensure_kernels()
from lowbit.kernels import dispatch  # noqa: E402


@triton.jit
def _touch(y, n, B: tl.constexpr):
    o = tl.program_id(0) * B + tl.arange(0, B)
    tl.store(y + o, o.to(tl.float16), mask=o < n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", default="1024,2048,4096,6144,8192,14336,28672,57344")
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--m", type=int, default=1)
    a = ap.parse_args()
    bg.section_env()
    rows = []
    for n in map(int, a.ns.split(",")):
        dws = bg.weight_copies(n, a.k)
        x = torch.randn(a.m, a.k, device="cuda", dtype=torch.float16)
        fam = dispatch.choose(a.m, dws[0], "none", x.device)
        cfg = dict(dispatch.config(fam, a.m, dws[0], x.device))
        us = bg.graph_us([lambda d=d: dispatch.run_family(fam, x, d, None, **cfg) for d in dws])
        fl, _ = bg.floor_us(n, a.k, a.m, 4, 128)
        rows.append((fl, us))
        bg.log(f"{n}x{a.k} M={a.m} {fam} {cfg}: {us:.2f} us, floor {fl:.2f} us ({fl / us:.0%})")
        del dws
    y = torch.empty(4096, device="cuda", dtype=torch.float16)
    bg.log(f"near-empty Triton kernel in a graph: {bg.graph_us([lambda: _touch[(16,)](y, 4096, B=256)] * 8):.2f} us")
    (fixed, slope), *_ = np.linalg.lstsq(np.array([[1.0, f] for f, _ in rows]), np.array([u for _, u in rows]), rcond=None)
    bg.log(f"fit: us = {fixed:.2f} + {slope:.3f} x floor_us (fixed {fixed:.2f} us a call; bulk at {1 / slope:.0%} of copy BW)")


if __name__ == "__main__":
    main()
