#!/usr/bin/env python3
"""Dequantize-then-cuBLAS at large M (kernels/dequant.py) on a GPU: the whole float weight
written once (the default) against chunks of ``chunk_n`` columns dequantized into one reused
buffer, each multiplied straight into its columns of y, so the float weight can be read back
from L2 instead of DRAM. Correctness of every chunked config first (bench_gpu.check_gemm),
then per shape and M: fp16 cuBLAS, the dequantize kernel alone, the default, and the sweep.
Method as benchmarks/bench_gpu.py (one CUDA graph over weight copies > 4x L2, median).

Floor arithmetic (H100, 14336x4096, M = 1024): cuBLAS is compute-bound (~160 us); the
default adds the dequantize pass, >= (29 MB codes read + 117 MB fp16 written) / 2.96 TB/s
~ 50 us, so it is bounded near 0.76x; with the float chunk read from L2 the pass costs about
the codes' read (10 us) plus the L2 writes, which is what 0.9x needs.

Rejected and not landed (docs/gpu_kernels.md, "Chunked dequantize + cuBLAS"): apply
chunked_dequant.patch (against e3fa446), copy this file to benchmarks/, then
Usage: PYTHONPATH=. python3 benchmarks/gpu_dequant_probe.py [--shapes 14336x4096] [--ms 256,1024]
"""
import sys

import torch

sys.path.insert(0, "benchmarks")
import bench_gpu as bg  # noqa: E402
from bench_gpu import log, time_configs  # noqa: E402

from lowbit.backends.triton import ensure_kernels  # noqa: E402

ensure_kernels()
from lowbit.kernels.dequant import dequant_linear, dequantize_t  # noqa: E402

CHUNKS = (1024, 2048, 3072, 4096, 6144, 8192)
KERNEL = ({}, dict(block_k=64, block_n=256, num_warps=8), dict(block_k=32, block_n=128, num_warps=4),
          dict(block_k=64, block_n=128, num_warps=4))


def check():
    return bg.check_gemm(dequant_linear, lambda m: [dict(chunk_n=1024), dict(chunk_n=1536)], ms=(129, 300))


def sweep(n, k, m, dws, stages, a):
    from lowbit.kernels import dispatch

    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    base = dict(dispatch.config("dequant_cublas", m, dws[0], x.device))
    cub = bg.time_cublas(n, k, m)
    deq = bg.graph_us([lambda d=d: dequantize_t(d, torch.float16, **base) for d in dws])
    grid = [dict(base)] + [dict(base, chunk_n=c) for c in CHUNKS if c < n]
    res = sorted(time_configs(lambda d, **c: dequant_linear(x, d, None, **c), dws, grid), key=lambda r: r[0])
    best_chunk = next((c.get("chunk_n") for _, c in res if c.get("chunk_n")), None)
    if best_chunk:  # the dequantize kernel's own tiles at the best chunk
        more = [dict(base, **kc, chunk_n=best_chunk) for kc in KERNEL[1:]]
        res = sorted(res + time_configs(lambda d, **c: dequant_linear(x, d, None, **c), dws, more), key=lambda r: r[0])
    whole = next(u for u, c in res if "chunk_n" not in c)
    fl, kind = bg.floor_us(n, k, m, 4, 128)
    log(f"{n}x{k} M={m}: cuBLAS {cub:.1f}  dequantize alone {deq:.1f}  whole {whole:.1f} ({cub / whole:.2f}x)  "
        f"best {res[0][0]:.1f} ({cub / res[0][0]:.2f}x) {res[0][1]}; {kind} floor {fl:.1f}")
    for u, c in res:
        log(f"  {u:8.1f} us  {c}")
    return dict(n=n, k=k, m=m, cublas=cub, dequantize=deq, whole=whole, floor=fl, all=[(u, c) for u, c in res])


if __name__ == "__main__":
    bg.probe_main("dequant_probe", check, sweep, "14336x4096,4096x14336,28672x4096,4096x4096,6144x4096", "1024,256")
