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
    fused: bool  # q/k/v and gate/up fused into one Linear each (TinyLlama.fuse_projections)
    unwrapped: bool  # LowBitTensor weights stored as plain tensors for the compiled step (lowbit.unwrap_for_compile)
    tokens_per_s: float
    ms_per_step: float
    weight_gib: float
    # host time to enqueue a step (median window): close to ms_per_step means the host, not the
    # device, sets the pace (e.g. per-call Python work that CUDA graphs do not remove)
    host_ms_per_step: float = 0.0
    window_ms: list = field(default_factory=list)  # ms per step in each timed window (the median is reported)
    profile: list = field(default_factory=list)  # [kernel, us per step, launches per step], slowest first
    # attention of the cached steps: "kernel" (lowbit's, on CUDA) or "sdpa" (PyTorch's, with a slot mask)
    attention: str = "kernel"
    # bytes the weights hold on the device while timed: the canonical weights (weight_gib) plus
    # the device layouts the backends derived from them (kernel_data), which stay resident too
    resident_gib: float = 0.0


WARMUP = 8  # decode steps before timing: compilation, CUDA-graph warm-up and recording, clocks


def _weight_bytes(model, resident: bool = False) -> int:
    """Bytes of the weights: canonical (codes, scales, zeros; unwrapped weights are their parts,
    plain parameters), or ``resident``: plus the device layouts kept beside them (kernel_data)."""
    from lowbit import LowBitTensor

    total = 0
    for p in model.parameters():
        if not isinstance(p, LowBitTensor):
            total += p.numel() * p.element_size()
            continue
        total += p.packed_nbytes
        if resident and p.kernel_data is not None:
            total += p.kernel_data.numel() * p.kernel_data.element_size()
    return total


def run_config(preset: str, name: str, batch: int, device: str = "cuda", dtype=torch.bfloat16, prompt: int = 64,
               tokens: int = 32, compile: bool = True, seed: int = 0, profile: int = 0,
               unwrap: bool = True, fused: bool = True, attention: str = "kernel") -> E2EResult:
    """Build, quantize, prefill ``prompt`` tokens, run ``WARMUP`` decode steps, then time
    ``tokens`` more in up to 4 windows; per-step time is the median window's (a short
    hiccup in one window does not move it; the windows are in the result).

    ``fused``: q/k/v and gate/up as one Linear each, as serving engines run them (the same
    outputs: per-row quantization). ``unwrap`` (when compiling a quantized config): store the
    LowBitTensor weights as plain tensors first (:func:`lowbit.unwrap_for_compile`), so the
    host does not unwrap every weight on every step. ``profile > 0``: then run that many more steps under torch.profiler
    and keep the time per kernel (``E2EResult.profile``). ``attention``: "kernel" runs the cached
    steps' attention through lowbit's cache-attention kernel on CUDA (every config alike), "sdpa"
    through PyTorch's scaled_dot_product_attention with a slot mask."""
    if attention not in ("kernel", "sdpa"):
        raise ValueError(f"run_config: attention must be 'kernel' or 'sdpa', got {attention!r}")
    import lowbit
    from lowbit.models import build_model

    model = build_model(preset, seed=seed, dtype=dtype, device=device, fused=fused)
    model.attention_kernel = attention == "kernel"
    configs = _configs()[name]
    for cfg in configs:
        lowbit.quantize_(model, cfg)
    model.setup_cache(batch, prompt + WARMUP + tokens + 1)
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    wbytes = _weight_bytes(model)  # before unwrapping: afterwards the device layouts count too
    step = model
    unwrapped = compile and unwrap and bool(configs)
    if unwrapped:
        lowbit.unwrap_for_compile(model)
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
        window_ms, host_ms = [], []
        for w in range(nwin):
            steps = tokens // nwin + (w < tokens % nwin)
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                nxt = step(nxt, pos + i)[:, -1:].argmax(-1)
                i += 1
            t1 = time.perf_counter()  # the host has enqueued the window; the device may still run
            sync()
            window_ms.append((time.perf_counter() - t0) / steps * 1e3)
            host_ms.append((t1 - t0) / steps * 1e3)
        kernels = _profile_steps(lambda: step(nxt, pos + i)[:, -1:].argmax(-1), profile, dev.type == "cuda") if profile else []
    ms = statistics.median(window_ms)
    res = E2EResult(preset, name, batch, dev.type, str(dtype).removeprefix("torch."), prompt, tokens, compile,
                    fused, unwrapped, batch * 1e3 / ms, ms, wbytes / 2**30, statistics.median(host_ms), window_ms, kernels,
                    attention, _weight_bytes(model, resident=True) / 2**30)
    del model, step
    gc.collect()
    torch._dynamo.reset()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return res


def _profile_steps(run_step, steps: int, cuda: bool) -> list:
    """Time per kernel over ``steps`` calls of ``run_step`` as [name, us per step, launches per
    step]: device time of each CUDA kernel when the model runs on a GPU (kernels replayed inside
    CUDA graphs are recorded too), else the self CPU time of each op."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(steps):
            run_step()
        if cuda:
            torch.cuda.synchronize()
    want = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU
    rows = {}
    for e in prof.events():
        if e.device_type != want:
            continue
        us, n = rows.get(e.name, (0.0, 0))
        rows[e.name] = (us + (e.device_time if cuda else e.self_cpu_time_total), n + 1)
    return sorted(([k, us / steps, n / steps] for k, (us, n) in rows.items() if us > 0), key=lambda r: -r[1])


def _print_profile(kernels: list, ms_per_step: float, top: int = 25) -> None:
    busy = sum(r[1] for r in kernels)
    print(f"  busy {busy / 1e3:.3f} ms of {ms_per_step:.3f} ms per step; top kernels (us/step, share, launches/step):")
    for name, us, n in kernels[:top]:
        print(f"    {us:9.1f} us {us / max(busy, 1e-9) * 100:5.1f}%  {n:6.1f}x  {name[:110]}")


def main(args) -> int:
    dtype = getattr(torch, args.dtype)
    rows = []
    fused, unwrap = not getattr(args, "unfused", False), not getattr(args, "no_unwrap", False)
    attention = getattr(args, "attention", "kernel")
    print(f"# {args.preset}: {'fused' if fused else 'separate'} q/k/v and gate/up, "
          f"{'no compile' if args.no_compile else 'compiled' + (', quantized weights unwrapped' if unwrap else '')}, "
          f"cached attention: {attention if args.device == 'cuda' else 'sdpa'}")
    for batch in args.batch:
        base: Optional[float] = None
        for name in args.configs:
            r = run_config(args.preset, name, batch, args.device, dtype, args.prompt, args.tokens, not args.no_compile,
                           profile=getattr(args, "profile", 0), unwrap=unwrap, fused=fused, attention=attention)
            base = r.tokens_per_s if name == "bf16" else base
            rows.append(r)
            sp = f"{r.tokens_per_s / base:.2f}x" if base else "-"
            print(f"{r.preset} batch={batch:<3} {name:<7} {r.tokens_per_s:10.1f} tok/s  {r.ms_per_step:8.2f} ms/step  "
                  f"{r.weight_gib:6.2f} GiB ({r.resident_gib:.2f} resident)  {sp} vs bf16  (windows {' '.join(f'{x:.2f}' for x in r.window_ms)} ms; "
                  f"host {r.host_ms_per_step:.2f} ms/step)", flush=True)
            if r.profile:
                _print_profile(r.profile, r.ms_per_step)
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
    p.add_argument("--unfused", action="store_true",
                   help="separate q/k/v and gate/up Linears (default: fused, as serving engines run them)")
    p.add_argument("--no-unwrap", action="store_true",
                   help="compile the LowBitTensor weights as they are (the host unwraps each one every step)")
    p.add_argument("--attention", default="kernel", choices=["kernel", "sdpa"],
                   help="cached steps' attention on CUDA, for every config: lowbit's cache-attention kernel "
                        "(default) or PyTorch's SDPA with a slot mask (the runs before it)")
    p.add_argument("--json", default=None, help="write results here")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="after timing, profile STEPS more decode steps and print device time per kernel")

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
