"""The issue-3 bandwidth targets on a machine whose read bandwidth drifts: each pair is an int64
sum over a cold chunk of a 1 GiB huge-page buffer (as many bytes as the call reads), then one
lowbit int8-activation call on cold weights; the call's bytes/s over the sum's bytes/s is its
share of the read bandwidth *at that moment*. Pairs are binned by the sum's rate, so the
high-bandwidth phases (which come and go within seconds on the 2-core VM) are read separately.

    python benchmarks/cpu_phase_ratio.py [--shape 14336x4096] [--ms 1,4] [--bits 4] [--pairs 3000] [--json F]
                                         [--buffer-mib 1024]

Prints, per M and per bin of the sum's rate, the pair count and the medians of both rates and
of their ratio (the targets: >= 0.85 at M = 1, >= 0.70 at M = 4).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import bench_cpu as B
import lowbit
from lowbit.backends.cpu import _layout_buffer

BINS = (0.0, 35.0, 41.0, 50.0, float("inf"))  # GB/s edges of the sum's rate


def survey(backend, n: int, k: int, m: int, bits: int, pairs: int, big: torch.Tensor) -> list[tuple[float, float]]:
    nb = B.lowbit_bytes(n, k, bits, m)
    ws = B.lowbit_weights(n, k, bits, backend, B.copies_for(nb))
    x = torch.randn(m, k, dtype=torch.bfloat16)
    chunk = nb // 8 // 1024 * 1024
    nch = big.numel() // chunk
    for w in ws[:2]:  # warm-up: first-touch and code paths
        backend.linear(x, w, None)
    out = []
    for i in range(pairs):
        c = big[(i % nch) * chunk:(i % nch + 1) * chunk]
        t = time.perf_counter()
        c.sum()
        tp = time.perf_counter() - t
        t = time.perf_counter()
        backend.linear(x, ws[i % len(ws)], None)
        tk = time.perf_counter() - t
        out.append((chunk * 8 / tp / 1e9, nb / tk / 1e9))
    return out


def binned(pairs: list[tuple[float, float]]) -> list[dict]:
    rows = []
    for lo, hi in zip(BINS, BINS[1:]):
        sel = [(a, b) for a, b in pairs if lo <= a < hi]
        if sel:
            rows.append(dict(lo=lo, hi=hi, pairs=len(sel), read=statistics.median(a for a, _ in sel),
                             call=statistics.median(b for _, b in sel), ratio=statistics.median(b / a for a, b in sel)))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="14336x4096")
    ap.add_argument("--ms", default="1,4")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=3000)
    ap.add_argument("--json")
    ap.add_argument("--buffer-mib", type=int, default=1024, help="huge-page buffer the sums walk (>> L3)")
    a = ap.parse_args(argv)
    n, k = (int(v) for v in a.shape.split("x"))
    torch.manual_seed(0)
    backend = next(b for b in lowbit.registered_backends() if b.name == "cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {backend.ext.parallel_pool()}; "
          f"W{a.bits} g{B.GROUP} {n}x{k}, {a.pairs} pairs per M")
    big = _layout_buffer(a.buffer_mib << 20).view(torch.int64)
    big.fill_(1)
    result = dict(shape=[n, k], bits=a.bits, group=B.GROUP, threads=torch.get_num_threads(), ms={})
    for m in (int(v) for v in a.ms.split(",")):
        pairs = survey(backend, n, k, m, a.bits, a.pairs, big)
        rows = binned(pairs)
        result["ms"][m] = dict(bins=rows, pairs=[[round(r, 2), round(c, 2)] for r, c in pairs])
        for r in rows:
            print(f"M={m}  read {r['lo']:.0f}-{r['hi']:.0f} GB/s: {r['pairs']:5d} pairs  read {r['read']:.1f}  "
                  f"call {r['call']:.1f} GB/s  ratio {r['ratio']:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, separators=(",", ":"))  # compact: thousands of pairs


if __name__ == "__main__":
    main()
