#!/usr/bin/env python3
"""GPU check and benchmark of the Triton kernels (issue 4), in one process.

Sections (``--only`` picks some; default all):

* ``env``      versions, device, SMs, L2; measured copy bandwidth and dense fp16 rate
* ``check``    every family at realistic shapes: fp16/bf16 relative RMS error against an
               fp32 reference (<= 1e-3 and <= 2x torch's own same-dtype error), int8 paths
               bit-exact against the integer reference
* ``compile``  LowBitTensor models under torch.compile(fullgraph=True) and
               mode="reduce-overhead" (CUDA graphs, split-K replays) vs eager
* ``sweep``    launch configs per family on the headline shapes (tuning data)
* ``bench``    the table: lowbit (dispatch) vs fp16 cuBLAS vs tinygemm
               (``aten._weight_int4pack_mm``) vs GemLite when installed

Method (shared/PERFORMANCE.md): each op runs inside one CUDA graph over enough weight
copies to exceed 4x L2, median of >= 20 replays divided by the copies; floor = bytes /
measured copy bandwidth (and 2MNK / measured dense rate for large M).

Usage: ``PYTHONPATH=. python3 benchmarks/bench_gpu.py --out DIR [--only check,bench]``
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback

import torch
import torch.nn.functional as F

SHAPES = [(4096, 4096), (6144, 4096), (14336, 4096), (4096, 14336), (28672, 4096)]
MS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096]
TARGETS = {1: 3.0, 4: 2.8, 16: 2.5, 64: 1.5, 1024: 0.9}
RESULTS: dict = {}
LOG = None


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    if LOG:
        LOG.write(s + "\n")
        LOG.flush()


# ------------------------------------------------------------------------- helpers
def rel(out, ref):
    out, ref = out.float(), ref.float()
    if torch.isnan(out).any():
        return float("nan")
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def worst_rel(fn, ref, calls=3):
    """The worst ``rel`` of ``calls`` calls: a split-K race shows only now and then, and a bad
    call can leave the self-cleaning workspace dirty for the next."""
    return max(rel(fn(), ref) for _ in range(calls))


# (bits, group size (None: per channel), symmetric, quantizer): what the GEMM probes check
GEMM_CASES = [(4, 128, False, "minmax"), (4, 32, True, "minmax"), (4, None, False, "minmax"), (4, 64, False, "hqq"),
              (2, 128, False, "minmax"), (1, 128, False, "minmax"), (8, 128, True, "minmax"), (8, 128, False, "minmax")]


def check_gemm(run, configs_for, cases=GEMM_CASES, ms=(1, 3, 16, 33, 64), n=4096, k=4096):
    """Correctness of a GEMM launcher ``run(x, w, bias, **cfg)`` at a realistic shape: for each
    (bits, group, symmetric, method) case, fp16 and bf16, every M and every config
    ``configs_for(m)``, the worst of 3 calls against the fp32 reference (fp16: <= 1e-3; bf16:
    <= max(4e-3, 2x torch's own error on the same weights)). Returns the number of failures."""
    from lowbit import quant

    bad = 0
    for bits, gs, sym, method in cases:
        for dtype in (torch.float16, torch.bfloat16):
            codes, s, z, dw = make_weight(n, k, bits, gs, dtype, sym=sym, method=method)
            wh = quant.dequantize(codes, s, z, bits, torch.float32)
            for m in ms:
                x = torch.randn(m, k, device="cuda", dtype=dtype)
                b = torch.randn(n, device="cuda", dtype=dtype)
                ref = x.float() @ wh.T + b.float()
                torch_err = rel(F.linear(x, wh.to(dtype), b), ref)  # torch's own rounding, same weights
                tol = 1e-3 if dtype == torch.float16 else max(4e-3, 2 * torch_err)
                for cfg in configs_for(m):
                    e = worst_rel(lambda: run(x, dw, b, **cfg), ref)
                    bad += not e <= tol
                    log(f"  check W{bits} g{gs} sym={sym} {method} {str(dtype)[6:]} M={m} {cfg}: worst of 3 rel {e:.2e} "
                        f"(torch {torch_err:.1e}) {'ok' if e <= tol else 'FAIL'}")
    log(f"check: {bad} failures")
    return bad


def probe_main(name, check, sweep, shapes, ms, extra=()):
    """The command line of a GEMM probe: ``--shapes``, ``--ms``, ``--stages``, ``--no-check``,
    ``--out`` plus ``extra`` flags [(flag, help)]; runs ``check()`` unless skipped, then
    ``sweep(n, k, m, weight copies, stages, args)`` per shape and M, writing
    ``<out>/<name>.json`` after every row."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=shapes)
    ap.add_argument("--ms", default=ms)
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--stages", default="3", help="pipeline depths to sweep, e.g. 3,4,5")
    for flag, text in extra:
        ap.add_argument(flag, action="store_true", help=text)
    a = ap.parse_args()
    stages = tuple(map(int, a.stages.split(",")))
    section_env()
    res = {"env": RESULTS["env"], "check_failures": None if a.no_check else check(), "sweep": []}
    for s in a.shapes.split(","):
        n, k = map(int, s.split("x"))
        dws = weight_copies(n, k)
        for m in map(int, a.ms.split(",")):
            res["sweep"].append(sweep(n, k, m, dws, stages, a))
            with open(os.path.join(a.out, f"{name}.json"), "w") as f:
                json.dump(res, f, indent=1, default=str)
        del dws


def make_weight(n, k, bits, gs, dtype, sym=False, real=True, method="minmax"):
    """Returns (codes [N,K] uint8, scales, zeros, DeviceWeight) on cuda."""
    from lowbit import packing, quant
    from lowbit.kernels.layout import device_weight, make_layout

    if real:
        w = torch.randn(n, k, device="cuda", dtype=dtype) * 0.02
        codes, s, z = quant.quantize_weight(w, bits, gs, symmetric=sym, method=method)
    else:
        g = k // (gs or k)
        codes = torch.randint(0, 1 << bits, (n, k), device="cuda", dtype=torch.uint8)
        s = (torch.rand(n, g, device="cuda") * 0.01 + 1e-3).to(dtype)
        z = None if sym else torch.randint(0, 1 << bits, (n, g), device="cuda").to(dtype)
    layout = make_layout(packing.pack(codes, bits), s, z, bits)
    return codes, s, z, device_weight(layout, n, k, bits, gs or k, s.dtype, z is not None)


def weight_copies(n, k, bits=4, gs=128):
    """Random fp16-scaled DeviceWeights (random codes) enough to exceed 4x L2 together."""
    probe = make_weight(n, k, bits, gs, torch.float16, real=False)[3]
    nbytes = probe.codes.numel() + 2 * probe.scales.numel() * 2
    return [probe] + [make_weight(n, k, bits, gs, torch.float16, real=False)[3] for _ in range(copies_for(nbytes) - 1)]


def time_configs(run, dws, grid, reps=20):
    """[(us, cfg)] in grid order for ``run(d, **cfg)`` over the weight copies ``dws`` (one
    CUDA graph per config); a config the launcher rejects is logged and left out."""
    res = []
    for cfg in grid:
        try:
            res.append((graph_us([lambda d=d: run(d, **cfg) for d in dws], reps=reps), cfg))
        except Exception as e:
            log(f"  {cfg}: {type(e).__name__}: {str(e)[:120]}")
    return res


def compare_row(n, k, m, x, dws, fam, label, res):
    """One probe row: the best of a sweep ``res`` (sorted [(us, cfg)]) as ``label`` against
    family ``fam`` with its dispatch config, fp16 cuBLAS, tinygemm and the W4 g128 floor."""
    from lowbit.kernels import dispatch

    c = dict(dispatch.config(fam, m, dws[0], x.device))
    other = graph_us([lambda d=d: dispatch.run_family(fam, x, d, None, **c) for d in dws])
    cub = time_cublas(n, k, m)
    tg = time_tinygemm(n, k, m) if m <= 64 else float("nan")
    fl, _ = floor_us(n, k, m, 4, 128)
    best = res[0][0] if res else float("nan")
    log(f"{n}x{k} M={m}: cuBLAS {cub:.1f}  tinygemm {tg:.1f} ({cub / tg:.2f}x)  {fam} {other:.1f} ({cub / other:.2f}x)  "
        f"{label} {best:.1f} ({cub / best:.2f}x, {fl / best:.0%} of copy BW; floor {fl:.1f})")
    return dict(n=n, k=k, m=m, cublas=cub, tinygemm=tg, other_family=fam, other=other, floor=fl, **{label: best},
                top=[(u, c_) for u, c_ in res[:8]])


def graph_us(fns, reps=30):
    """Median µs per call of fns (one per weight copy), all captured in one CUDA graph."""
    from lowbit.bench.cases import time_cuda_graph

    return statistics.median(time_cuda_graph(fns, reps)[0])


def copies_for(nbytes):
    from lowbit.bench.cases import copies_for as _copies, l2_bytes

    return _copies(nbytes, l2_bytes())


# ------------------------------------------------------------------------- env
def section_env():
    p = torch.cuda.get_device_properties(0)
    import triton

    log(f"python {sys.version.split()[0]} torch {torch.__version__} triton {triton.__version__}")
    log(f"device {p.name} SMs {p.multi_processor_count} L2 {p.L2_cache_size / 2**20:.0f} MiB mem {p.total_memory / 2**30:.0f} GiB")
    from lowbit.bench.cases import copy_bandwidth, dense_fp16_rate

    bw = copy_bandwidth()
    rate = dense_fp16_rate()
    RESULTS["env"] = dict(device=p.name, sms=p.multi_processor_count, l2=p.L2_cache_size, copy_bw=bw, fp16_rate=rate,
                          torch=torch.__version__, triton=triton.__version__)
    log(f"copy bandwidth {bw / 1e12:.2f} TB/s (read+write, 1 GiB); dense fp16 {rate / 1e12:.0f} TFLOP/s")


# ------------------------------------------------------------------------- check
def section_check():
    from lowbit import quant
    from lowbit.kernels import dispatch

    fails = []
    n, k = 4096, 4096
    plan = []
    for fam, m in (("gemv", 1), ("gemv_splitk", 1), ("gemv_revsplitk", 1), ("gemm_splitk", 16),
                   ("gemm_splitk", 61), ("gemm", 300), ("dequant_cublas", 1024)):
        for bits in ((1, 2, 3, 4, 5, 6, 7, 8) if fam in ("gemv_revsplitk", "gemm_splitk", "gemm") and m != 61 else (4, 8)):
            if fam == "gemv_revsplitk" and bits == 8:
                continue
            plan.append((fam, m, bits, 128))
    # the single-plane families (the defaults at M = 1, 2-16 and 17-128 on sm_90) and the dp4a GEMV
    plan += [(fam, m, bits, 128) for fam, m in (("gemv_words", 1), ("gemm_pairs", 16), ("gemm_swap", 32),
                                                ("gemm_swap", 128)) for bits in (1, 2, 4, 8)]
    plan += [("gemv_dp4a", 1, 4, 128), ("gemm_swap", 64, 4, 32), ("gemm_pairs", 5, 4, None)]
    plan += [("gemv_revsplitk", 1, 4, 32), ("gemv_revsplitk", 1, 4, None), ("gemm_splitk", 8, 4, 256),
             ("gemm_splitk", 8, 3, None), ("gemm", 200, 4, 32), ("gemm", 200, 3, None)]
    for dtype in (torch.float16, torch.bfloat16):
        for fam, m, bits, gs in plan:
            if dtype == torch.bfloat16 and (bits != 4 or gs != 128):
                continue
            codes, s, z, dw = make_weight(n, k, bits, gs, dtype, sym=(bits == 8))
            x = torch.randn(m, k, device="cuda", dtype=dtype)
            bias = torch.randn(n, device="cuda", dtype=dtype)
            wh = quant.dequantize(codes, s, z, bits, torch.float32)
            ref = torch.addmm(bias.float(), x.float(), wh.t())
            torch_err = rel(F.linear(x, wh.to(dtype), bias), ref)
            try:
                out = dispatch.run_family(fam, x, dw, bias, **dispatch.config(fam, m, dw, x.device))
                torch.cuda.synchronize()
                err = rel(out, ref)
            except Exception as e:  # report, keep checking the rest
                err = float("nan")
                log(f"  {fam} raised {type(e).__name__}: {e}")
            # fp16: <= 1e-3 and <= 2x torch's own fp16 error; bf16: <= 2x torch's own bf16
            # error (bf16 output rounding alone is ~2e-3 RMS, so 1e-3 cannot hold for any kernel)
            ok = err <= 2 * torch_err and (dtype == torch.bfloat16 or err <= 1e-3)
            tag = f"{fam:15s} M={m:<5d} W{bits} gs={gs} {str(dtype)[6:]:8s} err {err:.2e} torch {torch_err:.2e} {'ok' if ok else 'FAIL'}"
            log("  " + tag)
            if not ok:
                fails.append(tag)
    for bits in (1, 2, 3, 4, 5, 6, 7, 8):
        for m in ((1, 16, 300) if bits == 4 else (1, 16)):
            for gs in ((128, 32, None) if bits == 4 else (128,)):
                codes, s, z, dw = make_weight(n, k, bits, gs, torch.float16, sym=(bits == 8))
                x = torch.randn(m, k, device="cuda", dtype=torch.float16) * 3
                bias = torch.randn(n, device="cuda", dtype=torch.float16)
                ref = quant.int8_linear_reference(x, codes, s, z, bits, bias, x.dtype)
                fam = dispatch.choose(m, dw, "int8")
                try:
                    out = dispatch.run_family(fam, x, dw, bias, **dispatch.config(fam, m, dw, x.device))
                    torch.cuda.synchronize()
                    exact = torch.equal(out, ref)
                    diff = (out.float() - ref.float()).abs().max().item()
                except Exception as e:
                    exact, diff = False, float("nan")
                    log(f"  {fam} raised {type(e).__name__}: {e}")
                tag = f"{fam:15s} M={m:<5d} W{bits} gs={gs} int8 {'exact' if exact else f'DIFF {diff:.3g}'}"
                log("  " + tag)
                if not exact:
                    fails.append(tag)
    RESULTS["check_failures"] = fails
    log(f"check: {len(fails)} failures")


# ------------------------------------------------------------------------- compile
def section_compile():
    from torch import nn

    import lowbit

    fails = []
    cfgs = [(lowbit.WeightOnlyConfig(bits=4, group_size=128), torch.float16),
            (lowbit.WeightOnlyConfig(bits=3, group_size=None), torch.bfloat16),
            (lowbit.Int8DynamicActivationConfig(bits=4, group_size=128), torch.float16)]
    for (cfg, dtype), bias in [(c, True) for c in cfgs] + [(cfgs[0], False)]:
        try:
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(1024, 2048, bias=bias), nn.GELU(), nn.Linear(2048, 1024, bias=bias))
            model = model.to("cuda", dtype).eval()
            lowbit.quantize_(model, cfg)
            fmt = model[0].weight.kernel_format
            exact = "int8" in type(cfg).__name__.lower()
            with torch.no_grad():
                ms = (1, 4, 33, 600)
                xs = {m: torch.randn(m, 1024, device="cuda", dtype=dtype) for m in ms}
                eager = {m: model(xs[m]) for m in ms}
                torch._dynamo.reset()
                cm = torch.compile(model, fullgraph=True)
                for m in ms:
                    e = rel(cm(xs[m]), eager[m])
                    if not e <= 1e-3:
                        fails.append(f"compile {cfg} {dtype} M={m} err {e:.2e}")
                torch._dynamo.reset()
                cg = torch.compile(model, mode="reduce-overhead", fullgraph=True)
                worst = 0.0
                for rep in range(3):
                    for m in ms:
                        x = torch.randn(m, 1024, device="cuda", dtype=dtype)  # fresh inputs each replay
                        y = cg(x).clone()
                        r = model(x)
                        e = 0.0 if torch.equal(y, r) else rel(y, r)
                        worst = max(worst, e)
                        if (exact and e != 0.0) or not e <= 1e-3:
                            fails.append(f"reduce-overhead {cfg} {dtype} M={m} rep {rep} err {e:.2e}")
            log(f"  {type(cfg).__name__}(bits={cfg.bits}, gs={cfg.group_size}) {str(dtype)[6:]} bias={bias} layout={fmt}: "
                f"fullgraph + reduce-overhead worst rel err vs eager {worst:.1e}")
        except Exception as e:
            w = model[0].weight
            fails.append(f"{cfg} {dtype} bias={bias}: {type(e).__name__}: {str(e)[:300]}")
            log(f"  {cfg} bias={bias} raised {type(e).__name__}: {str(e)[:300]}; weight inner tensors "
                f"{w.__tensor_flatten__()[0] if hasattr(w, '__tensor_flatten__') else type(w)}")
            log("    " + traceback.format_exc()[-1500:].replace(chr(10), chr(10) + "    "))
        torch._dynamo.reset()
    RESULTS["compile_failures"] = fails
    for f in fails:
        log("  FAIL " + f)
    log(f"compile: {len(fails)} failures")


# ------------------------------------------------------------------------- bench
def floor_us(n, k, m, bits, gs, has_z=True):
    env = RESULTS["env"]
    nbytes = n * k * bits / 8 + n * (k // gs) * 2 * (2 if has_z else 1) + m * k * 2 + m * n * 2
    mem = nbytes / env["copy_bw"] * 1e6
    comp = 2 * m * n * k / env["fp16_rate"] * 1e6
    return max(mem, comp), ("compute" if comp > mem else "memory")


def time_lowbit(n, k, m, bits, gs, family=None, cfg=None, dtype=torch.float16):
    from lowbit.kernels import dispatch

    probe = make_weight(n, k, bits, gs, dtype, real=False)[3]
    nbytes = probe.codes.numel() + 2 * probe.scales.numel() * probe.scales.element_size()
    dws = [probe] + [make_weight(n, k, bits, gs, dtype, real=False)[3] for _ in range(copies_for(nbytes) - 1)]
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    fam = family or dispatch.choose(m, probe, "none", x.device)
    c = dict(dispatch.config(fam, m, probe, x.device))
    c.update(cfg or {})
    us = graph_us([lambda d=d: dispatch.run_family(fam, x, d, None, **c) for d in dws])
    del dws
    return us, fam


def time_cublas(n, k, m):
    ws = [torch.randn(n, k, device="cuda", dtype=torch.float16) for _ in range(copies_for(2 * n * k))]
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    us = graph_us([lambda w=w: F.linear(x, w) for w in ws])
    del ws
    return us


def time_tinygemm(n, k, m, gs=128):
    try:
        ws = []
        for _ in range(copies_for(n * k // 2)):
            q = torch.randint(0, 256, (n, k // 2), device="cuda", dtype=torch.uint8)
            wp = torch.ops.aten._convert_weight_to_int4pack(q, 8)
            sz = (torch.rand(k // gs, n, 2, device="cuda") * 0.01).to(torch.bfloat16)
            ws.append((wp, sz))
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        us = graph_us([lambda w=w: torch.ops.aten._weight_int4pack_mm(x, w[0], gs, w[1]) for w in ws])
        del ws
        return us
    except Exception as e:
        log(f"  tinygemm unavailable: {type(e).__name__}: {str(e)[:120]}")
        return float("nan")


def time_gemlite(n, k, m, gs=128):
    try:
        import gemlite  # noqa: F401
    except ImportError:
        return float("nan")
    return float("nan")  # not installed on the device image so far; hook kept for when it is


def section_bench(shapes, ms, bits=4, gs=128):
    rows = []
    log(f"W{bits} g{gs} fp16 activations; µs per call (x faster than fp16 cuBLAS); floor = bytes/copy BW")
    log(f"{'N x K':>12s} {'M':>5s} {'cuBLAS':>8s} {'tinygemm':>15s} {'lowbit':>15s} {'family':>15s} {'floor':>7s} {'BW eff':>6s}")
    for n, k in shapes:
        for m in ms:
            try:
                cb = time_cublas(n, k, m)
                tg = time_tinygemm(n, k, m, gs) if m <= 256 else float("nan")
                lb, fam = time_lowbit(n, k, m, bits, gs)
                fl, kind = floor_us(n, k, m, bits, gs)
            except Exception as e:
                log(f"  {n}x{k} M={m} failed: {type(e).__name__}: {e}")
                traceback.print_exc()
                continue
            row = dict(n=n, k=k, m=m, cublas=cb, tinygemm=tg, lowbit=lb, family=fam, floor=fl, floor_kind=kind)
            rows.append(row)
            log(f"{n:>6d}x{k:<6d} {m:>5d} {cb:8.1f} {tg:7.1f} ({cb / tg:4.2f}) {lb:7.1f} ({cb / lb:4.2f}) {fam:>15s} "
                f"{fl:7.1f} {fl / lb:6.0%}")
    RESULTS.setdefault("bench", []).extend(rows)


def section_widths(n=14336, k=4096, ms=(1, 4, 16, 64)):
    """Other widths through the dispatch (group 128), vs fp16 cuBLAS."""
    rows = []
    log(f"{n}x{k}, group 128: µs (x fp16 cuBLAS), floor")
    for bits in (2, 3, 8):
        for m in ms:
            try:
                cb = time_cublas(n, k, m)
                lb, fam = time_lowbit(n, k, m, bits, 128)
                fl, _ = floor_us(n, k, m, bits, 128)
            except Exception as e:
                log(f"  W{bits} M={m} failed: {type(e).__name__}: {e}")
                continue
            rows.append(dict(bits=bits, m=m, cublas=cb, lowbit=lb, family=fam, floor=fl))
            if bits == 8 and m == 1:  # which family should serve 8-bit GEMV
                for f2, c2 in (("gemv_pipelined", dict(block_n=64, block_k=128, split_k=4, num_warps=2)),
                               ("gemv_pipelined", dict(block_n=32, block_k=128, split_k=8, num_warps=1)),
                               ("gemv_splitk", dict(block_n=32, block_k=64, split_k=8, num_warps=1)),
                               ("gemm_splitk", {})):
                    us, _ = time_lowbit(n, k, m, bits, 128, f2, c2)
                    log(f"    W8 M=1 alternative {f2} {c2}: {us:.1f} us")
            log(f"  W{bits} M={m:<4d} cuBLAS {cb:6.1f}  lowbit {lb:6.1f} ({cb / lb:4.2f}) {fam:15s} floor {fl:5.1f} ({fl / lb:4.0%})")
    RESULTS["widths"] = rows


def section_acts(n=14336, k=4096, ms=(1, 4, 16, 64, 1024)):
    """bf16 activations and int8 per-token activations (W4 g128) vs dense cuBLAS in the same
    dtype (int8 rows include the activation quantization, which runs as torch ops)."""
    from lowbit.kernels import dispatch

    rows = []
    log(f"{n}x{k} W4 g128: µs (x dense cuBLAS of the same activation dtype)")
    for act, dtype in (("bf16", torch.bfloat16), ("int8", torch.float16)):
        for m in ms:
            try:
                ws = [torch.randn(n, k, device="cuda", dtype=dtype) for _ in range(copies_for(2 * n * k))]
                x = torch.randn(m, k, device="cuda", dtype=dtype)
                cb = graph_us([lambda w=w: F.linear(x, w) for w in ws])
                del ws
                probe = make_weight(n, k, 4, 128, dtype, real=False)[3]
                dws = [probe] + [make_weight(n, k, 4, 128, dtype, real=False)[3]
                                 for _ in range(copies_for(probe.codes.numel()) - 1)]
                a = "int8" if act == "int8" else "none"
                fam = dispatch.choose(m, probe, a, x.device, x.dtype)
                cfg = dispatch.config(fam, m, probe, x.device)
                lb = graph_us([lambda d=d: dispatch.run_family(fam, x, d, None, **cfg) for d in dws])
                del dws
            except Exception as e:
                log(f"  {act} M={m} failed: {type(e).__name__}: {str(e)[:200]}")
                continue
            rows.append(dict(act=act, m=m, cublas=cb, lowbit=lb, family=fam))
            log(f"  {act:5s} M={m:<5d} cuBLAS {cb:7.1f}  lowbit {lb:7.1f} ({cb / lb:4.2f}) {fam}")
    RESULTS["acts"] = rows


def section_int8_sweep(n=14336, k=4096):
    """Launch configs of the int8-activation families (W4 g128)."""
    cands = {
        1: [dict(block_n=bn, block_k=128, groups_per_program=g, num_warps=w) for bn in (32, 64, 128)
            for g in (1, 2) for w in (1, 2, 4)],
        16: [dict(block_m=16, block_n=bn, block_k=128, num_warps=w) for bn in (32, 64, 128) for w in (4, 8)],
        64: [dict(block_m=bm, block_n=bn, block_k=128, num_warps=w) for bm in (32, 64) for bn in (64, 128)
             for w in (4, 8)],
    }
    out = []
    for m, cfgs in cands.items():
        fam = "gemv_int8" if m == 1 else "gemm_int8"
        best = None
        for cfg in cfgs:
            try:
                us, _ = time_lowbit(n, k, m, 4, 128, fam, cfg)
            except Exception as e:
                log(f"  {fam} {cfg} failed: {type(e).__name__}: {str(e)[:100]}")
                continue
            out.append(dict(n=n, k=k, m=m, family=fam, cfg=cfg, us=us))
            if best is None or us < best[0]:
                best = (us, cfg)
        if best:
            log(f"  best int8 {n}x{k} M={m}: {best[0]:.1f} µs {fam} {best[1]}")
    RESULTS["int8_sweep"] = out


def section_sweep(shapes, ms):
    """Configs per family; prints the best for each (shape, M)."""
    cands = {
        1: [("gemv_revsplitk", dict(block_n=bn, block_k=64, num_warps=nw, words=False)) for bn in (64, 128)
            for nw in (1, 2)]
           + [("gemv_pipelined", dict(block_n=bn, block_k=bk, split_k=sk, num_warps=nw)) for bn in (32, 64, 128, 256)
              for bk in (64, 128) for sk in (1, 2, 4, 8) for nw in (1, 2, 4)],
        4: [("gemm_splitk", dict(block_m=16, block_n=bn, block_k=bk, split_k=sk, num_warps=4, num_stages=2))
            for bn in (64, 128) for bk in (64, 128) for sk in (4, 8, 16)],
        32: [("gemm_splitk", dict(block_m=32, block_n=128, block_k=64, split_k=sk, num_warps=4, num_stages=2))
             for sk in (2, 4, 8)]
            + [("gemm", dict(block_m=bm, block_n=bn, block_k=64, num_warps=4, num_stages=3)) for bm in (32, 64)
               for bn in (64, 128)],
        256: [("gemm", dict(block_m=bm, block_n=bn, block_k=64, num_warps=4, num_stages=st)) for bm in (64, 128)
              for bn in (64, 128) for st in (2, 3)] + [("dequant_cublas", {})],
        16: [("gemm_splitk", dict(block_m=16, block_n=bn, block_k=bk, split_k=sk, num_warps=nw, num_stages=st))
             for bn in (64, 128) for bk in (64, 128) for sk in (4, 8, 16) for st in (1, 2) for nw in (4,)],
        64: [("gemm_splitk", dict(block_m=bm, block_n=bn, block_k=64, split_k=sk, num_warps=4, num_stages=st))
             for bm in (32, 64) for bn in (64, 128) for sk in (1, 2, 4) for st in (1, 2)]
            + [("gemm", dict(block_m=64, block_n=bn, block_k=64, num_warps=nw, num_stages=3)) for bn in (64, 128)
               for nw in (4, 8)],
        1024: [("gemm", dict(block_m=bm, block_n=bn, block_k=bk, num_warps=nw, num_stages=st)) for bm in (64, 128)
               for bn in (128, 256) for bk in (64,) for nw in (4, 8) for st in (3,)]
              + [("dequant_cublas", dict(block_k=bk, block_n=bn, num_warps=nw)) for bk in (32, 64, 128)
                 for bn in (64, 128, 256) for nw in (4, 8)],
        128: [("gemm_splitk", dict(block_m=64, block_n=128, block_k=64, split_k=sk, num_warps=4, num_stages=2))
              for sk in (1, 2, 4)] + [("dequant_cublas", {})],
    }
    out = []
    for n, k in shapes:
        for m in ms:
            best = None
            for fam, cfg in cands.get(m, []):
                try:
                    us, _ = time_lowbit(n, k, m, 4, 128, fam, cfg)
                except Exception as e:
                    log(f"  sweep {fam} {cfg} failed: {type(e).__name__}: {str(e)[:100]}")
                    continue
                out.append(dict(n=n, k=k, m=m, family=fam, cfg=cfg, us=us))
                if best is None or us < best[0]:
                    best = (us, fam, cfg)
            if best:
                log(f"  best {n}x{k} M={m}: {best[0]:.1f} µs {best[1]} {best[2]}")
    RESULTS["sweep"] = out


def main():
    global LOG
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/lowbit-bench"))
    ap.add_argument("--only", default="check,compile,sweep,bench,widths,acts")
    ap.add_argument("--shapes", default="all", help="'all' or 'NxK,NxK'")
    ap.add_argument("--ms", default=",".join(map(str, MS)))
    ap.add_argument("--sweep-shapes", default="14336x4096,4096x4096")
    ap.add_argument("--sweep-ms", default="1,4,16,64,1024")
    a = ap.parse_args()
    from lowbit.backends.triton import ensure_kernels

    ensure_kernels()  # a source checkout on PYTHONPATH has no lowbit.kernels mapping
    os.makedirs(a.out, exist_ok=True)
    LOG = open(os.path.join(a.out, "bench_gpu.log"), "a")
    parse = lambda s: [tuple(int(v) for v in t.split("x")) for t in s.split(",")]  # noqa: E731
    shapes = SHAPES if a.shapes == "all" else parse(a.shapes)
    only = a.only.split(",")
    section_env()
    for name in only:
        t0 = time.time()
        log(f"== {name}")
        try:
            if name == "check":
                section_check()
            elif name == "compile":
                section_compile()
            elif name == "int8sweep":
                section_int8_sweep()
            elif name == "acts":
                section_acts()
            elif name == "widths":
                section_widths()
            elif name == "sweep":
                section_sweep(parse(a.sweep_shapes), [int(v) for v in a.sweep_ms.split(",")])
            elif name == "bench":
                section_bench(shapes, [int(v) for v in a.ms.split(",")])
        except Exception:
            log(traceback.format_exc())
        log(f"== {name} done in {time.time() - t0:.0f} s")
        with open(os.path.join(a.out, "bench_gpu.json"), "w") as f:
            json.dump(RESULTS, f, indent=1, default=str)


if __name__ == "__main__":
    main()
