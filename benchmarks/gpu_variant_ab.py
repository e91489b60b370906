#!/usr/bin/env python3
"""A/B of a GEMM launcher against a modified copy of ``kernels/`` on a GPU, in one process.

How experiments on a kernel family are measured before they land (or are recorded as
rejected, docs/gpu_kernels.md): copy ``kernels/`` to a directory, apply the change (e.g. one
of the patches in ``docs/data/swap_variants/``), then

    PYTHONPATH=. python3 benchmarks/gpu_variant_ab.py --variant /tmp/var/kernels \
        [--family gemm_swap] [--shapes 28672x4096,...] [--ms 16,32,64] [--maxnreg 168]

It checks the variant's correctness (``bench_gpu.check_gemm``: fp16/bf16, widths 1/2/4/8,
groups, HQQ zeros, K splits) unless ``--no-check``, then times both launchers on the same
weight copies (CUDA graph over copies > 4x L2, median) with the dispatch config of the
family and a few K splits / tiles around it, and writes ``<out>/variant_ab.json``.
``--maxnreg`` also times the variant with those register caps (its launcher must accept
``maxnreg``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import torch

sys.path.insert(0, "benchmarks")
import bench_gpu as bg  # noqa: E402
from bench_gpu import log  # noqa: E402

from lowbit.backends.triton import ensure_kernels  # noqa: E402

ensure_kernels()
from lowbit.kernels import dispatch  # noqa: E402


def load_variant(path: str, family: str):
    """The launcher ``family`` of the kernels package copy at ``path`` (imported under its
    own name, so its relative imports resolve inside the copy)."""
    init = os.path.join(path, "__init__.py")
    spec = importlib.util.spec_from_file_location("lowbit_variant_kernels", init, submodule_search_locations=[path])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pkg
    spec.loader.exec_module(pkg)
    return getattr(importlib.import_module(f"{spec.name}.{family}"), family)


def grid(base: dict) -> list:
    """The dispatch config plus nearby tiles and K splits."""
    out = [base]
    for bn, nw in ((128, 4), (256, 8), (128, 8)):
        for sp in (1, 2, 4):
            g = dict(base, block_n=bn, num_warps=nw, split_k=sp)
            if g not in out:
                out.append(g)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", required=True, help="directory of the modified kernels/ copy")
    ap.add_argument("--family", default="gemm_swap")
    ap.add_argument("--shapes", default="28672x4096,14336x4096,4096x14336,4096x4096,6144x4096")
    ap.add_argument("--ms", default="16,32,64,128")
    ap.add_argument("--maxnreg", default="", help="register caps to time the variant with, e.g. 168,128")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    a = ap.parse_args()
    base = importlib.import_module(f"lowbit.kernels.{a.family}")
    old, new = getattr(base, a.family), load_variant(a.variant, a.family)
    caps = [None] + [int(c) for c in a.maxnreg.split(",") if c]
    bg.section_env()
    res = {"env": bg.RESULTS["env"], "variant": a.variant, "family": a.family, "rows": []}
    if not a.no_check:
        cfgs = lambda m: [dict(block_m=min(64, max(16, 1 << (m - 1).bit_length()))),  # noqa: E731
                          dict(block_m=16, split_k=4, num_warps=8, block_n=256)]
        res["check_failures"] = bg.check_gemm(new, cfgs, ms=(1, 3, 33, 64))
    for s in a.shapes.split(","):
        n, k = map(int, s.split("x"))
        dws = bg.weight_copies(n, k)
        for m in map(int, a.ms.split(",")):
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            configs = grid(dict(dispatch.config(a.family, m, dws[0], x.device)))
            row = dict(n=n, k=k, m=m, cublas=bg.time_cublas(n, k, m), floor=bg.floor_us(n, k, m, 4, 128)[0],
                       base=bg.time_configs(lambda d, **c: old(x, d, None, **c), dws, configs))
            line = [f"{n}x{k} M={m}: cuBLAS {row['cublas']:.1f} floor {row['floor']:.1f} | "
                    f"base default {row['base'][0][0]:.1f} best {min(r[0] for r in row['base']):.1f}"]
            for cap in caps:
                extra = {"maxnreg": cap} if cap else {}
                r = bg.time_configs(lambda d, **c: new(x, d, None, **extra, **c), dws, configs)
                row[f"variant_maxnreg_{cap}"] = r
                line.append(f"variant{'' if cap is None else f' maxnreg={cap}'} default {r[0][0]:.1f} "
                            f"best {min(u for u, _ in r):.1f}")
            log(" | ".join(line))
            res["rows"].append(row)
            with open(os.path.join(a.out, "variant_ab.json"), "w") as f:
                json.dump(res, f, indent=1, default=str)
        del dws


if __name__ == "__main__":
    main()
