"""Timing, the way docs/ and PERFORMANCE.md say to: CPU median after warm-up; GPU median of
CUDA-graph replays, or of event-timed calls when a graph cannot be captured."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

__all__ = ["time_cpu", "time_cuda", "time_fn", "read_bandwidth_gbs", "copy_bandwidth_gbs"]


def time_cpu(fn: Callable[[], object], iters: int = 30, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in microseconds."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e6


def time_cuda(fn: Callable[[], object], iters: int = 20, warmup: int = 3, graph: bool = True) -> float:
    """Median time of ``fn()`` in microseconds on the current CUDA stream. With ``graph``,
    ``fn`` is captured once in a CUDA graph and each replay is timed with events."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    run = fn
    if graph:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        run = g.replay
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3)
    return statistics.median(ts)


def time_fn(fn: Callable[[], object], device: torch.device, **kw) -> float:
    return time_cuda(fn, **kw) if torch.device(device).type == "cuda" else time_cpu(fn, **kw)


def read_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    """CPU read bandwidth: an int64 sum over ``nbytes`` with all torch threads (GB/s)."""
    x = torch.ones(nbytes // 8, dtype=torch.int64)
    us = time_cpu(lambda: x.sum(), iters=5, warmup=1)
    return nbytes / us / 1e3


def copy_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    """GPU device-to-device copy bandwidth, counting bytes read + written (GB/s)."""
    a = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    us = time_cuda(lambda: b.copy_(a), iters=10, graph=False)
    return 2 * nbytes / us / 1e3
