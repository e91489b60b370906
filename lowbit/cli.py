"""The `lowbit` command: demo, info, autotune and bench."""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

__all__ = ["main"]


def _table(rows: list[tuple]) -> str:
    rows = [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for i, r in enumerate(rows):
        out.append("  ".join(c.rjust(w) if i and j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _time_ms(fn, iters: int, device) -> float:
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def demo_configs():
    import lowbit

    return [
        ("w8 g128", [lowbit.WeightOnlyConfig(bits=8, group_size=128)]),
        ("w4 g128", [lowbit.WeightOnlyConfig(bits=4, group_size=128)]),
        ("w4 g128 hqq", [lowbit.WeightOnlyConfig(bits=4, group_size=128, method="hqq")]),
        ("w3 g64 hqq", [lowbit.WeightOnlyConfig(bits=3, group_size=64, method="hqq")]),
        ("w2 g32 hqq", [lowbit.WeightOnlyConfig(bits=2, group_size=32, method="hqq")]),
        ("a8w4 g32", [lowbit.Int8DynamicActivationConfig(bits=4, group_size=32)]),
        ("w4 g128 + emb4", [lowbit.WeightOnlyConfig(bits=4, group_size=128), lowbit.EmbeddingConfig(bits=4, group_size=32)]),
    ]


def cmd_demo(args) -> int:
    import torch

    import lowbit
    from lowbit.models import build_model

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    torch.manual_seed(0)
    base = build_model(args.preset, seed=0, dtype=dtype, device=device)
    tokens = torch.randint(0, base.config.vocab, (args.batch, args.seq), device=device)

    def weight_bytes(m):
        total = 0
        for p in m.parameters():
            total += p.packed_nbytes if isinstance(p, lowbit.LowBitTensor) else p.numel() * p.element_size()
        return total

    with torch.no_grad():
        ref = base(tokens).float()
        t_ref = _time_ms(lambda: base(tokens), args.iters, device)
        rows = [("config", "backend", "weights MiB", "rel. error", "ms/forward", "speedup")]
        rows.append((str(dtype).removeprefix("torch.") + " (float)", "torch", f"{weight_bytes(base) / 2**20:.2f}", "0", f"{t_ref:.2f}", "1.00x"))
        for name, configs in demo_configs():
            model = copy.deepcopy(base)
            for cfg in configs:
                lowbit.quantize_(model, cfg)
            out = model(tokens).float()
            err = float((out - ref).norm() / ref.norm())
            t = _time_ms(lambda: model(tokens), args.iters, device)
            w = model.layers[0].mlp.w1.weight
            backend = lowbit.backends.select("linear", device.type, w.qweight(), dtype).name
            rows.append((name, backend, f"{weight_bytes(model) / 2**20:.2f}", f"{err:.4f}", f"{t:.2f}", f"{t_ref / t:.2f}x"))
    print(f"lowbit demo: preset={args.preset}, batch={args.batch}, seq={args.seq}, device={device}, dtype={dtype}")
    print(_table(rows))
    print("rel. error = ||logits - float logits|| / ||float logits||; time = median of", args.iters, "forwards")
    return 0


def cmd_info(args) -> int:
    import platform

    import torch

    import lowbit
    from lowbit import sysinfo

    print(f"lowbit {lowbit.__version__}  python {platform.python_version()}  torch {torch.__version__}  "
          f"triton {sysinfo.package_version('triton')}")
    print(f"CPU: {sysinfo.cpu_name()} ({platform.machine()}), {torch.get_num_threads()} torch threads")
    print(f"  ISA features: {', '.join(sysinfo.cpu_features()) or 'none detected'}")
    print(f"  torch CPU capability: {torch.backends.cpu.get_cpu_capability()}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(f"GPU {i}: {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs")
    else:
        print("GPU: none (torch.cuda.is_available() is False)")
    print("Backends (highest priority first):")
    for b in lowbit.registered_backends():
        ok = b.available()
        why = "" if ok else f" ({b.unavailable_reason() or 'unavailable'})"
        print(f"  {b.name:<12} priority {b.priority:>5}  devices {','.join(b.device_types):<22} {'available' if ok else 'NOT available'}{why}")
        try:
            lines = list(getattr(b, "describe", lambda: [])()) if ok else []
        except Exception as e:  # a backend's self-description must not take `info` down
            lines = [f"describe() failed: {type(e).__name__}: {e}"]
        for line in lines:
            print(f"      {line}")
    print(f"Cache dir: {sysinfo.cache_dir()}  (LOWBIT_CACHE_DIR overrides)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lowbit", description="Low-bit quantization kernels for PyTorch")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="quantize a built-in Llama-style model; print size, error and speed")
    d.add_argument("--preset", default="cpu-small",
                   help="model preset: cpu-small (default, ~0.2 B parameters: big enough for the kernels to matter), demo, tiny")
    d.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    d.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    d.add_argument("--batch", type=int, default=1)
    d.add_argument("--seq", type=int, default=16)
    d.add_argument("--iters", type=int, default=10)
    d.set_defaults(fn=cmd_demo)
    i = sub.add_parser("info", help="CPU ISA, GPU, available backends and kernels, cache paths")
    i.set_defaults(fn=cmd_info)
    from . import autotune

    autotune.add_parser(sub)
    bench = sub.add_parser("bench", help="benchmarks: kernels vs peers, e2e decode, tensor parallel")
    bsub = bench.add_subparsers(dest="bench_cmd", required=True)
    import importlib

    # each bench module adds its own subcommand; importing them is light (torch only)
    for name in ("kernels", "e2e", "tp"):
        importlib.import_module(f"{__package__}.bench.{name}").add_parser(bsub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
