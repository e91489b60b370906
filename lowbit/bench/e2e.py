"""End-to-end decode benchmark: a Llama-shaped decoder (random weights), prefill + decode with a
static KV cache and torch.compile, tokens/s per config and batch size.

    lowbit bench e2e --preset llama-3.1-8b --batch 1,16,32          (one GPU)
    lowbit bench e2e --preset cpu-small --batch 1,4 --device cpu     (2-core CPU)
"""
from __future__ import annotations

import gc
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

__all__ = ["E2EResult", "CONFIGS", "run_config", "main"]


def _configs():
    import lowbit

    return {
        "bf16": [],
        "w4g64": [lowbit.WeightOnlyConfig(bits=4, group_size=64)],
        "w4g128": [lowbit.WeightOnlyConfig(bits=4, group_size=128)],
        "w8": [lowbit.WeightOnlyConfig(bits=8, group_size=128)],
        "a8w4": [lowbit.Int8DynamicActivationConfig(bits=4, group_size=32)],
        "a8w8": [lowbit.Int8DynamicActivationConfig(bits=8, group_size=128)],
    }


CONFIGS = ("bf16", "w4g64", "w4g128", "w8", "a8w4", "a8w8")


@dataclass
class E2EResult:
    preset: str
    config: str
    batch: int
    device: str
    dtype: str
    prompt: int
    tokens: int
    compile: bool
    tokens_per_s: float
    ms_per_step: float
    weight_gib: float
    window_ms: list = field(default_factory=list)  # ms per step in each timed window (the median is reported)


WARMUP = 8  # decode steps before timing: compilation, CUDA-graph warm-up and recording, clocks


def _weight_bytes(model) -> int:
    from lowbit import LowBitTensor

    return sum(p.packed_nbytes if isinstance(p, LowBitTensor) else p.numel() * p.element_size() for p in model.parameters())


def run_config(preset: str, name: str, batch: int, device: str = "cuda", dtype=torch.bfloat16, prompt: int = 64,
               tokens: int = 32, compile: bool = True, seed: int = 0) -> E2EResult:
    """Build, quantize, prefill ``prompt`` tokens, run ``WARMUP`` decode steps, then time
    ``tokens`` more in up to 4 windows; per-step time is the median window's (a short
    hiccup in one window does not move it; the windows are in the result)."""
    import lowbit
    from lowbit.models import build_model

    model = build_model(preset, seed=seed, dtype=dtype, device=device)
    for cfg in _configs()[name]:
        lowbit.quantize_(model, cfg)
    model.setup_cache(batch, prompt + WARMUP + tokens + 1)
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    step = model
    if compile:
        mode = "reduce-overhead" if dev.type == "cuda" else None
        step = torch.compile(model, fullgraph=True, mode=mode)
    g = torch.Generator(device=device).manual_seed(seed)
    tok = torch.randint(0, model.config.vocab, (batch, prompt), device=device, generator=g)
    with torch.no_grad():
        logits = model(tok, torch.arange(prompt, device=device))  # prefill, eager
        nxt = logits[:, -1:].argmax(-1)
        pos = torch.tensor([prompt], device=device)
        for i in range(WARMUP):
            nxt = step(nxt, pos + i)[:, -1:].argmax(-1)
        i = WARMUP
        nwin = min(4, tokens)
        window_ms = []
        for w in range(nwin):
            steps = tokens // nwin + (w < tokens % nwin)
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                nxt = step(nxt, pos + i)[:, -1:].argmax(-1)
                i += 1
            sync()
            window_ms.append((time.perf_counter() - t0) / steps * 1e3)
    ms = statistics.median(window_ms)
    res = E2EResult(preset, name, batch, dev.type, str(dtype).removeprefix("torch."), prompt, tokens, compile,
                    batch * 1e3 / ms, ms, _weight_bytes(model) / 2**30, window_ms)
    del model, step
    gc.collect()
    torch._dynamo.reset()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return res


def main(args) -> int:
    dtype = getattr(torch, args.dtype)
    rows = []
    for batch in args.batch:
        base: Optional[float] = None
        for name in args.configs:
            r = run_config(args.preset, name, batch, args.device, dtype, args.prompt, args.tokens, not args.no_compile)
            base = r.tokens_per_s if name == "bf16" else base
            rows.append(r)
            sp = f"{r.tokens_per_s / base:.2f}x" if base else "-"
            print(f"{r.preset} batch={batch:<3} {name:<7} {r.tokens_per_s:10.1f} tok/s  {r.ms_per_step:8.2f} ms/step  "
                  f"{r.weight_gib:6.2f} GiB  {sp} vs bf16  (windows {' '.join(f'{x:.2f}' for x in r.window_ms)} ms)", flush=True)
            if args.json:  # after every row: a run cut off by a time limit keeps what it measured
                with open(args.json, "w") as f:
                    json.dump({"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                               "torch": torch.__version__, "results": [asdict(r) for r in rows]}, f, indent=1)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("e2e", help="decode tokens/s of a Llama-shaped model: bf16 vs lowbit configs")
    p.add_argument("--preset", default=None, help="model preset (default: llama-3.1-8b on GPU, cpu-small on CPU)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--batch", type=lambda s: [int(x) for x in s.split(",")], default=None, help="e.g. 1,16,32")
    p.add_argument("--configs", type=lambda s: s.split(","), default=list(CONFIGS), help=",".join(CONFIGS))
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--json", default=None, help="write results here")

    def run(args):
        cuda = torch.cuda.is_available()
        args.device = args.device or ("cuda" if cuda else "cpu")
        args.preset = args.preset or ("llama-3.1-8b" if args.device == "cuda" else "cpu-small")
        args.batch = args.batch or ([1, 16, 32] if args.device == "cuda" else [1, 4])
        unknown = [c for c in args.configs if c not in CONFIGS]
        if unknown:
            raise SystemExit(f"lowbit bench e2e: unknown config(s) {unknown}; choose from {','.join(CONFIGS)}")
        return main(args)

    p.set_defaults(fn=run)
