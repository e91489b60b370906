#!/usr/bin/env python3
"""int8-dynamic-activation kernels (``gemm_int8``, ``gemv_int8``) on a GPU: bit-exactness
against ``lowbit.quant.int8_linear_reference`` at realistic shapes, then launch-config sweeps
per shape and M for the two configs the e2e benchmark runs (a8w4 = W4 g32 symmetric, a8w8 =
W8 g128 symmetric), next to fp16 cuBLAS and the fp16 W4 g128 default. Method as
benchmarks/bench_gpu.py: one CUDA graph over weight copies > 4x L2, median of replays / copies.
Kernel rows time the kernel alone (activations quantized beforehand); "op" rows time the whole
int8 linear the dispatcher runs (quantization kernel included).

Usage: PYTHONPATH=. python3 benchmarks/gpu_int8_probe.py [--shapes 4096x4096] [--ms 1,4,16,32,64]
       [--baseline MODULE]   (a module with its own gemm_int8(xq, sx, w, bias, dtype, **cfg) to time too)
       [--group-dot]         (the default tile with group_dot off and on)
"""
import argparse
import importlib
import json
import os
import sys

import torch

sys.path.insert(0, "benchmarks")
import bench_gpu as bg  # noqa: E402
from bench_gpu import graph_us, log, make_weight, time_configs  # noqa: E402

from lowbit.backends.triton import ensure_kernels  # noqa: E402

ensure_kernels()
from lowbit.kernels import dispatch  # noqa: E402
from lowbit.kernels.act_quant import quantize_rows_int8  # noqa: E402
from lowbit.kernels.dequant import reference_linear  # noqa: E402
from lowbit.kernels.gemm import gemm_int8  # noqa: E402
from lowbit.kernels.gemv import gemv_int8  # noqa: E402

# (label, bits, group size, symmetric): the e2e configs
WEIGHTS = [("a8w4", 4, 32, True), ("a8w8", 8, 128, True)]


def check(n=4096, k=4096):
    """torch.equal against the reference for every case, M and a few configs, 3 calls each."""
    bad = 0
    cases = [(4, 32, True), (4, 128, False), (8, 128, True), (3, 64, False), (2, 32, True), (4, None, False)]
    for bits, gs, sym in cases:
        for dtype in (torch.float16, torch.bfloat16):
            codes, s, z, dw = make_weight(n, k, bits, gs, dtype, sym=sym)
            for m in (1, 2, 5, 16, 33, 64):
                x = torch.randn(m, k, device="cuda", dtype=dtype) * 3
                b = torch.randn(n, device="cuda", dtype=dtype)
                ref = reference_linear(x, codes, s, z, bits, b, act="int8")
                xq, sx = quantize_rows_int8(x)
                runs = [("gemm_int8", gemm_int8, dict(cfg, group_dot=gd)) for cfg in grid(m, quick=True) for gd in (False, True)]
                if m == 1:
                    runs += [("gemv_int8", gemv_int8, dict()), ("gemv_int8", gemv_int8, dict(groups_per_program=0))]
                for name, fn, cfg in runs:
                    ok = all(torch.equal(fn(xq, sx, dw, b, dtype, **cfg), ref) for _ in range(3))
                    bad += not ok
                    if not ok:
                        out = fn(xq, sx, dw, b, dtype, **cfg)
                        log(f"  FAIL {name} W{bits} g{gs} sym={sym} {str(dtype)[6:]} M={m} {cfg}: "
                            f"max abs diff {(out.float() - ref.float()).abs().max():.3e}")
            log(f"  check W{bits} g{gs} sym={sym}: done ({bad} failures so far)")
    log(f"check: {bad} failures")
    return bad


def grid(m, quick=False):
    bms = [16] if m <= 16 else ([16, 32] if m <= 32 else [32, 64])
    if quick:
        return [dict(block_m=bm, block_n=bn, block_k=bk, num_warps=4, num_stages=3)
                for bm in bms for bn, bk in ((32, 128), (64, 256))]
    return [dict(block_m=bm, block_n=bn, block_k=bk, num_warps=w, num_stages=st)
            for bm in bms for bn in (16, 32, 64) for bk in (128, 256) for w in (2, 4) for st in (3, 4)]


def copies(n, k, bits, gs):
    probe = make_weight(n, k, bits, gs, torch.float16, sym=True, real=False)[3]
    nbytes = probe.codes.numel() + 2 * probe.scales.numel()
    return [probe] + [make_weight(n, k, bits, gs, torch.float16, sym=True, real=False)[3]
                      for _ in range(bg.copies_for(nbytes) - 1)]


def sweep(n, k, m, baseline=None, group_dot_ab=False):
    row = dict(n=n, k=k, m=m, cublas=bg.time_cublas(n, k, m), w4g128_fp16=bg.time_lowbit(n, k, m, 4, 128)[0])
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    xq, sx = quantize_rows_int8(x)
    for label, bits, gs, _ in WEIGHTS:
        dws = copies(n, k, bits, gs)
        fam = dispatch.choose(m, dws[0], "int8", x.device)
        cfg = dispatch.config(fam, m, dws[0], x.device)
        op = graph_us([lambda d=d: dispatch.run_family(fam, x, d, None, **cfg) for d in dws])
        res = sorted(time_configs(lambda d, **c: gemm_int8(xq, sx, d, None, torch.float16, **c), dws, grid(m)),
                     key=lambda r: r[0])
        out = dict(op=op, op_family=fam, op_cfg=cfg, best=res[0][0] if res else None,
                   best_cfg=res[0][1] if res else None, top=[(u, c) for u, c in res[:5]])
        if m == 1:
            g = [dict(block_n=bn, block_k=128, groups_per_program=gp, num_warps=w, num_stages=st)
                 for bn in (32, 64, 128) for gp in (2, 4, 8) for w in (1, 2) for st in (2, 3)]
            gres = sorted(time_configs(lambda d, **c: gemv_int8(xq, sx, d, None, torch.float16, **c), dws, g),
                          key=lambda r: r[0])
            out["gemv_best"], out["gemv_best_cfg"] = (gres[0] if gres else (None, None))
        if group_dot_ab and fam == "gemm_int8":  # the default tile with and without group_dot
            for gd in (False, True):
                c = dict(cfg, group_dot=gd)
                out[f"group_dot_{gd}"] = graph_us([lambda d=d: gemm_int8(xq, sx, d, None, torch.float16, **c)
                                                   for d in dws])
        if baseline is not None:
            bcfg = {kk: v for kk, v in cfg.items() if kk != "group_dot"} if fam == "gemm_int8" else {}
            out["baseline"] = graph_us([lambda d=d: baseline.gemm_int8(xq, sx, d, None, torch.float16, **bcfg)
                                        for d in dws])
        row[label] = out
        log(f"{n}x{k} M={m} {label}: cuBLAS {row['cublas']:.1f}  fp16 W4g128 {row['w4g128_fp16']:.1f}  "
            f"op({fam}) {op:.1f}  gemm_int8 best {out['best']:.1f} {out['best_cfg']}"
            + (f"  gemv_int8 best {out['gemv_best']:.1f} {out['gemv_best_cfg']}" if m == 1 else "")
            + (f"  baseline {out['baseline']:.1f}" if baseline is not None else "")
            + (f"  group_dot off/on {out['group_dot_False']:.1f}/{out['group_dot_True']:.1f}" if "group_dot_True" in out else ""))
        del dws
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="4096x4096,6144x4096,28672x4096,4096x14336")
    ap.add_argument("--ms", default="1,4,16,32,64")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--baseline", default=None)
    ap.add_argument("--group-dot", action="store_true", help="also time the default tile with group_dot off and on")
    a = ap.parse_args()
    baseline = importlib.import_module(a.baseline) if a.baseline else None
    bg.section_env()
    res = {"env": bg.RESULTS["env"], "check_failures": None if a.no_check else check(), "sweep": []}
    for s in a.shapes.split(","):
        n, k = map(int, s.split("x"))
        for m in map(int, a.ms.split(",")):
            res["sweep"].append(sweep(n, k, m, baseline, a.group_dot))
            with open(os.path.join(a.out, "int8_probe.json"), "w") as f:
                json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main()
