#!/usr/bin/env python3
"""Word GEMV (kernels/gemv_words.py) on a GPU: correctness at realistic shapes (M = 1 and the
multi-row kernel), launch-config sweeps at M = 1, 2, 4, 8 against fp16 cuBLAS, tinygemm and the
family the dispatcher would otherwise pick (the int8 GEMM is timed by gpu_int8_probe.py). Method as benchmarks/bench_gpu.py: one CUDA graph over weight copies > 4x L2,
median of replays / copies.

Usage: PYTHONPATH=. python3 benchmarks/gpu_words_probe.py [--shapes 14336x4096,4096x4096] [--ms 1,2,4,8]
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, "benchmarks")
import bench_gpu as bg  # noqa: E402
from bench_gpu import graph_us, log, make_weight, time_configs, weight_copies as weights, worst_rel  # noqa: E402

from lowbit.backends.triton import ensure_kernels  # noqa: E402

ensure_kernels()
from lowbit.kernels import dispatch  # noqa: E402
from lowbit.kernels.dequant import reference_linear  # noqa: E402
from lowbit.kernels.gemv_dp4a import dp4a_supported, gemv_dp4a  # noqa: E402
from lowbit.kernels.gemv_words import gemv_words  # noqa: E402


def check():
    bad = 0
    for bits, gs, sym in [(4, 128, False), (4, 32, True), (4, None, False), (2, 128, False), (1, 64, False), (8, 128, True)]:
        for dtype in (torch.float16, torch.bfloat16):
            n, k = 4096, 4096
            codes, s, z, dw = make_weight(n, k, bits, gs, dtype, sym=sym)
            for m in (1, 3, 8):
                x = torch.randn(m, k, device="cuda", dtype=dtype)
                b = torch.randn(n, device="cuda", dtype=dtype)
                ref = reference_linear(x.float(), codes, s.float(), None if z is None else z.float(), bits) + b.float()
                cfgs = [dict(), dict(split_k=1), dict(split_k=32, block_n=128, rows=8, prefetch=False),
                        dict(stages=4), dict(stages=3, rows=32)]
                runs = [("words", gemv_words, cfg) for cfg in cfgs]
                if m == 1 and dp4a_supported(dw):
                    runs += [("dp4a", gemv_dp4a, cfg) for cfg in
                             (dict(), dict(split_k=1, block_n=256, rows=16), dict(split_k=64, stages=4))]
                for name, fn, cfg in runs:
                    e = worst_rel(lambda: fn(x, dw, b, **cfg), ref)
                    ok = e <= (1e-3 if dtype == torch.float16 else 4e-3)
                    bad += not ok
                    log(f"  check {name} W{bits} g{gs} sym={sym} {str(dtype)[6:]} M={m} {cfg}: worst of 3 rel {e:.2e} "
                        f"{'ok' if ok else 'FAIL'}")
    log(f"check: {bad} failures")
    return bad


def sweep(n, k, m, grid, dws):
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    res = time_configs(lambda d, **cfg: gemv_words(x, d, None, **cfg), dws, grid)
    if res:
        log(f"  {n}x{k} M={m} first config {res[0][0]:7.2f} us {res[0][1]}")
    res.sort(key=lambda r: r[0])
    for us, cfg in res[:10]:
        log(f"  {n}x{k} M={m} words {us:7.2f} us {cfg}")
    fam = dispatch.choose(m, dws[0], "none", x.device) if m > 1 else "gemv_revsplitk"
    return bg.compare_row(n, k, m, x, dws, fam, "words", res)


def dp4a_sweep(n, k, dws):
    """gemv_dp4a (both kernels: activation split + dot) against the word GEMV's default."""
    x = torch.randn(1, k, device="cuda", dtype=torch.float16)
    c0 = dispatch.config("gemv_words", 1, dws[0], x.device)
    words = graph_us([lambda d=d: gemv_words(x, d, None, **c0) for d in dws], reps=20)
    sp0 = max(1, k // 2 // 64)
    grid = [dict(block_n=bn, rows=r, stages=st, split_k=sp) for bn in (256, 512) for r in (16, 32) for st in (3, 4)
            for sp in (max(sp0 // 2, 1), sp0, 2 * sp0)]
    res = time_configs(lambda d, **cfg: gemv_dp4a(x, d, None, **cfg), dws, grid)
    res.sort(key=lambda t: t[0])
    for us, cfg in res[:6]:
        log(f"  {n}x{k} M=1 dp4a {us:7.2f} us {cfg}")
    cub = bg.time_cublas(n, k, 1)
    fl, _ = bg.floor_us(n, k, 1, 4, 128)
    best = res[0][0]
    log(f"{n}x{k} M=1: cuBLAS {cub:.1f}  words {words:.1f} ({cub / words:.2f}x)  dp4a {best:.1f} ({cub / best:.2f}x, "
        f"{fl / best:.0%} of copy BW; floor {fl:.1f})")
    return dict(n=n, k=k, cublas=cub, words=words, dp4a=best, floor=fl, top=res[:8])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="14336x4096,4096x4096,4096x14336")
    ap.add_argument("--ms", default="1,2,4,8")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    ap.add_argument("--no-int8", action="store_true",
                    help="no effect: the int8 GEMM comparison moved to gpu_int8_probe.py (kept for old commands)")
    ap.add_argument("--dp4a", action="store_true", help="M = 1: gemv_dp4a sweep against the word GEMV default")
    ap.add_argument("--no-check", action="store_true", help="sweeps only (the correctness check takes minutes)")
    a = ap.parse_args()
    bg.section_env()
    res = {"env": bg.RESULTS["env"], "check_failures": None if a.no_check else check(), "sweep": []}
    for s in a.shapes.split(","):
        n, k = map(int, s.split("x"))
        dws = weights(n, k)
        if a.dp4a:
            res.setdefault("dp4a", []).append(dp4a_sweep(n, k, dws))
            continue
        for m in map(int, a.ms.split(",")):
            if m == 1:
                sp0 = dispatch.config("gemv_words", 1, dws[0], torch.device("cuda"))["split_k"]
                # register prefetch (the previous default) against words staged through shared
                # memory by the loop pipeliner (``stages``)
                grid = [dict(block_n=256, rows=16, split_k=sp0, num_warps=1, prefetch=True)]
                grid += [dict(block_n=bn, rows=r, split_k=sp, num_warps=1, stages=st)
                         for bn in (128, 256) for r in (16, 32) for st in (3, 4, 6)
                         for sp in (max(sp0 // 2, 1), sp0, 2 * sp0)]
            else:
                grid = [dict(block_n=bn, rows=r, split_k=sp, num_warps=nw, prefetch=True)
                        for bn in (64, 128, 256) for r in (8, 16) for nw in (1, 2) for sp in (8, 16, 32)]
            res["sweep"].append(sweep(n, k, m, grid, dws))
        del dws
    with open(os.path.join(a.out, "words_probe.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main()
