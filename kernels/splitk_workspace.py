"""The self-cleaning split-K workspace shared by the word GEMV, the dp4a GEMV and the
column-pair GEMM.

Programs that split K add their partial [rows, cols] tile into a persistent fp32 buffer with
fire-and-forget ``atomic_add`` and count themselves in on an acq_rel counter per output tile;
the last one reads the sums, writes zeros back, adds the bias and stores the output
(``finish_tile``). Buffers and counters are zeroed once and every call leaves them zeroed, so
no memset or cast kernel runs per call and a CUDA-graph replay is correct.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# per device: fp32 sums and int32 counters, zeroed once, left zeroed by each call
_WS_FLOATS = 1 << 20
_WS_COUNTERS = 1 << 16
_workspaces: dict = {}


def workspace(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The split-K buffers of ``device``. Created eagerly by the Triton backend when a weight
    lands on the device (``prepare``), so they never come from a CUDA-graph pool (torch.compile's
    cudagraph trees reject live allocations they do not track). One pair per device: kernels on
    the same device run in stream order; two of these kernels running concurrently on different
    streams of one device would share them, which is not supported."""
    key = (device.type, device.index if device.index is not None else
           (torch.cuda.current_device() if device.type == "cuda" else 0))
    if key not in _workspaces:
        _workspaces[key] = (torch.zeros(_WS_FLOATS, dtype=torch.float32, device=device),
                            torch.zeros(_WS_COUNTERS, dtype=torch.int32, device=device))
    return _workspaces[key]


def split_buffers(device: torch.device, split_k: int, outputs: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(sums, counters, split_k) for a launch with ``outputs`` output elements in ``tiles``
    output tiles: ``split_k`` drops to 1 (no workspace use) when the problem does not fit."""
    ws, cnt = workspace(device)
    if split_k > 1 and (outputs > ws.numel() or tiles > cnt.numel()):
        split_k = 1
    return ws, cnt, split_k


@triton.jit
def finish_tile(ws_ptr, cnt_ptr, out_ptr, bias_ptr, tile, offs_m, offs_n, m_mask, N, SPLIT_K: tl.constexpr,
                HAS_BIAS: tl.constexpr):
    """After this program's relaxed ``atomic_add``s of its partial [rows, cols] tile into the
    workspace: count the program in (acq_rel counter ``tile``); the last of the ``SPLIT_K``
    programs reads the sums, writes zeros back, adds the bias, stores the output and resets
    the counter."""
    tl.debug_barrier()  # every thread's sums are issued before the program counts itself
    done = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
    if done == SPLIT_K - 1:
        n_mask = offs_n < N
        mn_mask = m_mask[:, None] & n_mask[None, :]
        off = offs_m[:, None] * N + offs_n[None, :]
        # the acquire above orders these L2 reads (.cg: never a stale L1 line) after every
        # program's sums; the zeros left behind serve the next call
        y = tl.load(ws_ptr + off, mask=mn_mask, other=0.0, cache_modifier=".cg")
        # Triton may give the load and the zero store different thread layouts, so one thread
        # could zero a sum before another has read it (it did: gemm_pairs split-K on an H100,
        # intermittently wrong); the barrier orders every read before any zeroing
        tl.debug_barrier()
        tl.store(ws_ptr + off, tl.zeros(y.shape, dtype=tl.float32), mask=mn_mask)
        if HAS_BIAS:
            y += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + off, y.to(out_ptr.dtype.element_ty), mask=mn_mask)
        tl.atomic_xchg(cnt_ptr + tile, 0)


@triton.jit
def store_tile(acc, ws_ptr, cnt_ptr, out_ptr, bias_ptr, tile, offs_m, offs_n, m_mask, N, SPLIT_K: tl.constexpr,
               HAS_BIAS: tl.constexpr):
    """Store a program's fp32 [rows, cols] tile: straight to the output (+ bias), or with
    ``SPLIT_K > 1`` into the workspace, the last program of the tile finishing it."""
    n_mask = offs_n < N
    mn_mask = m_mask[:, None] & n_mask[None, :]
    off = offs_m[:, None] * N + offs_n[None, :]
    if SPLIT_K > 1:
        tl.atomic_add(ws_ptr + off, acc, mask=mn_mask, sem="relaxed")
        finish_tile(ws_ptr, cnt_ptr, out_ptr, bias_ptr, tile, offs_m, offs_n, m_mask, N, SPLIT_K, HAS_BIAS)
    else:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + off, acc.to(out_ptr.dtype.element_ty), mask=mn_mask)
