"""GEMV (M = 1) on CUDA cores, and its split-K form (used for 8-bit weights).

Family: one activation row times a packed weight, no ``tl.dot`` (a single row wastes a
tensor-core tile). Program ``(pid_n, pid_k)`` owns ``BN`` output columns and the
``pid_k``-th of ``SPLIT_K`` equal K ranges; it walks its range in tiles of ``BK`` codes
(a tile never crosses a group: ``group_size % BK == 0``), forms ``d = sum x*q`` and
``sx = sum x`` per tile with the shared unpack helper and applies the group's
``s * (d - z * sx)``. With ``SPLIT_K > 1`` partial sums go by ``atomic_add`` into an fp32
workspace that the launcher zeroes inside the op (safe under CUDA-graph replay).

``gemv_pipelined`` (single-plane widths 1/2/4/8) loads the next tile's codes, activations
and scale/zero while computing the current one; it is correct and selectable but measured
no faster than reverse split-K on an H200 (docs/gpu_kernels.md), so it is not a default.

The int8-activation form (``gemv_int8``) cannot add partial sums across K splits: the
reference sums groups in order in fp32. It either walks all groups in one program (exact
int32 per group, ``y = y + s_g * acc_g`` without FMA, ``y *= sx``, ``y += bias``), or, by
default, spreads the groups over the grid, stores each ``s_g * acc_g`` and sums them in group
order in a second kernel: the same bits, K-parallel.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .layout import DeviceWeight, tile_k
from .unpack import _slice_of, codes_to_f32, gemv_tile, load_group_params, split_slices


@triton.jit
def _gemv_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, bias_ptr, out_ptr, N, K, GS, K_SPLIT,
    W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, E: tl.constexpr, BITS: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr,
):
    pid_n = tl.program_id(0).to(tl.int64)
    pid_k = tl.program_id(1).to(tl.int64)
    BKE: tl.constexpr = BK // E
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_mask = offs_n < N
    offs_j = tl.arange(0, BKE)
    acc = tl.zeros([BN], dtype=tl.float32)
    k_lo = pid_k * K_SPLIT
    k_hi = tl.minimum(k_lo + K_SPLIT, K)
    # K_SPLIT is a multiple of GS or of BK inside one group: walk whole groups (or the
    # split's part of one), reducing the 2-D partial sums over K once per group
    GROUP_STEP = tl.minimum(GS, K_SPLIT)
    for g0 in range(k_lo, k_hi, GROUP_STEP):
        d2 = tl.zeros([BKE, BN], dtype=tl.float32)
        xs = tl.zeros([BKE], dtype=tl.float32)
        for k0 in range(g0, g0 + GROUP_STEP, BK):
            d2, xs = gemv_tile(d2, xs, x_ptr, q_ptr, N, K, k0, offs_j, offs_n, n_mask, W0, W1, W2, E, BKE, BN, False)
        s, z = load_group_params(s_ptr, z_ptr, g0 // GS, N, offs_n, n_mask, HAS_Z, BITS)
        acc += s * (tl.sum(d2, axis=0) - z * tl.sum(xs, axis=0))
    if ATOMIC:
        tl.atomic_add(out_ptr + offs_n, acc, mask=n_mask)
    else:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + offs_n, acc.to(out_ptr.dtype.element_ty), mask=n_mask)


@triton.jit
def _gemv_int8_kernel(
    xq_ptr, sx_ptr, q_ptr, s_ptr, z_ptr, bias_ptr, out_ptr, N, K, GS,
    W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, E: tl.constexpr, BITS: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr,
):
    pid_n = tl.program_id(0).to(tl.int64)
    BKE: tl.constexpr = BK // E
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_mask = offs_n < N
    offs_j = tl.arange(0, BKE)
    y = tl.zeros([BN], dtype=tl.float32)
    for g0 in range(0, K, GS):
        d2 = tl.zeros([BKE, BN], dtype=tl.int32)
        xs = tl.zeros([BKE], dtype=tl.int32)
        for k0 in range(g0, g0 + GS, BK):
            d2, xs = gemv_tile(d2, xs, xq_ptr, q_ptr, N, K, k0, offs_j, offs_n, n_mask, W0, W1, W2, E, BKE, BN, True)
        s, z = load_group_params(s_ptr, z_ptr, g0 // GS, N, offs_n, n_mask, HAS_Z, BITS)
        acc = tl.sum(d2, axis=0) - z.to(tl.int32) * tl.sum(xs, axis=0)
        y = y + s * acc.to(tl.float32)
    y = y * tl.load(sx_ptr)
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs_n, y.to(out_ptr.dtype.element_ty), mask=n_mask)


@triton.jit
def _gemv_pipelined_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, bias_ptr, out_ptr, N, K, GS, K_SPLIT,
    W: tl.constexpr, E: tl.constexpr, BITS: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr,
):
    """Single-plane widths (1, 2, 4, 8 bits): the next tile's codes, activations and
    scale/zero are loaded while the current tile is computed (the compiler does not
    software-pipeline loads that feed no dot), so one program keeps two tiles in flight."""
    pid_n = tl.program_id(0).to(tl.int64)
    pid_k = tl.program_id(1).to(tl.int64)
    BKE: tl.constexpr = BK // E
    MASK: tl.constexpr = (1 << W) - 1
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_mask = offs_n < N
    offs_j = tl.arange(0, BKE)
    offs_k = tl.arange(0, BK)
    k_lo = pid_k * K_SPLIT
    k_hi = tl.minimum(k_lo + K_SPLIT, K)
    # one byte row holds E codes of a column (single plane), so tile rows are k0/E + j
    b = tl.load(q_ptr + (k_lo // E + offs_j)[:, None] * N + offs_n[None, :],
                mask=(k_lo + E * offs_j < k_hi)[:, None] & n_mask[None, :], other=0)
    xa = tl.load(x_ptr + k_lo + offs_k, mask=k_lo + offs_k < k_hi, other=0.0).to(tl.float32)
    s, z = load_group_params(s_ptr, z_ptr, k_lo // GS, N, offs_n, n_mask, HAS_Z, BITS)
    acc = tl.zeros([BN], dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BK):
        k1 = k0 + BK
        live = k1 < k_hi
        b_next = tl.load(q_ptr + (k1 // E + offs_j)[:, None] * N + offs_n[None, :],
                         mask=((k1 + E * offs_j < k_hi) & live)[:, None] & n_mask[None, :], other=0)
        x_next = tl.load(x_ptr + k1 + offs_k, mask=(k1 + offs_k < k_hi) & live, other=0.0).to(tl.float32)
        s_next, z_next = load_group_params(s_ptr, z_ptr, k1 // GS, N, offs_n, n_mask & live, HAS_Z, BITS)
        x0, x1, x2, x3, x4, x5, x6, x7 = split_slices(xa[None, :], E, 1, BKE)
        d2 = tl.zeros([BKE, BN], dtype=tl.float32)
        bi = b.to(tl.int32)
        for t in tl.static_range(E):
            xt = tl.reshape(_slice_of(x0, x1, x2, x3, x4, x5, x6, x7, t), [BKE])
            d2 += xt[:, None] * codes_to_f32((bi >> (t * W)) & MASK)
        acc += s * (tl.sum(d2, axis=0) - z * tl.sum(xa, axis=0))
        b = b_next
        xa = x_next
        s = s_next
        z = z_next
    if ATOMIC:
        tl.atomic_add(out_ptr + offs_n, acc, mask=n_mask)
    else:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + offs_n, acc.to(out_ptr.dtype.element_ty), mask=n_mask)


def gemv_pipelined(x: torch.Tensor, w: DeviceWeight, bias: Optional[torch.Tensor] = None, *, block_n: int = 64,
                   block_k: int = 128, split_k: int = 1, num_warps: int = 4) -> torch.Tensor:
    """GEMV for single-plane widths (1, 2, 4, 8 bits) with loads one tile ahead.
    x: [1, K] contiguous -> [1, N] x.dtype. split_k > 1 adds fp32 atomics into a zeroed
    workspace (zeroed inside the op) and a final cast."""
    if x.dim() != 2 or x.shape[0] != 1 or x.shape[1] != w.k:
        raise ValueError(f"gemv_pipelined expects x [1, {w.k}], got {tuple(x.shape)}")
    p = w.planes
    if p.W1:
        raise ValueError(f"gemv_pipelined serves single-plane widths (1, 2, 4, 8), not {w.bits}")
    bk = tile_k(block_k, w.group_size, p.E)
    if bk is None:
        raise ValueError(f"gemv_pipelined: no K tile fits group_size={w.group_size}")
    tiles = triton.cdiv(w.k, bk)
    split_k = max(1, min(split_k, tiles))
    k_split = triton.cdiv(tiles, split_k) * bk
    split_k = triton.cdiv(w.k, k_split)
    atomic = split_k > 1
    out = torch.zeros(1, w.n, dtype=torch.float32, device=x.device) if atomic else x.new_empty(1, w.n)
    grid = (triton.cdiv(w.n, block_n), split_k)
    _gemv_pipelined_kernel[grid](
        x, w.codes, w.scales, w.zeros if w.zeros is not None else w.scales, bias if bias is not None else w.scales,
        out, w.n, w.k, w.group_size, k_split, p.W0, p.E, w.bits, w.zeros is not None,
        bias is not None and not atomic, atomic, bk, block_n, num_warps=num_warps, num_stages=1,
    )
    return _finish(out, bias, x.dtype) if atomic else out


@triton.jit
def _gemv_int8_groups_kernel(
    xq_ptr, q_ptr, s_ptr, z_ptr, parts_ptr, N, K, GS, GPP,
    W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, E: tl.constexpr, BITS: tl.constexpr,
    HAS_Z: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, TILES: tl.constexpr, STAGES: tl.constexpr,
):
    """int8 GEMV split over groups: program (pid_n, pid_g) writes the per-group terms
    ``t_g = s_g * float(acc_g)`` of its GPP groups to parts [G, N]; the ordered reduction is a
    second kernel, so the sum keeps the reference's group order (bit-exact) while K is
    spread over the grid. A group is TILES tiles of BK codes, unrolled, so the group loop is
    the innermost loop and the pipeliner keeps STAGES groups of loads in flight."""
    pid_n = tl.program_id(0).to(tl.int64)
    pid_g = tl.program_id(1).to(tl.int64)
    BKE: tl.constexpr = BK // E
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_mask = offs_n < N
    offs_j = tl.arange(0, BKE)
    g_lo = pid_g * GPP
    g_hi = tl.minimum(g_lo + GPP, K // GS)
    for g in tl.range(g_lo, g_hi, num_stages=STAGES):
        d2 = tl.zeros([BKE, BN], dtype=tl.int32)
        xs = tl.zeros([BKE], dtype=tl.int32)
        for t in tl.static_range(TILES):
            d2, xs = gemv_tile(d2, xs, xq_ptr, q_ptr, N, K, g * GS + t * BK, offs_j, offs_n, n_mask,
                               W0, W1, W2, E, BKE, BN, True)
        s, z = load_group_params(s_ptr, z_ptr, g, N, offs_n, n_mask, HAS_Z, BITS)
        acc = tl.sum(d2, axis=0) - z.to(tl.int32) * tl.sum(xs, axis=0)
        tl.store(parts_ptr + g * N + offs_n, s * acc.to(tl.float32), mask=n_mask)


@triton.jit
def _int8_group_reduce_kernel(parts_ptr, sx_ptr, bias_ptr, out_ptr, M, N, G,
                              HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    """out [M, N] = ((sum over g in order of parts[g]) * sx[m]) + bias[n], fp32 then cast:
    exactly the reference's order (launched without FP fusion)."""
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M * N
    y = tl.zeros([BLOCK], dtype=tl.float32)
    for g in range(0, G):
        y = y + tl.load(parts_ptr + g * M * N + offs, mask=mask, other=0.0)
    y = y * tl.load(sx_ptr + offs // N, mask=mask, other=0.0)
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + offs % N, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


# elements per program of the ordered int8 reduction
_REDUCE_BLOCK = 1024


def _finish(ws: torch.Tensor, bias: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """fp32 split-K workspace -> output dtype, bias added in fp32."""
    if bias is not None:
        ws += bias.float()
    return ws.to(dtype)


def gemv(x: torch.Tensor, w: DeviceWeight, bias: Optional[torch.Tensor] = None, *, block_n: int = 64,
         block_k: int = 128, split_k: int = 1, num_warps: int = 4, num_stages: int = 2) -> torch.Tensor:
    """y = x @ W.T (+ bias). x: [1, K] fp16/bf16/fp32 contiguous -> [1, N] x.dtype.

    split_k > 1 splits K over the grid (fp32 atomics into a zeroed workspace).
    """
    if x.dim() != 2 or x.shape[0] != 1 or x.shape[1] != w.k:
        raise ValueError(f"gemv expects x [1, {w.k}], got {tuple(x.shape)}")
    p = w.planes
    bk = tile_k(block_k, w.group_size, p.E)
    if bk is None:
        raise ValueError(f"gemv: no K tile fits group_size={w.group_size} with {w.bits}-bit slices of {p.E}")
    groups = w.k // w.group_size
    if split_k <= groups:  # whole groups per split
        k_split = triton.cdiv(groups, split_k) * w.group_size
    else:  # fewer groups than splits (per-channel): split inside the group, BK | k_split | GS
        per = w.group_size // bk
        parts = 1 << (max(1, min(split_k // groups, per)).bit_length() - 1)
        while per % parts:
            parts //= 2
        k_split = w.group_size // parts
    split_k = triton.cdiv(w.k, k_split)
    atomic = split_k > 1
    out = torch.zeros(1, w.n, dtype=torch.float32, device=x.device) if atomic else x.new_empty(1, w.n)
    grid = (triton.cdiv(w.n, block_n), split_k)
    _gemv_kernel[grid](
        x, w.codes, w.scales, w.zeros if w.zeros is not None else w.scales, bias if bias is not None else w.scales,
        out, w.n, w.k, w.group_size, k_split, p.W0, p.W1, p.W2, p.E, w.bits, w.zeros is not None,
        bias is not None and not atomic, atomic, bk, block_n, num_warps=num_warps, num_stages=num_stages,
    )
    return _finish(out, bias, x.dtype) if atomic else out


def gemv_int8(xq: torch.Tensor, sx: torch.Tensor, w: DeviceWeight, bias: Optional[torch.Tensor], out_dtype: torch.dtype,
              *, block_n: int = 64, block_k: int = 128, groups_per_program: int = 1, num_warps: int = 4,
              num_stages: int = 2) -> torch.Tensor:
    """int8-activation GEMV. xq: [1, K] int8, sx: [1] fp32 (per-token scale) -> [1, N] out_dtype.

    Bit-exact against ``lowbit.quant.int8_linear_reference`` (zeros must be integers).
    groups_per_program > 0 (and fewer than the groups): K is spread over the grid by groups,
    per-group terms go to an fp32 buffer [G, N] and a second kernel sums them in group order;
    0: one program walks all of K for its columns.
    """
    if xq.dtype != torch.int8 or xq.shape != (1, w.k):
        raise ValueError(f"gemv_int8 expects xq int8 [1, {w.k}], got {xq.dtype} {tuple(xq.shape)}")
    p = w.planes
    bk = tile_k(block_k, w.group_size, p.E)
    if bk is None:
        raise ValueError(f"gemv_int8: no K tile fits group_size={w.group_size} with {w.bits}-bit slices of {p.E}")
    out = torch.empty(1, w.n, dtype=out_dtype, device=xq.device)
    groups = w.k // w.group_size
    if groups_per_program and groups > groups_per_program:
        parts = torch.empty(groups, 1, w.n, dtype=torch.float32, device=xq.device)  # fully written
        grid = (triton.cdiv(w.n, block_n), triton.cdiv(groups, groups_per_program))
        _gemv_int8_groups_kernel[grid](
            xq, w.codes, w.scales, w.zeros if w.zeros is not None else w.scales, parts, w.n, w.k, w.group_size,
            groups_per_program, p.W0, p.W1, p.W2, p.E, w.bits, w.zeros is not None, bk, block_n,
            w.group_size // bk, num_stages, num_warps=num_warps, num_stages=num_stages, enable_fp_fusion=False,
        )
        _int8_group_reduce_kernel[(triton.cdiv(w.n, _REDUCE_BLOCK),)](
            parts, sx, bias if bias is not None else sx, out, 1, w.n, groups, bias is not None, _REDUCE_BLOCK,
            num_warps=4, enable_fp_fusion=False,
        )
        return out
    grid = (triton.cdiv(w.n, block_n),)
    _gemv_int8_kernel[grid](
        xq, sx, w.codes, w.scales, w.zeros if w.zeros is not None else w.scales, bias if bias is not None else w.scales,
        out, w.n, w.k, w.group_size, p.W0, p.W1, p.W2, p.E, w.bits, w.zeros is not None, bias is not None,
        bk, block_n, num_warps=num_warps, num_stages=num_stages, enable_fp_fusion=False,
    )
    return out
