"""Reverse split-K GEMV (M = 1) for packed widths (1-7 bits).

Family: instead of one program walking K for its columns, every program does the least
work that still amortizes a scale load: exactly two adjacent ``BK`` tiles of one group
(pruning rule ``2 * BK <= group_size``, with ``group_size % (2 * BK) == 0``), sharing one
scale/zero load, and adds its partial sum into an fp32 workspace with ``atomic_add``.
The grid is ``(N / BN, K / (2 * BK))``: many small programs keep enough loads in flight
to approach copy bandwidth at M = 1. The launcher zeroes the workspace inside the op (safe
under CUDA graphs) and casts it (+ bias) to the output dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .layout import DeviceWeight, tile_k
from .unpack import gemv_tile, gemv_tile_words, load_group_params

# tiles per program: the two share one scale/zero load
TILES_PER_PROGRAM = 2


@triton.jit
def _revsplitk_words(
    x_ptr, q_ptr, s_ptr, z_ptr, out_ptr, N, K, GS, pid_n, pid_k,
    W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, E: tl.constexpr, BITS: tl.constexpr,
    HAS_Z: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr,
):
    BKE: tl.constexpr = BK // E
    BNW: tl.constexpr = BN // 4  # 32-bit words (4 columns each) per program
    offs_w = pid_n * BNW + tl.arange(0, BNW)
    w_mask = offs_w < N // 4
    offs_j = tl.arange(0, BKE)
    k0 = pid_k * (2 * BK)
    d0 = tl.zeros([BKE, BNW], dtype=tl.float32)
    d1 = d0
    d2 = d0
    d3 = d0
    xs = tl.zeros([BKE], dtype=tl.float32)
    d0, d1, d2, d3, xs = gemv_tile_words(d0, d1, d2, d3, xs, x_ptr, q_ptr, N, K, k0, offs_j, offs_w, w_mask,
                                         W0, W1, W2, E, BKE, BNW)
    d0, d1, d2, d3, xs = gemv_tile_words(d0, d1, d2, d3, xs, x_ptr, q_ptr, N, K, k0 + BK, offs_j, offs_w, w_mask,
                                         W0, W1, W2, E, BKE, BNW)
    sx = tl.sum(xs, axis=0)
    for c in tl.static_range(4):
        if c == 0:
            d = tl.sum(d0, axis=0)
        elif c == 1:
            d = tl.sum(d1, axis=0)
        elif c == 2:
            d = tl.sum(d2, axis=0)
        else:
            d = tl.sum(d3, axis=0)
        cols = 4 * offs_w + c
        s, z = load_group_params(s_ptr, z_ptr, k0 // GS, N, cols, w_mask, HAS_Z, BITS)
        tl.atomic_add(out_ptr + cols, s * (d - z * sx), mask=w_mask)


@triton.jit
def _gemv_revsplitk_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, out_ptr, N, K, GS,
    W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, E: tl.constexpr, BITS: tl.constexpr,
    HAS_Z: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, WORDS: tl.constexpr,
):
    pid_n = tl.program_id(0).to(tl.int64)
    pid_k = tl.program_id(1).to(tl.int64)
    BKE: tl.constexpr = BK // E
    if WORDS:  # codes read as 32-bit words of 4 columns (N % 4 == 0)
        _revsplitk_words(x_ptr, q_ptr, s_ptr, z_ptr, out_ptr, N, K, GS, pid_n, pid_k,
                         W0, W1, W2, E, BITS, HAS_Z, BK, BN)
    else:
        offs_n = pid_n * BN + tl.arange(0, BN)
        n_mask = offs_n < N
        offs_j = tl.arange(0, BKE)
        k0 = pid_k * (2 * BK)
        d2 = tl.zeros([BKE, BN], dtype=tl.float32)
        xs = tl.zeros([BKE], dtype=tl.float32)
        d2, xs = gemv_tile(d2, xs, x_ptr, q_ptr, N, K, k0, offs_j, offs_n, n_mask, W0, W1, W2, E, BKE, BN, False)
        d2, xs = gemv_tile(d2, xs, x_ptr, q_ptr, N, K, k0 + BK, offs_j, offs_n, n_mask, W0, W1, W2, E, BKE, BN, False)
        s, z = load_group_params(s_ptr, z_ptr, k0 // GS, N, offs_n, n_mask, HAS_Z, BITS)
        acc = s * (tl.sum(d2, axis=0) - z * tl.sum(xs, axis=0))
        tl.atomic_add(out_ptr + offs_n, acc, mask=n_mask)


def revsplitk_block_k(block_k: int, group_size: int, e: int) -> Optional[int]:
    """The K tile for this family: two tiles must fit in one group; None if none fits."""
    half = group_size // TILES_PER_PROGRAM if group_size % TILES_PER_PROGRAM == 0 else 0
    return tile_k(min(block_k, half), half, e) if half else None


def gemv_revsplitk(x: torch.Tensor, w: DeviceWeight, bias: Optional[torch.Tensor] = None, *, block_n: int = 128,
                   block_k: int = 32, num_warps: int = 4, num_stages: int = 1, words: bool = False) -> torch.Tensor:
    """y = x @ W.T (+ bias). x: [1, K] fp16/bf16/fp32 contiguous -> [1, N] x.dtype.

    words: read the codes as 32-bit words of 4 columns when N % 4 == 0 (fewer integer ops
    per code; measured no faster on an H200, so off by default: docs/gpu_kernels.md)."""
    if x.dim() != 2 or x.shape[0] != 1 or x.shape[1] != w.k:
        raise ValueError(f"gemv_revsplitk expects x [1, {w.k}], got {tuple(x.shape)}")
    p = w.planes
    bk = revsplitk_block_k(block_k, w.group_size, p.E)
    if bk is None:
        raise ValueError(f"gemv_revsplitk: group_size={w.group_size} cannot hold two {w.bits}-bit tiles")
    ws = torch.zeros(1, w.n, dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(w.n, block_n), triton.cdiv(w.k, 2 * bk))
    _gemv_revsplitk_kernel[grid](
        x, w.codes, w.scales, w.zeros if w.zeros is not None else w.scales, ws, w.n, w.k, w.group_size,
        p.W0, p.W1, p.W2, p.E, w.bits, w.zeros is not None, bk, block_n,
        words and w.n % 4 == 0 and block_n % 4 == 0, num_warps=num_warps, num_stages=num_stages,
    )
    if bias is not None:
        ws += bias.float()
    return ws.to(x.dtype)
