#!/usr/bin/env python3
"""Column-pair tensor-core GEMM (kernels/gemm_pairs.py) on a GPU: correctness at realistic
shapes (every single-plane width, groups, per-channel, HQQ zeros, fp16/bf16, K splits through
the self-cleaning workspace), then launch-config sweeps per shape and M against fp16 cuBLAS,
tinygemm and the family the dispatcher picks. Method as benchmarks/bench_gpu.py: one CUDA
graph over weight copies > 4x L2, median of replays / copies.

Usage: PYTHONPATH=. python3 benchmarks/gpu_pairs_probe.py [--shapes 14336x4096,4096x4096] [--ms 1,4,16,64]
"""
import sys

import torch

sys.path.insert(0, "benchmarks")
import bench_gpu as bg  # noqa: E402
from bench_gpu import log, time_configs  # noqa: E402

from lowbit.backends.triton import ensure_kernels  # noqa: E402

ensure_kernels()
from lowbit.kernels import dispatch  # noqa: E402
from lowbit.kernels.gemm_pairs import gemm_pairs  # noqa: E402
from lowbit.kernels.gemv_words import words_supported  # noqa: E402


def _check_configs(m):
    bms = [bm for bm in (16, 32, 64) if bm <= max(16, m)]
    return ([dict(block_m=bm) for bm in bms] + [dict(block_m=bm, split_k=4, num_warps=8) for bm in bms]
            + [dict(block_m=bms[-1], block_n=256, split_k=16, stages=4)])


def check():
    return bg.check_gemm(gemm_pairs, _check_configs)


def grid_for(m, n, sms=132, caps=False, stages=(3,)):
    # caps (--maxnreg): register caps per thread. 16-row tiles use ~198 registers (2 programs
    # per SM), 168 fits 3 without spills (offline sm_90 compile); 32-row tiles 255 (one
    # program), 224 fits 2. On the H100 neither was faster (docs/gpu_kernels.md).
    out = []
    for bm in [b for b in (16, 32) if b <= max(16, m)]:
        for bn in (128, 256):
            for reg in ((None, 168 if bm == 16 else 224) if caps else (None,)):
                tiles = -(-m // bm) * -(-n // bn)
                base = max(1, (3 * sms) // tiles)
                for sp in sorted({max(1, base // 2), base, 2 * base}):
                    for st in stages:
                        out.append(dict(block_m=bm, block_n=bn, num_warps=4, split_k=min(sp, 32), stages=st, maxnreg=reg))
    return out


def sweep(n, k, m, dws, stages=(3,), args=None):
    caps = bool(args and args.maxnreg)
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    res = time_configs(lambda d, **cfg: gemm_pairs(x, d, None, **cfg), dws, grid_for(m, n, caps=caps, stages=stages))
    res.sort(key=lambda r: r[0])
    for us, cfg in res[:5]:
        log(f"  {n}x{k} M={m} pairs {us:7.2f} us {cfg}")
    fam = dispatch.choose(m, dws[0], "none", x.device)
    if fam == "gemm_pairs":  # compare with what served this M before
        fam = "gemv_words" if m <= 2 and words_supported(dws[0]) else ("gemm" if m > 32 else "gemm_splitk")
    return bg.compare_row(n, k, m, x, dws, fam, "pairs", res)


def main():
    bg.probe_main("pairs_probe", check, sweep, "14336x4096,4096x14336,4096x4096", "1,2,4,8,16",
                  extra=[("--maxnreg", "also sweep register caps per thread")])


if __name__ == "__main__":
    main()
