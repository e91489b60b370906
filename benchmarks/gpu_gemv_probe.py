#!/usr/bin/env python3
"""Where does the M=1 time go? Times, in one CUDA graph over weight copies (> 4x L2):
the full reverse-split-K op, its kernel alone, the workspace memset + cast alone, and a
load-only kernel that streams the same bytes with the same grid (the access pattern's floor).

Usage: PYTHONPATH=. python3 benchmarks/gpu_gemv_probe.py
"""
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, "benchmarks")
from bench_gpu import copies_for, graph_us, make_weight  # noqa: E402

from lowbit.backends.triton import ensure_kernels  # noqa: E402

ensure_kernels()
from lowbit.kernels.gemv_revsplitk import _gemv_revsplitk_kernel, gemv_revsplitk  # noqa: E402


@triton.jit
def _stream(q_ptr, out_ptr, N, K_ROWS, ROWS: tl.constexpr, BN: tl.constexpr):
    pid_n = tl.program_id(0).to(tl.int64)
    pid_k = tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BN + tl.arange(0, BN)
    rows = pid_k * ROWS + tl.arange(0, ROWS)
    b = tl.load(q_ptr + rows[:, None] * N + offs_n[None, :], mask=(rows < K_ROWS)[:, None] & (offs_n < N)[None, :], other=0)
    tl.store(out_ptr + pid_k * N + offs_n, tl.sum(b.to(tl.int32), axis=0), mask=offs_n < N)


def main():
    p = torch.cuda.get_device_properties(0)
    print(p.name)
    for n, k in ((14336, 4096), (4096, 4096)):
        probe = make_weight(n, k, 4, 128, torch.float16, real=False)[3]
        dws = [probe] + [make_weight(n, k, 4, 128, torch.float16, real=False)[3] for _ in range(copies_for(probe.codes.numel()) - 1)]
        x = torch.randn(1, k, device="cuda", dtype=torch.float16)
        for bn, bk, nw in ((64, 64, 1), (128, 64, 2), (256, 64, 4)):
            full = graph_us([lambda d=d: gemv_revsplitk(x, d, block_n=bn, block_k=bk, num_warps=nw, words=False) for d in dws])
            ws = torch.zeros(1, n, dtype=torch.float32, device="cuda")
            grid = (triton.cdiv(n, bn), triton.cdiv(k, 2 * bk))
            kern = graph_us([lambda d=d: _gemv_revsplitk_kernel[grid](
                x, d.codes, d.scales, d.zeros, ws, n, k, 128, 4, 0, 0, 2, 4, True, bk, bn, False, num_warps=nw)
                for d in dws])
            rows = bk  # two tiles of bk codes = bk bytes-rows at 4 bits
            outs = torch.empty(triton.cdiv(k // 2, rows), n, dtype=torch.int32, device="cuda")
            sgrid = (triton.cdiv(n, bn), triton.cdiv(k // 2, rows))
            stream = graph_us([lambda d=d: _stream[sgrid](d.codes, outs, n, k // 2, rows, bn, num_warps=nw) for d in dws])
            extra = graph_us([lambda: (ws.zero_(), ws.to(torch.float16)) for _ in dws])
            floor = n * k / 2 / 4.23e12 * 1e6
            print(f"{n}x{k} bn={bn} bk={bk} nw={nw}: op {full:.1f} us, kernel {kern:.1f}, memset+cast {extra:.1f}, "
                  f"load-only {stream:.1f}, bytes floor {floor:.1f}")


if __name__ == "__main__":
    main()
