#!/usr/bin/env python3
"""Host cost of dynamo's guards for one compiled decode step, per weight storage.

Every call of a ``torch.compile``d module first checks its guards on the host. A CUDA-graph
replay of a decode step is cheap on the host, so those checks can set the pace (the W4 8B
decode on an H100 enqueued a step in ~3.3 ms against ~0.2 ms for bf16: docs/benchmarks.md).
This builds a 32-layer decoder with the 8B model's structure but small dims, compiles it
(no CUDA graphs: guards are the same on any device) and times its guard check, for:

* ``bf16``: plain weights;
* ``w4-linear``: W4 g128, ``lowbit.unwrap_for_compile`` (plain Linears -> ``UnwrappedLinear``);
* ``w4-parametrize``: the same weights behind the parametrization every module used before
  (what ``unwrap_for_compile`` still does for other modules and DTensor shards).

Usage: PYTHONPATH=. python3 benchmarks/compile_guards.py [--layers 32] [--reps 200]
"""
import argparse
import inspect
import json
import time

import torch
from torch.nn.utils import parametrize

import lowbit
from lowbit import unwrap
from lowbit.models import LlamaConfig, TinyLlama


def guard_us(kind: str, layers: int, reps: int) -> tuple[float, int]:
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list  # private: the guard manager of a frame

    torch._dynamo.reset()
    cfg = LlamaConfig(vocab=1024, dim=256, n_layers=layers, n_heads=8, n_kv_heads=2, hidden=512, rope_theta=500000.0)
    model = TinyLlama(cfg).to(torch.bfloat16).fuse_projections()
    if kind != "bf16":
        lowbit.quantize_(model, lowbit.WeightOnlyConfig(bits=4, group_size=128))
        if kind == "w4-linear":
            lowbit.unwrap_for_compile(model)
        else:
            for m in model.modules():
                if isinstance(getattr(m, "weight", None), lowbit.LowBitTensor):
                    parametrize.register_parametrization(m, "weight", unwrap._Rebuild())
    model.setup_cache(1, 32)
    step = torch.compile(model, fullgraph=True)
    tok, pos = torch.randint(0, 1000, (1, 1)), torch.tensor([4])
    with torch.no_grad():
        step(tok, pos)
        entries = _debug_get_cache_entry_list(type(model).forward.__code__)
        if len(entries) != 1:
            raise RuntimeError(f"expected one compiled entry for the step, found {len(entries)}")
        gm = entries[0].guard_manager
        args = dict(zip(inspect.signature(type(model).forward).parameters, (model, tok, pos + 1)))
        if not gm.check(args):
            raise RuntimeError("the guards reject the timed call: the measurement would time an early exit")
        t0 = time.perf_counter()
        for _ in range(reps):
            gm.check(args)
        us = (time.perf_counter() - t0) / reps * 1e6
    n_inputs = sum(1 for _ in model.parameters())
    return us, n_inputs


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {a.layers} layers, fused q/k/v and gate/up")
    rows = []
    for kind in ("bf16", "w4-linear", "w4-parametrize"):
        us, n = guard_us(kind, a.layers, a.reps)
        rows.append(dict(kind=kind, guard_us=us, parameters=n))
        print(f"{kind:15s} guard check {us:8.1f} us a step  ({n} parameter tensors)", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(torch=torch.__version__, layers=a.layers, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
