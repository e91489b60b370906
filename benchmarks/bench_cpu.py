#!/usr/bin/env python3
"""CPU benchmark of the C++ kernels (issue 3): lowbit int8-activation x W{2,3,4,8} linear
against dense fp32/bf16 ``F.linear``, torch's int4 WOQ (``aten._weight_int4pack_mm_for_cpu``)
and int8 WOQ (``aten._weight_int8pack_mm``), all in one process on the same inputs.

Method (shared/PERFORMANCE.md): floor = bytes / measured read bandwidth, where bytes =
packed codes + bf16 group scales + bf16 activations + bf16 output, and the read bandwidth is
an int64 sum over 1 GiB with all threads, measured right before and right after each shape
(their mean is that shape's floor bandwidth: on a shared machine it drifts within minutes).
That sum runs on torch's 4 KiB pages, while the CPU backend puts its layouts on 2 MiB
transparent huge pages, from which one core streams ~30% more; so the same sum is also
measured on a huge-page buffer (the `THP GB/s` column and `W4 %THP`, the stricter floor).
Each op is timed as the median of >= 30 calls after 3 warm-up rounds, rotating over enough
weight copies to exceed 4x the L3 size (every call starts with a cold cache, as in a model),
in 3 passes over all ops (blocks of calls per op and M). lowbit is called through its
backend (kernel + the thin Python wrapper), with the default Int8DynamicActivationConfig layout (symmetric,
group 32, bf16 scales); torch's int4 kernel uses the same group size.

Usage:
    python benchmarks/bench_cpu.py                       # the full table (~2-4 min on 2 cores)
    python benchmarks/bench_cpu.py --shapes 4096x14336 --ms 1,4 --bits 4
    python benchmarks/bench_cpu.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

import lowbit
from lowbit import packing
from lowbit.bench import cases
from lowbit.meta import QuantMeta, QWeight

SHAPES = [(4096, 4096), (6144, 4096), (14336, 4096), (4096, 14336)]  # (N, K), Llama-3.1-8B
MS = [1, 4, 16, 64]
BITS = [2, 3, 4, 8]
GROUP = 32
WARMUP_S = 0.005  # warm-up time per block of calls (see bench_shape)


@dataclass
class Row:
    n: int
    k: int
    m: int
    bw: float = 0.0                                 # read bandwidth used for the floor, B/s
    bw_thp: float = 0.0                             # the same on 2 MiB pages, B/s
    floor_us: dict = field(default_factory=dict)  # bits -> floor
    us: dict = field(default_factory=dict)        # op name -> median us


def read_bandwidth(huge_pages: bool = False) -> float:
    """Bytes/s of an int64 sum over 1 GiB with all torch threads (median of 10), on torch's
    4 KiB pages or on 2 MiB transparent huge pages (where the CPU backend puts its layouts)."""
    if huge_pages:
        from lowbit.backends.cpu import _layout_buffer

        x = _layout_buffer(1 << 30).view(torch.int64)
        x.fill_(1)
    else:
        x = torch.ones((1 << 30) // 8, dtype=torch.int64)
    for _ in range(2):
        x.sum()
    ts = []
    for _ in range(10):
        t = time.perf_counter()
        x.sum()
        ts.append(time.perf_counter() - t)
    del x
    return (1 << 30) / statistics.median(ts)


def copies_for(nbytes: int) -> int:
    """Weight copies exceeding 4x L3 (shared with ``lowbit bench kernels``)."""
    return cases.copies_for(nbytes, cases.l3_bytes())


def lowbit_weights(n, k, bits, backend, count, act="int8"):
    """``count`` copies of a random symmetric group-GROUP weight with its CPU layout
    (act: "int8" for the int8 kernels, "none" for the weight-only ones)."""
    out = []
    for _ in range(count):
        codes = torch.randint(0, 1 << bits, (n, k), dtype=torch.uint8)
        scales = (torch.rand(n, k // GROUP) * 0.01 + 1e-3).to(torch.bfloat16)
        qw = QWeight(packing.pack(codes, bits), scales, None, QuantMeta(bits, GROUP, True, act=act), n, k)
        out.append(qw._replace(layout=backend.prepare(qw), layout_name=backend.name))
    return out


def lowbit_bytes(n, k, bits, m):
    return n * k // 8 * bits + n * (k // GROUP) * 2 + m * k * 2 + m * n * 2


def bench_shape(n, k, ms, bits_list, reps, backend, peers=True):
    """Time every op at every M for one shape (median of >= reps calls per cell)."""
    rows = [Row(n, k, m) for m in ms]
    xs = {m: torch.randn(m, k, dtype=torch.bfloat16) for m in ms}
    ops = {}  # name -> {m: [callables, one per weight copy]}

    if peers:
        for dt, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            ws = [torch.randn(n, k, dtype=dt) for _ in range(copies_for(n * k * (4 if dt == torch.float32 else 2)))]
            ops[name] = {m: [lambda w=w, x=xs[m].to(dt): F.linear(x, w) for w in ws] for m in ms}
        # torch int4 weight-only (group GROUP, bf16), as torchao's CPU int4 path calls it
        packs = []
        for _ in range(copies_for(n * k // 2)):
            wp = torch.ops.aten._convert_weight_to_int4pack_for_cpu(torch.randint(0, 16, (n, k), dtype=torch.int32), 1)
            packs.append((wp, torch.rand(k // GROUP, n, 2, dtype=torch.bfloat16)))
        ops["torch-int4"] = {m: [lambda p=p, x=xs[m]: torch.ops.aten._weight_int4pack_mm_for_cpu(x, p[0], GROUP, p[1])
                                 for p in packs] for m in ms}
        # torch int8 weight-only (per channel, bf16)
        w8 = [(torch.randint(-127, 128, (n, k), dtype=torch.int8), torch.rand(n, dtype=torch.bfloat16))
              for _ in range(copies_for(n * k))]
        ops["torch-int8"] = {m: [lambda p=p, x=xs[m]: torch.ops.aten._weight_int8pack_mm(x, p[0], p[1]) for p in w8]
                             for m in ms}
    for bits in bits_list:
        ws = lowbit_weights(n, k, bits, backend, copies_for(lowbit_bytes(n, k, bits, 1)))
        ops[f"W{bits}"] = {m: [lambda w=w, x=xs[m]: backend.linear(x, w, None) for w in ws] for m in ms}

    # Passes over the ops, each op timed in a block of calls after warm-up calls (at least
    # one, and at least WARMUP_S of them): a block keeps the op's steady state (right after
    # torch's own OpenMP kernels, their spinning workers would steal our second core for a
    # moment, and a core that idled runs slower for a few ms), several passes spread slow
    # phases of a shared machine over all ops. One warm-up call was too short for the
    # ~0.2-0.8 ms W2/W3 calls: their cells read 1.1-1.4x the steady time right after
    # torch-int8's block.
    passes = 3
    per_pass = math.ceil(reps / passes)
    times = {(name, m): [] for name in ops for m in ms}
    for _ in range(passes):
        for name, by_m in ops.items():
            for m in ms:
                fns = by_m[m]
                t_end = time.perf_counter() + WARMUP_S
                fns[0]()
                while time.perf_counter() < t_end:
                    fns[0]()
                for r in range(per_pass):
                    f = fns[r % len(fns)]
                    t = time.perf_counter()
                    f()
                    times[(name, m)].append(time.perf_counter() - t)
    for row in rows:
        for name in ops:
            row.us[name] = statistics.median(times[(name, row.m)]) * 1e6
    return rows


def fmt_table(rows, bits_list, peers):
    cols = (["fp32", "bf16", "torch-int4", "torch-int8"] if peers else []) + [f"W{b}" for b in bits_list]
    head = ["N x K", "M", *[f"{c} us" for c in cols]]
    if 4 in bits_list:
        head += ["GB/s", "W4 floor us", "W4 %BW", "THP GB/s", "W4 %THP", "W4 x bf16"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r.n}x{r.k}", str(r.m), *[f"{r.us[c]:.0f}" for c in cols]]
        if 4 in bits_list:
            w4 = r.us["W4"]
            thp = lowbit_bytes(r.n, r.k, 4, r.m) / r.bw_thp * 1e6 / w4 if r.bw_thp else 0.0
            cells += [f"{r.bw / 1e9:.1f}", f"{r.floor_us[4]:.0f}", f"{100 * r.floor_us[4] / w4:.0f}%",
                      f"{r.bw_thp / 1e9:.1f}", f"{100 * thp:.0f}%",
                      f"{r.us['bf16'] / w4:.2f}" if "bf16" in r.us else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(rows):
    """Issue-3 item 8, evaluated on this run."""
    out = []
    for r in rows:
        if "W4" not in r.us:
            continue
        eff = r.floor_us[4] / r.us["W4"]
        thp = f" ({100 * lowbit_bytes(r.n, r.k, 4, r.m) / r.bw_thp * 1e6 / r.us['W4']:.0f}% of the huge-page read)" if r.bw_thp else ""
        tag = f"{r.n}x{r.k} M={r.m}"
        if r.m == 1:
            ok = eff >= 0.85 and ("torch-int4" not in r.us or r.us["W4"] < r.us["torch-int4"])
            extra = f", torch-int4 {r.us['torch-int4']:.0f} us ({100 * r.floor_us[4] / r.us['torch-int4']:.0f}% of the W4 floor)" if "torch-int4" in r.us else ""
            out.append(f"[{'MET' if ok else 'NOT MET'}] W4 M=1 >= 85% BW and faster than torch int4: {tag}: {100 * eff:.0f}%{thp}{extra}")
            for b in (2, 3):
                if f"W{b}" in r.us:
                    want = lowbit_bytes(r.n, r.k, 4, 1) / lowbit_bytes(r.n, r.k, b, 1)
                    got = r.us["W4"] / r.us[f"W{b}"]
                    out.append(f"[{'MET' if got >= 0.9 * want else 'NOT MET'}] W{b} M=1 speedup over W4 {got:.2f}x vs bytes ratio {want:.2f}x: {tag}")
        if r.m == 4:
            out.append(f"[{'MET' if eff >= 0.70 else 'NOT MET'}] W4 M=4 >= 70% BW: {tag}: {100 * eff:.0f}%{thp}")
        if r.m == 64 and "bf16" in r.us:
            sp = r.us["bf16"] / r.us["W4"]
            out.append(f"[{'MET' if sp >= 1.5 else 'NOT MET'}] W4 M=64 >= 1.5x bf16 dense: {tag}: {sp:.2f}x")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default=",".join(f"{n}x{k}" for n, k in SHAPES), help="N x K list, e.g. 4096x14336")
    p.add_argument("--ms", default=",".join(map(str, MS)))
    p.add_argument("--bits", default=",".join(map(str, BITS)))
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-peers", action="store_true", help="lowbit only")
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    backend = next(b for b in lowbit.registered_backends() if b.name == "cpu")
    if not backend.available():
        raise SystemExit(f"the C++ CPU backend is unavailable: {backend.unavailable_reason()}")
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    ms = [int(v) for v in a.ms.split(",")]
    bits_list = [int(v) for v in a.bits.split(",")]
    torch.manual_seed(0)
    # the read bandwidth of this (shared) machine drifts by 2x within minutes, so each
    # shape's floor uses the mean of the measurements taken right before and right after it
    bws, bws_thp = [read_bandwidth()], [read_bandwidth(huge_pages=True)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, L3 {cases.l3_bytes() >> 20} MiB, "
          f"read bandwidth {bws[0] / 1e9:.1f} GB/s (int64 sum, 1 GiB), {bws_thp[0] / 1e9:.1f} GB/s on huge pages")
    for line in backend.describe():
        print("  " + line)
    rows = []
    for n, k in shapes:
        t = time.time()
        shape_rows = bench_shape(n, k, ms, bits_list, a.reps, backend, peers=not a.no_peers)
        bws.append(read_bandwidth())
        bws_thp.append(read_bandwidth(huge_pages=True))
        bw = (bws[-2] + bws[-1]) / 2
        for row in shape_rows:
            row.bw = bw
            row.bw_thp = (bws_thp[-2] + bws_thp[-1]) / 2
            for bits in bits_list:
                row.floor_us[bits] = lowbit_bytes(row.n, row.k, bits, row.m) / bw * 1e6
        rows += shape_rows
        print(f"  {n}x{k} done in {time.time() - t:.0f} s; read bandwidth before/after {bws[-2] / 1e9:.1f}/"
              f"{bws[-1] / 1e9:.1f} GB/s ({bws_thp[-2] / 1e9:.1f}/{bws_thp[-1] / 1e9:.1f} on huge pages)", flush=True)
    print()
    print(fmt_table(rows, bits_list, not a.no_peers))
    print()
    for line in targets(rows):
        print(line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"bandwidths": bws, "bandwidths_thp": bws_thp, "threads": torch.get_num_threads(), "rows": [asdict(r) for r in rows]}, f, indent=1)


if __name__ == "__main__":
    main()
