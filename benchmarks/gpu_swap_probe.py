#!/usr/bin/env python3
"""Weights-left tensor-core GEMM (kernels/gemm_swap.py) on a GPU: correctness at realistic
shapes (every single-plane width, groups, per-channel, HQQ zeros, fp16/bf16, K splits), then
launch-config sweeps per shape and M against fp16 cuBLAS, tinygemm and the column-pair GEMM
with its dispatch config. Method as benchmarks/bench_gpu.py: one CUDA graph over weight
copies > 4x L2, median of replays / copies.

Usage: PYTHONPATH=. python3 benchmarks/gpu_swap_probe.py [--shapes 14336x4096,4096x4096] [--ms 4,16,32,64]
"""
import sys

import torch

sys.path.insert(0, "benchmarks")
import bench_gpu as bg  # noqa: E402
from bench_gpu import log, time_configs  # noqa: E402

from lowbit.backends.triton import ensure_kernels  # noqa: E402

ensure_kernels()
from lowbit.kernels import dispatch  # noqa: E402
from lowbit.kernels.gemm_swap import gemm_swap  # noqa: E402


def _check_configs(m):
    bms = [bm for bm in (16, 32, 64) if bm <= max(16, m)]
    return ([dict(block_m=bm) for bm in bms] + [dict(block_m=bms[-1], split_k=4, num_warps=8, block_n=128)]
            + [dict(block_m=bms[-1], block_n=64, split_k=16, stages=4)])


def check():
    return bg.check_gemm(gemm_swap, _check_configs)


def grid_for(m, n, stages=(3,), sms=132):
    """Launch configs for M rows. One pipeline depth: the full tile grid; several (``--stages``,
    which also deepens the weight-byte prefetch: ``stages - 1`` buffers): the 4-warp tiles only."""
    out = []
    tiles_nw = ((64, 4), (128, 4), (128, 8), (256, 8)) if len(stages) == 1 else ((64, 4), (128, 4))
    if m > 64:  # large M: 64-128-token tiles; 8 warps keep 64 weight rows (two accumulators) per warpgroup
        for bm, bn, nw in ((64, 128, 8), (128, 128, 8), (64, 256, 8), (128, 64, 4), (64, 64, 4)):
            tiles = -(-m // bm) * -(-n // bn)
            for sp in sorted({1, max(1, sms // tiles)}):
                for st in stages:
                    out.append(dict(block_m=bm, block_n=bn, num_warps=nw, split_k=min(sp, 32), stages=st))
        return out
    for bm in sorted({max(16, min(64, 1 << (m - 1).bit_length())), 16} if m > 16 else {16}):
        for bn, nw in tiles_nw:
            tiles = -(-m // bm) * -(-n // bn)
            base = max(1, (2 * sms) // tiles)
            for sp in sorted({max(1, base // 2), base, 2 * base}):
                for st in stages:
                    out.append(dict(block_m=bm, block_n=bn, num_warps=nw, split_k=min(sp, 32), stages=st))
    return out


def sweep(n, k, m, dws, stages=(3,), args=None):
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    res = time_configs(lambda d, **cfg: gemm_swap(x, d, None, **cfg), dws, grid_for(m, n, stages))
    res.sort(key=lambda r: r[0])
    for us, cfg in res[:5]:
        log(f"  {n}x{k} M={m} swap {us:7.2f} us {cfg}")
    other = "gemm_pairs"
    if m > 64:  # against what served this M before gemm_swap's range reached 128
        old = dispatch.thresholds()
        dispatch.set_thresholds(swap_max_m=64)
        try:
            other = dispatch.choose(m, dws[0], "none", x.device)
        finally:
            dispatch.set_thresholds(**{f: getattr(old, f) for f in old.__dataclass_fields__})
    return bg.compare_row(n, k, m, x, dws, other, "swap", res)


def main():
    bg.probe_main("swap_probe", check, sweep, "14336x4096,4096x14336,4096x4096,6144x4096", "4,16,32,64")


if __name__ == "__main__":
    main()
