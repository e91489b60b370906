"""``lowbit bench kernels``: lowbit's linear against every available peer, shape by shape,
in one process on the same inputs; µs, × the dense baseline, % of the memory floor; a table
per shape, JSON + CSV, and PNG plots.

    lowbit bench kernels                                      # GPU if present: Llama-3.1-8B linears
    lowbit bench kernels --device cpu --shapes 4096x14336 --ms 1,4
    python benchmarks/bench_kernels.py ...                    # the same, from a checkout

Method (shared/PERFORMANCE.md). GPU: each op runs inside one CUDA graph over enough weight
copies to exceed 4x L2, median of >= 20 replays divided by the copies; floor = max(bytes /
measured copy bandwidth (read + write, 1 GiB), 2MNK / measured dense fp16 rate). CPU: median of
>= 30 calls after warm-up (blocks of calls per op, in 3 passes over all ops; a block disturbed
by another process, median > 2x the cell's best block, is timed again), rotating over weight
copies exceeding 4x L3; floor = bytes / read bandwidth (int64 sum over 1 GiB, 4 KiB and huge
pages, the better; measured before and after each shape, mean). bytes = the weight as the kernel reads it (packed codes,
scales, zeros) + activations + output. lowbit runs through its public path (``quantize_`` on
an ``nn.Linear``, then ``linear(x)``), so the dispatch is the one users get.

Imports only torch at module import; triton (GPU only), gemlite, torchao and matplotlib are
imported inside the functions that need them.
"""
from __future__ import annotations

import argparse
import csv
import gc
import itertools
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from typing import Optional

import torch

from . import cases as C

DESCRIPTION = ("Time lowbit's linear (through quantize_ + nn.Linear) against every available peer on the same "
               "inputs: us per call, x the dense baseline, % of the memory floor; tables, JSON, CSV, PNG plots.")

__all__ = ["add_parser", "build_parser", "main", "cli", "SHAPES", "run_benchmark"]

# Llama-3.1-8B linears (N x K): q/o, fused qkv, gate/up, down, fused gate+up
SHAPES = [(4096, 4096), (6144, 4096), (14336, 4096), (4096, 14336), (28672, 4096)]
MS = {"cuda": [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096], "cpu": [1, 4, 16, 64]}
QUICK_MS = {"cuda": [1, 16, 1024], "cpu": [1, 16]}
GROUP = {"cuda": 128, "cpu": 32}
ACTS = {"cuda": ["fp16"], "cpu": ["int8", "bf16"]}
PEERS = {"cuda": ["fp16", "bf16", "tinygemm", "gemlite", "torchao"],
         "cpu": ["fp32", "bf16", "torch-int4", "torch-int8"]}
BASELINE = {"cuda": "fp16", "cpu": "bf16"}
REPS = {"cuda": 20, "cpu": 30}
CPU_PASSES = 3
CPU_RETRIES = 3     # re-timings of disturbed blocks per cell
DISTURBED = 2.0     # a block median this many times the cell's best block median is disturbed
# PERFORMANCE.md targets: GPU W4 g128 fp16 (x fp16 cuBLAS by M, M=1 % of copy bandwidth);
# CPU int8 activations x W4 (% of read bandwidth at M=1 and 4, x bf16 dense at M=64)
GPU_TARGET_X = {1: 3.0, 4: 2.8, 16: 2.5, 64: 1.5, 1024: 0.9}
CPU_TARGET_BW = {1: 0.85, 4: 0.70}
CPU_TARGET_X = {64: 1.5}

ROW_FIELDS = ["device", "n", "k", "m", "impl", "label", "act", "bits", "group_size", "us", "us_min", "samples",
              "x_base", "floor_us",
              "floor_kind", "pct_floor", "pct_bw", "bytes", "gbs", "bw_gbs", "kernel", "copies", "status", "note"]


# ---------------------------------------------------------------------------- arguments
def _shapes(s: str) -> list[tuple[int, int]]:
    out = []
    for tok in s.split(","):
        parts = tok.strip().lower().split("x")
        try:
            n, k = (int(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected NxK[,NxK...] (e.g. 4096x14336), got {tok!r}") from None
        if n <= 0 or k <= 0:
            raise argparse.ArgumentTypeError(f"N and K must be positive, got {tok!r}")
        if k % 8:
            raise argparse.ArgumentTypeError(f"K must be a multiple of 8 (packing), got {tok!r}")
        out.append((n, k))
    return out


def _ints(s: str, lo: int = 1, hi: Optional[int] = None) -> list[int]:
    try:
        vals = [int(v) for v in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    bad = [v for v in vals if v < lo or (hi is not None and v > hi)]
    if bad:
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise argparse.ArgumentTypeError(f"values must be {rng}, got {bad}")
    return vals


def _bits(s: str) -> list[int]:
    return _ints(s, 1, 8)


def _group(s: str) -> int:
    """Group size; 0 = per channel ('none')."""
    if s.lower() in ("none", "pc", "per-channel"):
        return 0
    try:
        g = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive multiple of 8 or 'none', got {s!r}") from None
    if g <= 0 or g % 8:
        raise argparse.ArgumentTypeError(f"must be a positive multiple of 8 or 'none' (per channel), got {g}")
    return g


def _list(choices):
    def parse(s: str) -> list[str]:
        vals = [v.strip() for v in s.split(",") if v.strip()]
        bad = [v for v in vals if v not in choices]
        if bad or not vals:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}; got {s!r}")
        return vals
    return parse


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--shapes", type=_shapes, default=None,
                   help="N x K list (default: Llama-3.1-8B " + ",".join(f"{n}x{k}" for n, k in SHAPES) + ")")
    p.add_argument("--ms", type=_ints, default=None,
                   help="batch sizes M (default GPU " + ",".join(map(str, MS["cuda"])) + "; CPU "
                   + ",".join(map(str, MS["cpu"])) + ")")
    p.add_argument("--bits", type=_bits, default=[4], help="weight bits 1-8, comma list (default 4)")
    p.add_argument("--group-size", type=_group, default=None,
                   help="default 128 on GPU, 32 on CPU; 'none' = per channel")
    p.add_argument("--act", type=_list(["fp16", "bf16", "fp32", "int8"]), default=None,
                   help="lowbit activation modes: fp16/bf16/fp32 = WeightOnlyConfig with that dtype, int8 = "
                   "Int8DynamicActivationConfig (default GPU fp16; CPU int8,bf16)")
    p.add_argument("--peers", default="all",
                   help="all (default), none, or a list from GPU " + ",".join(PEERS["cuda"]) + " / CPU "
                   + ",".join(PEERS["cpu"]) + "; the dense baseline (GPU fp16, CPU bf16) is always timed")
    p.add_argument("--reps", type=lambda s: _ints(s)[0], default=None,
                   help="timed replays (GPU, default 20) / calls (CPU, default 30) per cell")
    p.add_argument("--out", default=os.path.join("out", "bench-kernels"),
                   help="directory for kernels-<device>.json/.csv/*.png (default out/bench-kernels)")
    p.add_argument("--direct", action="store_true",
                   help="also time lowbit's backend call directly (no tensor subclass / custom op), "
                   "to show the dispatch overhead of the public path")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quick", action="store_true",
                   help="sanity run: 4096x4096 only, M 1,16 (GPU 1,16,1024), 10 reps, unless given explicitly")
    p.add_argument("--bw-mib", type=lambda s: _ints(s)[0], default=1024, help=argparse.SUPPRESS)  # tests: smaller probe


def _resolve(args, p: argparse.ArgumentParser):
    """Fill the per-device defaults and check the combination; errors name the argument."""
    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        p.error("argument --device: cuda requested but torch.cuda.is_available() is False")
    dev = args.device or ("cuda" if cuda else "cpu")
    args.device = dev
    args.shapes = args.shapes or (SHAPES[:1] if args.quick else list(SHAPES))
    args.ms = args.ms or (QUICK_MS[dev] if args.quick else MS[dev])
    args.reps = args.reps or (10 if args.quick else REPS[dev])
    if args.group_size is None:
        args.group_size = GROUP[dev]
    elif args.group_size == 0:  # 'none': one group per row
        args.group_size = None
    args.act = args.act or ACTS[dev]
    if dev == "cuda" and "fp32" in args.act:
        p.error("argument --act: the GPU kernels take fp16/bf16 activations (or int8 from fp16); fp32 is CPU only")
    known = PEERS[dev]
    if args.peers in ("all", ""):
        args.peers = list(known)
    elif args.peers == "none":
        args.peers = []
    else:
        args.peers = [v.strip() for v in args.peers.split(",") if v.strip()]
        bad = [v for v in args.peers if v not in known]
        if bad:
            p.error(f"argument --peers: {bad} are not peers on {dev}; choose from {','.join(known)} (or all/none)")
    for n, k in args.shapes:
        g = args.group_size
        if g is not None and k % g:
            p.error(f"argument --group-size: {g} does not divide K={k} of shape {n}x{k}")
    return args


# ---------------------------------------------------------------------------- facts
def _versions() -> dict:
    import lowbit
    from lowbit import sysinfo

    v = {"python": platform.python_version(), "torch": torch.__version__, "lowbit": lowbit.__version__}
    for pkg in ("triton", "gemlite", "torchao"):
        ver = sysinfo.package_version(pkg)  # metadata only: nothing is imported
        if ver != "not installed" or pkg == "triton":
            v[pkg] = ver
    return v


def _machine(dev: str) -> dict:
    from lowbit import sysinfo

    if dev == "cuda":
        p = torch.cuda.get_device_properties(torch.cuda.current_device())
        return {"device": p.name, "sms": p.multi_processor_count, "l2_bytes": p.L2_cache_size,
                "memory_gib": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    return {"device": f"{sysinfo.cpu_name()} ({torch.get_num_threads()} threads)", "cpu": sysinfo.cpu_name(),
            "threads": torch.get_num_threads(), "l3_bytes": C.l3_bytes(), "isa": sysinfo.cpu_features(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _command(args) -> str:
    """The run as one explicit command (every default resolved), to reproduce it."""
    parts = ["lowbit", "bench", "kernels", "--device", args.device,
             "--shapes", ",".join(f"{n}x{k}" for n, k in args.shapes), "--ms", ",".join(map(str, args.ms)),
             "--bits", ",".join(map(str, args.bits)),
             "--group-size", "none" if args.group_size is None else str(args.group_size),
             "--act", ",".join(args.act), "--peers", ",".join(args.peers) or "none", "--reps", str(args.reps),
             "--out", args.out]
    parts += [f for f, on in (("--direct", args.direct), ("--no-plots", args.no_plots)) if on]
    return shlex.join(parts)


# ---------------------------------------------------------------------------- building
def _builders(n, k, args, dev, cache):
    """(impl, bits, act, thunk -> Case) in timing order: baseline, other dense, peers, lowbit."""
    device = torch.device(dev)
    gs = args.group_size if args.group_size is not None else k
    out = []
    dense = [BASELINE[dev]] + [p for p in PEERS[dev] if p in args.peers and p in ("fp16", "bf16", "fp32")
                               and p != BASELINE[dev]]
    for name in dense:
        dt = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]
        out.append((name, dt.itemsize * 8, name, lambda dt=dt: C.build_dense(n, k, dt, device, cache)))
    for bits in args.bits:
        if dev == "cuda":
            peer = {"tinygemm": lambda b=bits: C.build_tinygemm(n, k, b, gs, cache),
                    "gemlite": lambda b=bits: C.build_gemlite(n, k, b, gs, cache),
                    "torchao": lambda b=bits: C.build_torchao(n, k, b, gs, cache)}
        else:
            peer = {"torch-int4": lambda b=bits: C.build_torch_int4_cpu(n, k, b, gs, cache)}
        for name, fn in peer.items():
            if name in args.peers:
                out.append((name, bits, "fp16" if name == "gemlite" else "bf16", fn))
    if dev == "cpu" and "torch-int8" in args.peers:
        out.append(("torch-int8", 8, "bf16", lambda: C.build_torch_int8_cpu(n, k, cache)))
    for bits in args.bits:
        for act in args.act:
            out.append(("lowbit", bits, act,
                        lambda b=bits, a=act: C.build_lowbit(n, k, b, args.group_size, a, device, cache,
                                                             args.direct)))
    return out


def _row(dev_name, n, k, m, case: C.Case, times, bw, rate, status="ok", note=""):
    """One measurement (median of ``times``, µs) with its floors. bw: B/s of the memory
    floor; rate: FLOP/s of the compute floor (GPU) or None."""
    us = statistics.median(times) if times else None
    xb = m * k * case.x_dtype.itemsize
    ob = m * n * (case.out_dtype or case.x_dtype).itemsize
    nbytes = case.weight_bytes + xb + ob
    mem = nbytes / bw * 1e6
    comp = 2 * m * n * k / rate * 1e6 if rate else 0.0
    floor = max(mem, comp)
    ok = us is not None and us > 0
    return {"device": dev_name, "n": n, "k": k, "m": m, "impl": case.impl, "label": case.label, "act": case.act,
            "bits": case.bits, "group_size": case.group_size, "us": us, "us_min": min(times) if times else None,
            "samples": len(times or ()), "x_base": None,
            "floor_us": floor, "floor_kind": "compute" if comp > mem else "memory",
            "pct_floor": floor / us if ok else None, "pct_bw": mem / us if ok else None, "bytes": nbytes,
            "gbs": nbytes / us / 1e3 if ok else None,  # bytes moved per second: needs no probe
            "bw_gbs": bw / 1e9, "kernel": case.kernel(m),
            "copies": case.copies, "status": status, "note": "; ".join(x for x in (case.note, note) if x)}


# ---------------------------------------------------------------------------- running
def _run_shape_cuda(n, k, args, env, log):
    rows, unavailable = [], []
    g = torch.Generator(device="cuda").manual_seed(0)
    xs = {m: torch.randn(m, k, device="cuda", generator=g) for m in args.ms}  # same inputs for every op
    for impl, bits, act, build in _builders(n, k, args, "cuda", env["cache_bytes"]):
        t0 = time.time()
        try:
            built = build()
        except C.Unavailable as e:
            unavailable.append({"n": n, "k": k, "impl": impl, "bits": bits, "act": act, "reason": str(e)})
            log(f"  {n}x{k} {impl} W{bits}: unavailable: {e}")
            continue
        except Exception as e:  # e.g. out of memory: report, keep going
            unavailable.append({"n": n, "k": k, "impl": impl, "bits": bits, "act": act,
                                "reason": f"build failed: {type(e).__name__}: {str(e)[:200]}"})
            log(f"  {n}x{k} {impl} W{bits}: build failed: {type(e).__name__}: {e}")
            torch.cuda.empty_cache()
            continue
        for case in built if isinstance(built, list) else [built]:
            for m in args.ms:
                x = xs[m].to(case.x_dtype)
                try:
                    ts, note = C.time_cuda_graph(case.calls(x), args.reps)
                    rows.append(_row(env["device"], n, k, m, case, ts, env["bw"], env["rate"], note=note))
                except Exception as e:
                    rows.append(_row(env["device"], n, k, m, case, None, env["bw"], env["rate"],
                                     status=f"failed: {type(e).__name__}: {str(e)[:200]}"))
                    torch.cuda.synchronize()
                del x
            log(f"  {n}x{k} {case.label}: {len(args.ms)} M in {time.time() - t0:.0f} s ({case.copies} copies)")
        del built, case
        gc.collect()
        torch.cuda.empty_cache()
    return rows, unavailable


def _run_shape_cpu(n, k, args, env, log):
    unavailable, built = [], []
    g = torch.Generator().manual_seed(0)
    xs = {m: torch.randn(m, k, generator=g) for m in args.ms}
    for impl, bits, act, build in _builders(n, k, args, "cpu", env["cache_bytes"]):
        try:
            res = build()
            built += res if isinstance(res, list) else [res]
        except C.Unavailable as e:
            unavailable.append({"n": n, "k": k, "impl": impl, "bits": bits, "act": act, "reason": str(e)})
            log(f"  {n}x{k} {impl} W{bits}: unavailable: {e}")
    bw_before = env["bw_now"]
    per_pass = math.ceil(args.reps / CPU_PASSES)
    blocks = {(i, m): [] for i in range(len(built)) for m in args.ms}  # one list of µs per block
    fns = {(i, m): itertools.cycle(c.calls(xs[m].to(c.x_dtype))) for i, c in enumerate(built) for m in args.ms}
    errors = {}
    t0 = time.time()
    for i, c in enumerate(built):  # touch every weight copy once (first calls, page faults)
        for f in c.calls(xs[args.ms[0]].to(c.x_dtype)):
            f()
    for _ in range(CPU_PASSES):
        for i in range(len(built)):
            for m in args.ms:
                if (i, m) in errors:
                    continue
                try:
                    blocks[(i, m)].append(C.time_cpu_blocks(fns[(i, m)], per_pass))
                except Exception as e:
                    errors[(i, m)] = f"failed: {type(e).__name__}: {str(e)[:200]}"
    # A block disturbed by another process (on 2 shared cores, a descheduled OpenMP thread
    # makes every call of the block wait a scheduler slice, ~8 ms) is timed again, up to
    # CPU_RETRIES times: a block whose median exceeds DISTURBED x the cell's fastest block median.
    retimed = {}
    for key, bl in blocks.items():
        if key not in errors:
            retimed[key] = C.retime_disturbed(bl, lambda key=key: C.time_cpu_blocks(fns[key], per_pass),
                                              CPU_RETRIES, DISTURBED)
    bw_after = C.read_bandwidth(args.bw_mib << 20)
    env["bw_now"] = bw_after
    bw = (bw_before + bw_after) / 2
    rows = []
    for i, c in enumerate(built):
        for m in args.ms:
            if (i, m) in errors:
                rows.append(_row(env["device"], n, k, m, c, None, bw, None, status=errors[(i, m)]))
            else:
                note = f"{retimed[(i, m)]} disturbed block(s) timed again" if retimed.get((i, m)) else ""
                rows.append(_row(env["device"], n, k, m, c, [t for b in blocks[(i, m)] for t in b], bw, None,
                                 note=note))
    log(f"  {n}x{k}: {len(built)} ops x {len(args.ms)} M in {time.time() - t0:.0f} s; read bandwidth "
        f"before/after {bw_before / 1e9:.1f}/{bw_after / 1e9:.1f} GB/s")
    del fns, built
    gc.collect()
    return rows, unavailable


def _fill_baseline(rows, dev):
    base = {(r["n"], r["k"], r["m"]): r["us"] for r in rows if r["impl"] == BASELINE[dev] and r["us"]}
    for r in rows:
        b = base.get((r["n"], r["k"], r["m"]))
        r["x_base"] = b / r["us"] if (b and r["us"]) else None


def _git_commit() -> Optional[str]:
    """HEAD of the checkout lowbit runs from (None for an installed wheel)."""
    import subprocess

    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (out.stdout.strip() + (" (modified tree)" if dirty else "")) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _loadavg() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def run_benchmark(args, log=print) -> dict:
    """Run every shape; returns the report dict (also what the JSON holds). ``args`` is the
    resolved namespace (see :func:`_resolve`)."""
    dev = args.device
    torch.manual_seed(0)
    env = {"device": None, "bw": None, "rate": None}
    if dev == "cuda":
        from lowbit.backends.triton import ensure_kernels

        ensure_kernels()  # a source checkout on PYTHONPATH has no lowbit.kernels mapping
        env["cache_bytes"] = C.l2_bytes()
        env["bw"] = C.copy_bandwidth(args.bw_mib << 20)
        env["rate"] = C.dense_fp16_rate()
        bw_desc = f"copy bandwidth {env['bw'] / 1e12:.2f} TB/s (read + write, {args.bw_mib} MiB); dense fp16 " \
                  f"{env['rate'] / 1e12:.0f} TFLOP/s"
    else:
        env["cache_bytes"] = C.l3_bytes()
        env["bw_now"] = C.read_bandwidth(args.bw_mib << 20)
        bw_desc = f"read bandwidth {env['bw_now'] / 1e9:.1f} GB/s at start (int64 sum, {args.bw_mib} MiB; " \
                  "each shape uses the mean of before/after)"
    machine = _machine(dev)
    env["device"] = machine["device"]
    versions = _versions()
    log(f"lowbit bench kernels on {machine['device']}: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    log(bw_desc)
    load0 = _loadavg()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    t0 = time.time()
    rows, unavailable = [], []
    for n, k in args.shapes:
        with torch.no_grad():  # inference, as a model's decode step runs
            r, u = (_run_shape_cuda if dev == "cuda" else _run_shape_cpu)(n, k, args, env, log)
        rows += r
        unavailable += u
    _fill_baseline(rows, dev)
    report = {
        "command": _command(args),
        "argv": shlex.join(sys.argv),  # as invoked (a script, pytest, ...)
        "started_utc": started, "git_commit": _git_commit(),
        "seconds": round(time.time() - t0, 1),
        "device_type": dev, "machine": machine, "versions": versions,
        # 1-minute load average before/after: above the thread count, something else ran
        "loadavg_1min": {"start": load0, "end": _loadavg()},
        "method": ("CUDA graph over weight copies > 4x L2, median of replays / copies" if dev == "cuda" else
                   f"median of calls after warm-up ({CPU_PASSES} passes of blocks, disturbed blocks timed "
                   "again), weight copies > 4x L3"),
        "bandwidth": ({"kind": "copy (read+write)", "gbs": env["bw"] / 1e9, "fp16_tflops": env["rate"] / 1e12}
                      if dev == "cuda" else
                      {"kind": "read (int64 sum)", "gbs_by_shape": {f"{r['n']}x{r['k']}": r["bw_gbs"] for r in rows}}),
        "baseline": BASELINE[dev],
        "args": {"shapes": [f"{n}x{k}" for n, k in args.shapes], "ms": args.ms, "bits": args.bits,
                 "group_size": args.group_size, "act": args.act, "peers": args.peers, "reps": args.reps,
                 "threads": torch.get_num_threads()},
        "rows": rows, "unavailable": unavailable,
    }
    report["targets"] = targets(report)
    return report


# ---------------------------------------------------------------------------- reporting
def _fmt_us(us) -> str:
    if us is None:
        return "-"
    return f"{us:.2f}" if us < 10 else (f"{us:.1f}" if us < 100 else f"{us:.0f}")


def _series(rows) -> list[str]:
    seen = []
    for r in rows:
        if r["label"] not in seen:
            seen.append(r["label"])
    return seen


def format_tables(report) -> str:
    """A markdown table per shape: µs (× baseline, % of floor) per implementation and M,
    then the kernel lowbit dispatched to."""
    rows, dev = report["rows"], report["device_type"]
    base = next((r["label"] for r in rows if r["impl"] == report["baseline"]), report["baseline"])
    out = []
    for n, k in dict.fromkeys((r["n"], r["k"]) for r in rows):
        rs = [r for r in rows if (r["n"], r["k"]) == (n, k)]
        series = _series(rs)
        lowbit = [s for s in series if s.startswith("lowbit") and "backend call" not in s]
        bw = rs[0]["bw_gbs"]
        floor = "max(bytes / copy BW, 2MNK / fp16 rate)" if dev == "cuda" else "bytes / read BW"
        out.append(f"{n}x{k} (N x K): µs per call (× {base}, % of floor); floor = {floor}, BW {bw:.1f} GB/s")
        head = ["M", *series, *[f"{s} kernel" for s in lowbit]]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for m in dict.fromkeys(r["m"] for r in rs):
            by = {r["label"]: r for r in rs if r["m"] == m}
            cells = [str(m)]
            for s in series:
                r = by.get(s)
                if r is None or r["us"] is None:
                    cells.append("-" if r is None else "failed")
                    continue
                x = f"{r['x_base']:.2f}×" if r["x_base"] else "-"
                cells.append(f"{_fmt_us(r['us'])} ({x}, {100 * r['pct_floor']:.0f}%)")
            cells += [by[s]["kernel"] if s in by else "-" for s in lowbit]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    for u in report["unavailable"]:
        out.append(f"unavailable: {u['impl']} W{u['bits']} at {u['n']}x{u['k']}: {u['reason']}")
    for r in rows:
        if r["status"] != "ok":
            out.append(f"{r['label']} {r['n']}x{r['k']} M={r['m']}: {r['status']}")
    return "\n".join(out).rstrip()


def targets(report) -> list[str]:
    """PERFORMANCE.md's targets, evaluated on this run's lowbit rows."""
    out = []
    for r in report["rows"]:
        if r["impl"] != "lowbit" or r["us"] is None or r["bits"] != 4:
            continue
        tag = f"{r['n']}x{r['k']} M={r['m']} {r['label']}"
        if report["device_type"] == "cuda" and r["act"] == "fp16" and r["group_size"] == 128:
            if r["m"] == 1:
                ok = r["pct_bw"] >= 0.85
                out.append(f"[{'MET' if ok else 'NOT MET'}] M=1 >= 85% of copy bandwidth: {tag}: "
                           f"{100 * r['pct_bw']:.0f}%")
            want = GPU_TARGET_X.get(r["m"])
            if want and r["x_base"]:
                out.append(f"[{'MET' if r['x_base'] >= want else 'NOT MET'}] >= {want}x fp16 cuBLAS: {tag}: "
                           f"{r['x_base']:.2f}x")
        if report["device_type"] == "cpu" and r["act"] == "int8":
            want = CPU_TARGET_BW.get(r["m"])
            if want:
                ok = r["pct_bw"] >= want
                out.append(f"[{'MET' if ok else 'NOT MET'}] >= {100 * want:.0f}% of read bandwidth: {tag}: "
                           f"{100 * r['pct_bw']:.0f}%")
            want = CPU_TARGET_X.get(r["m"])
            if want and r["x_base"]:
                out.append(f"[{'MET' if r['x_base'] >= want else 'NOT MET'}] >= {want}x bf16 dense: {tag}: "
                           f"{r['x_base']:.2f}x")
    return out


def write_files(report, out_dir: str, plots: bool = True) -> list[str]:
    """kernels-<device>.json / .csv (and two PNGs) under ``out_dir``; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"kernels-{report['device_type']}")
    paths = [stem + ".json", stem + ".csv"]
    with open(paths[0], "w") as f:
        json.dump(report, f, indent=1)
    meta = {"command": report["command"], "torch": report["versions"]["torch"],
            "lowbit": report["versions"]["lowbit"]}
    with open(paths[1], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=ROW_FIELDS + list(meta))
        w.writeheader()
        for r in report["rows"]:
            w.writerow({**{k: ("" if r[k] is None else r[k]) for k in ROW_FIELDS}, **meta})
    if plots:
        paths += plot(report, stem)
    return paths


def plot(report, stem: str) -> list[str]:
    """(a) × baseline vs M and (b) % of memory bandwidth vs M, one panel per shape, one line
    per implementation; log2 M axis. Returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = [r for r in report["rows"] if r["us"]]
    shapes = list(dict.fromkeys((r["n"], r["k"]) for r in rows))
    if not shapes:
        return []
    base = next((r["label"] for r in rows if r["impl"] == report["baseline"]), report["baseline"])
    series = _series(rows)
    colors = {s: plt.cm.tab10(i % 10) for i, s in enumerate(series)}
    out = []
    for key, ylabel, fname, ref in (("x_base", f"× {base} (higher is faster)", "speedup", 1.0),
                                    ("pct_bw", "% of memory bandwidth (floor / time)", "bandwidth", 100.0)):
        ncol = min(3, len(shapes))
        nrow = math.ceil(len(shapes) / ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(4.3 * ncol, 3.1 * nrow + 0.7), squeeze=False)
        for ax, (n, k) in zip(axes.flat, shapes):
            for s in series:
                pts = [(r["m"], r[key]) for r in rows if (r["n"], r["k"]) == (n, k) and r["label"] == s and r[key]]
                if pts:
                    ms, ys = zip(*pts)
                    ys = [100 * y for y in ys] if key == "pct_bw" else ys
                    ax.plot(ms, ys, marker="o", ms=3, lw=2.2 if s.startswith("lowbit") else 1.2, color=colors[s],
                            label=s)
            ax.axhline(ref, color="grey", lw=0.8, ls="--")
            ax.set_xscale("log", base=2)
            ms_here = sorted({r["m"] for r in rows if (r["n"], r["k"]) == (n, k)})
            ax.set_xticks(ms_here, [str(m) for m in ms_here])
            ax.xaxis.set_minor_locator(ticker.NullLocator())
            if key == "x_base":
                ax.set_yscale("log", base=2)
                ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_title(f"{n}x{k}", fontsize=9)
            ax.set_xlabel("M", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(shapes):]:
            ax.axis("off")
        axes[0][0].set_ylabel(ylabel, fontsize=8)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7, frameon=False)
        fig.suptitle(f"lowbit bench kernels: {report['machine']['device']}", fontsize=9)
        fig.tight_layout(rect=(0, 0.1 if nrow == 1 else 0.06, 1, 1))
        path = f"{stem}-{fname}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        out.append(path)
    return out


# ---------------------------------------------------------------------------- entry points
def main(args) -> int:
    """Run with a resolved namespace, print the tables, write the files."""
    report = run_benchmark(args)
    print()
    print(format_tables(report))
    if report["targets"]:
        print()
        print("\n".join(report["targets"]))
    la = report["loadavg_1min"]
    threads = torch.get_num_threads()
    print(f"\nload average (1 min) at start/end: {la['start']}/{la['end']} ({threads} torch threads)")
    if args.device == "cpu" and max(la["start"] or 0, la["end"] or 0) > threads + 0.5:
        print("WARNING: other processes were running (load above the thread count): times and the bandwidth "
              "probe may be disturbed; rerun on a quiet machine before quoting numbers")
    paths = write_files(report, args.out, plots=not args.no_plots)
    print()
    print("wrote " + ", ".join(paths))
    return 0


def add_parser(sub) -> None:
    """Add ``kernels`` to the ``lowbit bench`` subcommands."""
    p = sub.add_parser("kernels", help="kernel microbenchmarks: lowbit vs peers, roofline, plots",
                       description=DESCRIPTION)
    _add_arguments(p)
    p.set_defaults(fn=lambda args, p=p: main(_resolve(args, p)))


def build_parser(prog: str = "bench_kernels.py") -> argparse.ArgumentParser:
    """A standalone parser with the same flags (benchmarks/bench_kernels.py)."""
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    _add_arguments(p)
    p.set_defaults(fn=lambda args, p=p: main(_resolve(args, p)))
    return p


def cli(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)
