"""What ``lowbit bench kernels`` times: lowbit through its public path and each peer, built
at one shape, plus the machine facts the method needs (cache sizes, bandwidth, dense rate)
and the timers that rotate over weight copies.

A :class:`Case` holds ``copies`` independent weight copies (together larger than 4x the last
cache level, so every call reads its weight from memory, as a layer in a model does) and
makes one zero-argument callable per copy for a given activation ``x: [M, K]``. A builder
that cannot run here raises :class:`Unavailable` with the reason.

Peers: GPU fp16/bf16 cuBLAS (``F.linear``), tinygemm (``aten._weight_int4pack_mm``), GemLite
(``gemlite.helper.A16Wn``) and torchao (``Int4WeightOnlyConfig``) when installed; CPU dense
fp32/bf16 ``F.linear``, ``aten._weight_int4pack_mm_for_cpu``, ``aten._weight_int8pack_mm``.
Nothing heavy is imported at module import: triton, gemlite and torchao only inside the
builders that need them (the CPU path never imports triton).
"""
from __future__ import annotations

import copy
import itertools
import math
import mmap
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F

__all__ = ["Case", "Unavailable", "tensor_bytes", "l2_bytes", "l3_bytes", "copies_for", "read_bandwidth",
           "copy_bandwidth", "dense_fp16_rate", "time_cpu_blocks", "retime_disturbed", "time_cuda_graph",
           "build_lowbit", "build_dense", "build_tinygemm", "build_gemlite", "build_torchao",
           "build_torch_int4_cpu", "build_torch_int8_cpu", "ACT_DTYPES"]

# activation mode -> dtype of x (int8 activations are quantized per token inside the op,
# from fp16 on the GPU and bf16 on the CPU)
ACT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class Unavailable(Exception):
    """A case that cannot run here (package missing, bits or group size not supported...)."""


@dataclass
class Case:
    """One implementation at one shape, ready to time.

    impl: key ("lowbit", "fp16", "tinygemm", ...); label: the name in tables and plots;
    act: activation handling ("fp16", "bf16", "fp32", "int8"); x_dtype: dtype of x;
    bits / group_size: the weight format (16/32 and None for dense); weight_bytes: one copy
    as the kernel reads it; calls(x) -> one callable per copy; kernel(m) -> the kernel or
    family that serves M rows (lowbit only; "" for peers)."""

    impl: str
    label: str
    act: str
    x_dtype: torch.dtype
    bits: int
    group_size: Optional[int]
    weight_bytes: int
    copies: int
    calls: Callable[[torch.Tensor], list]
    kernel: Callable[[int], str] = field(default=lambda m: "")
    out_dtype: Optional[torch.dtype] = None  # default: x_dtype
    note: str = ""


# ---------------------------------------------------------------------------- machine facts
def tensor_bytes(t) -> int:
    """Bytes held by a tensor, counting the inner tensors of a wrapper subclass."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def l3_bytes() -> int:
    """Size of the CPU's last-level cache (sysfs index3, else 32 MiB)."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index3/size") as f:
            s = f.read().strip()
        return int(s[:-1]) * {"K": 1 << 10, "M": 1 << 20}[s[-1]]
    except (OSError, ValueError, KeyError):
        return 32 << 20


def l2_bytes() -> int:
    """L2 size of the current CUDA device."""
    return torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size


MAX_COPIES = 128  # tiny shapes stay cache-resident anyway; no point in thousands of copies


def copies_for(nbytes: int, cache: int) -> int:
    """Weight copies whose total bytes exceed 4x ``cache`` (at least 2, so consecutive calls
    never read the same weight; at most MAX_COPIES)."""
    return min(MAX_COPIES, max(2, math.ceil(4 * cache / max(nbytes, 1)) + 1))


def _huge_page_int64(count: int) -> Optional[torch.Tensor]:
    """int64 [count] on transparent huge pages (2 MiB-aligned anonymous mapping,
    madvise(MADV_HUGEPAGE) before first touch), or None where the OS offers no madvise."""
    huge = 2 << 20
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return None
    nbytes = count * 8
    mm = mmap.mmap(-1, nbytes + huge, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    whole = torch.frombuffer(mm, dtype=torch.uint8)
    start = -whole.data_ptr() % huge
    try:
        mm.madvise(mmap.MADV_HUGEPAGE, start, nbytes)
    except OSError:
        return None
    return whole[start:start + nbytes].view(torch.int64)


def read_bandwidth(nbytes: int = 1 << 30) -> float:
    """CPU read bandwidth in B/s: an int64 sum over ``nbytes`` with all torch threads, median
    of 5 after 2 warm-up sums; the better of a plain torch allocation (4 KiB pages) and one on
    transparent huge pages (a core streams up to ~30% more from DRAM on 2 MiB pages, and
    lowbit's CPU backend puts large packed weights there), so the floor is what the memory can
    deliver, not what one allocation got."""
    best = 0.0
    for huge in (False, True):
        x = _huge_page_int64(nbytes // 8) if huge else torch.empty(nbytes // 8, dtype=torch.int64)
        if x is None:
            continue
        x.fill_(1)
        for _ in range(2):
            x.sum()
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            x.sum()
            ts.append(time.perf_counter() - t)
        best = max(best, nbytes / statistics.median(ts))
        del x
    return best


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """GPU device-to-device copy bandwidth in B/s, counting bytes read + written."""
    a = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    a.random_()
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    ts = []
    for _ in range(10):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        b.copy_(a)
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) / 1e3)
    del a, b
    torch.cuda.empty_cache()
    return 2 * nbytes / statistics.median(ts)


def dense_fp16_rate(n: int = 8192) -> float:
    """Measured dense fp16 matmul rate in FLOP/s (an n^3 cuBLAS GEMM, median of 10)."""
    x = torch.randn(n, n, device="cuda", dtype=torch.float16)
    y = torch.randn(n, n, device="cuda", dtype=torch.float16)
    for _ in range(3):
        x @ y
    torch.cuda.synchronize()
    ts = []
    for _ in range(10):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        x @ y
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) / 1e3)
    del x, y
    torch.cuda.empty_cache()
    return 2 * n**3 / statistics.median(ts)


# ---------------------------------------------------------------------------- timers
def time_cpu_blocks(calls: Iterator[Callable], count: int, warmup_s: float = 0.02) -> list[float]:
    """One block of ``count`` timed calls after >= 2 warm-up calls lasting >= ``warmup_s``;
    returns microseconds. ``calls`` cycles over the weight copies (``itertools.cycle``) and
    keeps its place between blocks, so every copy is used in turn. The warm-up absorbs the
    hand-over from the previous op (OpenMP or lowbit pool workers still spinning); a block
    keeps the op in its steady state; the caller spreads several blocks over a run so slow
    phases of a shared machine hit all ops alike."""
    t0 = time.perf_counter()
    for i in itertools.count():
        next(calls)()
        if i >= 1 and time.perf_counter() - t0 >= warmup_s:
            break
    out = []
    for _ in range(count):
        f = next(calls)
        t = time.perf_counter()
        f()
        out.append((time.perf_counter() - t) * 1e6)
    return out


def retime_disturbed(blocks: list[list[float]], retime: Callable[[], list[float]], retries: int = 3,
                     factor: float = 2.0) -> int:
    """Replace, in place, the slowest block of one cell while its median exceeds ``factor`` x
    the fastest block's median (another process took a core for that block), at most
    ``retries`` times; ``retime()`` times a fresh block. Returns how many blocks were replaced."""
    done = 0
    while blocks and done < retries:
        meds = [statistics.median(b) for b in blocks]
        worst = max(range(len(blocks)), key=meds.__getitem__)
        if meds[worst] <= factor * min(meds):
            break
        blocks[worst] = retime()
        done += 1
    return done


def time_cuda_graph(fns: list, reps: int = 20) -> tuple[list[float], str]:
    """Microseconds per call of ``fns`` (one per weight copy), all captured in one CUDA
    graph: one value per replay (replay time / copies); the caller takes the median. Falls
    back to event timing of the same loop when capture fails; the second value says which
    ("" or a note)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up outside the graph: JIT, autotuning, workspaces
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    run, note = None, ""
    try:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for f in fns:
                f()
        run = g.replay
        run()
    except Exception as e:  # some peers cannot be captured: time the eager loop instead
        torch.cuda.synchronize()
        note = f"eager loop (graph capture failed: {type(e).__name__}: {str(e)[:120]})"

        def run():
            for f in fns:
                f()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3 / len(fns))
    return ts, note


# ---------------------------------------------------------------------------- lowbit
def _lowbit_config(act: str, bits: int, group_size: Optional[int]):
    import lowbit

    if act == "int8":
        return lowbit.Int8DynamicActivationConfig(bits=bits, group_size=group_size)
    return lowbit.WeightOnlyConfig(bits=bits, group_size=group_size)


def _kernel_namer(weight, x_dtype: torch.dtype, device: torch.device) -> Callable[[int], str]:
    """M -> what lowbit's dispatch runs: the Triton family on CUDA, the C++ kernel name on
    CPU, else the backend's name."""
    from lowbit import backends

    qw = weight.qweight()
    b = backends.select("linear", device.type, qw, x_dtype)
    if b.name == "triton":
        from lowbit.kernels import dispatch  # importable: the backend's available() ensured it

        dw = b.device_weight(qw)
        return lambda m: dispatch.choose(m, dw, qw.meta.act, device, x_dtype)
    if b.name == "cpu":
        return lambda m: b.kernel_name(m, qw.meta.act != "int8", x_dtype, qw.meta.bits)
    return lambda m: f"backend {b.name}"


def build_lowbit(n: int, k: int, bits: int, group_size: Optional[int], act: str, device: torch.device,
                 cache: int, direct: bool = False) -> list[Case]:
    """lowbit as users run it: ``lowbit.quantize_`` on an ``nn.Linear`` (random N(0, 0.02)
    weights), called as ``linear(x)``. act: "fp16"/"bf16"/"fp32" (WeightOnlyConfig) or
    "int8" (Int8DynamicActivationConfig, x in fp16 on GPU / bf16 on CPU). With ``direct``,
    also the selected backend's ``linear`` called on the same weights (kernel + its thin
    wrapper, without the tensor subclass and the custom op), to show the dispatch overhead."""
    import lowbit
    from lowbit import backends

    dtype = ACT_DTYPES.get(act) or (torch.float16 if device.type == "cuda" else torch.bfloat16)
    lin = torch.nn.Linear(k, n, bias=False, device=device, dtype=dtype)
    with torch.no_grad():
        lin.weight.normal_(0, 0.02)
    lowbit.quantize_(lin, _lowbit_config(act, bits, group_size), strict=True)
    w = lin.weight
    wbytes = tensor_bytes(w.kernel_data) if w.kernel_data is not None else w.packed_nbytes
    count = copies_for(wbytes, cache)
    lins = [lin] + [copy.deepcopy(lin) for _ in range(count - 1)]
    for m in lins:
        # a deepcopy's inner tensors carry bumped version counters, so its first call would
        # re-derive the layout (~18 ms at 4096x4096 on CPU): do it now, outside the timing
        m.weight.refresh_kernel_data()
    gs = group_size or k
    kind = "int8-dyn" if act == "int8" else "weight-only"
    namer = _kernel_namer(w, dtype, device)
    out = [Case("lowbit", f"lowbit W{bits} {act}", act, dtype, bits, gs, wbytes, count,
                lambda x: [lambda m=m: m(x) for m in lins], namer,
                note=f"{kind}, layout {w.kernel_format or 'canonical'}")]
    if direct:
        qws = [m.weight.qweight() for m in lins]
        b = backends.select("linear", device.type, qws[0], dtype)
        out.append(Case("lowbit-direct", f"lowbit W{bits} {act} ({b.name} backend call)", act, dtype, bits, gs,
                        wbytes, count, lambda x: [lambda q=q: b.linear(x, q, None) for q in qws], namer,
                        note=f"{kind}, backend {b.name}.linear called directly"))
    return out


# ---------------------------------------------------------------------------- dense
def build_dense(n: int, k: int, dtype: torch.dtype, device: torch.device, cache: int) -> Case:
    """Dense ``F.linear`` (cuBLAS on GPU, oneDNN/ATen on CPU)."""
    name = str(dtype).removeprefix("torch.").replace("float", "fp").replace("bfp16", "bf16")
    count = copies_for(n * k * dtype.itemsize, cache)
    ws = [torch.randn(n, k, device=device, dtype=dtype) * 0.02 for _ in range(count)]
    label = f"{name} cuBLAS" if device.type == "cuda" else f"{name} dense"
    return Case(name, label, name, dtype, dtype.itemsize * 8, None, n * k * dtype.itemsize, count,
                lambda x: [lambda w=w: F.linear(x, w) for w in ws])


# ---------------------------------------------------------------------------- GPU peers
_TINYGEMM_GROUPS = (32, 64, 128, 256)


def build_tinygemm(n: int, k: int, bits: int, group_size: int, cache: int) -> Case:
    """``aten._weight_int4pack_mm`` (bf16 activations, 4-bit, groups 32-256, bf16 scales+zeros)."""
    if bits != 4:
        raise Unavailable("4-bit only")
    if group_size not in _TINYGEMM_GROUPS:
        raise Unavailable(f"group size {group_size} not in {_TINYGEMM_GROUPS}")
    one = n * k // 2 + (k // group_size) * n * 2 * 2
    ws = []
    for _ in range(copies_for(one, cache)):
        q = torch.randint(0, 256, (n, k // 2), device="cuda", dtype=torch.uint8)
        wp = torch.ops.aten._convert_weight_to_int4pack(q, 8)
        sz = (torch.rand(k // group_size, n, 2, device="cuda") * 0.01).to(torch.bfloat16)
        ws.append((wp, sz))
    wbytes = tensor_bytes(ws[0][0]) + tensor_bytes(ws[0][1])
    return Case("tinygemm", "tinygemm W4", "bf16", torch.bfloat16, 4, group_size, wbytes, len(ws),
                lambda x: [lambda w=w: torch.ops.aten._weight_int4pack_mm(x, w[0], group_size, w[1]) for w in ws])


def build_gemlite(n: int, k: int, bits: int, group_size: int, cache: int) -> Case:
    """GemLite's fp16-activation, n-bit grouped weight layer (``gemlite.helper.A16Wn``;
    older releases: ``A16W{bits}``), random asymmetric codes, fp16 scales and zeros."""
    try:
        import gemlite
        from gemlite import helper
    except Exception as e:
        raise Unavailable(f"gemlite not importable ({type(e).__name__}: {e})") from None
    if bits not in (1, 2, 4, 8):
        raise Unavailable(f"GemLite packs 1/2/4/8 bits, not {bits}")

    def make():
        g = k // group_size
        wq = torch.randint(0, 1 << bits, (n, k), device="cuda", dtype=torch.uint8)
        s = (torch.rand(n, g, device="cuda") * 0.01 + 1e-3).half()
        z = torch.full((n, g), float(1 << (bits - 1)), device="cuda", dtype=torch.float16)
        if hasattr(helper, "A16Wn"):
            return helper.A16Wn(device="cuda", dtype=torch.float16).from_weights(
                wq, s, z, W_nbits=bits, group_size=group_size)
        return getattr(helper, f"A16W{bits}")(device="cuda").from_weights(wq, s, z, bias=None)

    try:
        first = make()
        first(torch.randn(1, k, device="cuda", dtype=torch.float16))  # fails here if its kernels cannot run
        wbytes = sum(tensor_bytes(t) for t in (getattr(first, a, None) for a in ("W_q", "scales", "zeros"))
                     if isinstance(t, torch.Tensor))
        layers = [first] + [make() for _ in range(copies_for(wbytes, cache) - 1)]
    except Exception as e:
        ver = getattr(gemlite, "__version__", "?")
        raise Unavailable(f"gemlite {ver}: {type(e).__name__}: {str(e)[:160]}") from None
    return Case("gemlite", f"GemLite W{bits}", "fp16", torch.float16, bits, group_size, wbytes, len(layers),
                lambda x: [lambda m=m: m(x) for m in layers], note=f"gemlite {getattr(gemlite, '__version__', '?')}")


def build_torchao(n: int, k: int, bits: int, group_size: int, cache: int) -> Case:
    """torchao's int4 weight-only path: ``torchao.quantization.quantize_`` with
    ``Int4WeightOnlyConfig(group_size)`` on a bf16 ``nn.Linear``; if the default packing
    cannot run here (it may need fbgemm-gpu-genai), the tinygemm-style
    ``int4_packing_format="tile_packed_to_4d"``."""
    if bits != 4:
        raise Unavailable("int4 only")
    try:
        import torchao
        from torchao.quantization import Int4WeightOnlyConfig, quantize_
    except Exception as e:
        raise Unavailable(f"torchao not importable ({type(e).__name__}: {e})") from None
    ver = getattr(torchao, "__version__", "?")
    attempts, errors = [("default", {}), ("tile_packed_to_4d", {"int4_packing_format": "tile_packed_to_4d"})], []
    x = torch.randn(2, k, device="cuda", dtype=torch.bfloat16)
    for name, kw in attempts:
        try:
            cfg = Int4WeightOnlyConfig(group_size=group_size, **kw)

            def make():
                lin = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16))
                with torch.no_grad():
                    lin[0].weight.normal_(0, 0.02)
                quantize_(lin, cfg)
                return lin

            first = make()
            first(x)  # fails here when the packing's kernel is missing
            wbytes = tensor_bytes(first[0].weight)
            layers = [first] + [make() for _ in range(copies_for(wbytes, cache) - 1)]
        except Exception as e:
            errors.append(f"{name}: {type(e).__name__}: {str(e)[:120]}")
            continue
        return Case("torchao", "torchao int4", "bf16", torch.bfloat16, 4, group_size, wbytes, len(layers),
                    lambda x: [lambda m=m: m(x) for m in layers],
                    note=f"torchao {ver}, Int4WeightOnlyConfig packing {name}")
    raise Unavailable(f"torchao {ver}: " + "; ".join(errors))


# ---------------------------------------------------------------------------- CPU peers
def build_torch_int4_cpu(n: int, k: int, bits: int, group_size: int, cache: int) -> Case:
    """``aten._weight_int4pack_mm_for_cpu`` (bf16 activations, 4-bit, bf16 scales+zeros;
    torchao's CPU int4 weight-only path)."""
    if bits != 4:
        raise Unavailable("4-bit only")
    if group_size not in _TINYGEMM_GROUPS:
        raise Unavailable(f"group size {group_size} not in {_TINYGEMM_GROUPS}")
    packs = []
    for _ in range(copies_for(n * k // 2, cache)):
        wp = torch.ops.aten._convert_weight_to_int4pack_for_cpu(torch.randint(0, 16, (n, k), dtype=torch.int32), 1)
        packs.append((wp, (torch.rand(k // group_size, n, 2) * 0.01).to(torch.bfloat16)))
    wbytes = tensor_bytes(packs[0][0]) + tensor_bytes(packs[0][1])
    return Case("torch-int4", "torch int4", "bf16", torch.bfloat16, 4, group_size, wbytes, len(packs),
                lambda x: [lambda p=p: torch.ops.aten._weight_int4pack_mm_for_cpu(x, p[0], group_size, p[1])
                           for p in packs])


def build_torch_int8_cpu(n: int, k: int, cache: int) -> Case:
    """``aten._weight_int8pack_mm`` (bf16 activations, int8 weights, per-channel bf16 scales)."""
    ws = [(torch.randint(-127, 128, (n, k), dtype=torch.int8), torch.rand(n, dtype=torch.bfloat16) * 0.01)
          for _ in range(copies_for(n * k, cache))]
    return Case("torch-int8", "torch int8", "bf16", torch.bfloat16, 8, None, n * k + n * 2, len(ws),
                lambda x: [lambda p=p: torch.ops.aten._weight_int8pack_mm(x, p[0], p[1]) for p in ws])
