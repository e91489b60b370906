#!/usr/bin/env python3
"""Where the host time of a compiled decode step goes (CUDA, mode="reduce-overhead").

The 8B decode at batch 1 enqueues a W4 step in ~3.3 ms of host time against ~0.2 ms for bf16
(docs/benchmarks.md), close to the step's device time. This builds the 8B-shaped decoder
with fewer layers, compiles it as ``lowbit bench e2e`` does, and reports per config: host
and device ms a step, how many ``lowbit::linear`` calls run Python per step (0 when the
CUDA graph replays them), and the top host functions of a cProfile of the timed steps.

Usage: TORCH_LOGS=cudagraphs PYTHONPATH=. python3 benchmarks/gpu_host_probe.py [--layers 8] [--configs bf16,w4g128]
"""
import argparse
import cProfile
import io
import pstats
import time

import torch

import lowbit
from lowbit import backends
from lowbit.bench.e2e import _configs
from lowbit.models import build_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--configs", default="bf16,w4g128")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-partition", action="store_true", help="torch._inductor.config.graph_partition = False")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of this script (no CUDA graphs)")
    a = ap.parse_args()
    if a.no_partition:
        import torch._inductor.config as ic

        ic.graph_partition = False
    from torch._inductor import scheduler

    reasons = {}
    if hasattr(scheduler.Scheduler, "should_partition"):  # log why Inductor cuts the CUDA graph
        orig = scheduler.Scheduler.should_partition

        def logged(self, node, *args, **kw):
            r = orig(self, node, *args, **kw)
            if r:
                key = (r, type(getattr(node, "node", None)).__name__)
                reasons[key] = reasons.get(key, 0) + 1
            return r

        scheduler.Scheduler.should_partition = logged
    print(f"torch {torch.__version__} graph_partition={torch._inductor.config.graph_partition}", flush=True)
    calls = [0]
    select = backends.select

    def counting_select(*args, **kw):
        calls[0] += 1
        return select(*args, **kw)

    backends.select = counting_select
    for name in a.configs.split(","):
        model = build_model("llama-3.1-8b", dtype=torch.bfloat16, device=a.device, n_layers=a.layers, fused=True)
        model.attention_kernel = a.device == "cuda"
        for cfg in _configs()[name]:
            lowbit.quantize_(model, cfg)
        model.setup_cache(a.batch, 64 + 3 * a.steps + 16)
        if _configs()[name]:
            lowbit.unwrap_for_compile(model)
        step = torch.compile(model, fullgraph=True, mode="reduce-overhead" if a.device == "cuda" else None)
        tok = torch.randint(0, 1000, (a.batch, 1), device=a.device)
        pos = torch.tensor([8], device=a.device)
        sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
        with torch.no_grad():
            for i in range(8):
                tok = step(tok, pos + i)[:, -1:].argmax(-1)
            sync()
            calls[0] = 0
            t0 = time.perf_counter()
            for i in range(a.steps):
                tok = step(tok, pos + 8 + i)[:, -1:].argmax(-1)
            t1 = time.perf_counter()
            sync()
            t2 = time.perf_counter()
            n_calls = calls[0]
            prof = cProfile.Profile()
            prof.enable()
            for i in range(a.steps):
                tok = step(tok, pos + 8 + a.steps + i)[:, -1:].argmax(-1)
            sync()
            prof.disable()
        print(f"partition reasons so far: {reasons}", flush=True)
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
        print(f"== {name} layers={a.layers} batch={a.batch}: host {(t1 - t0) / a.steps * 1e3:.3f} ms/step, "
              f"wall {(t2 - t0) / a.steps * 1e3:.3f} ms/step, backend selects per step {n_calls / a.steps:.1f}", flush=True)
        print("\n".join(s.getvalue().splitlines()[:45]), flush=True)
        del model, step
        torch._dynamo.reset()
        if a.device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
