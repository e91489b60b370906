"""GEMM on tensor cores for large batches, and the int8-activation GEMM for every M > 1.

Float family (``gemm``): one program per ``BM x BN`` output tile, walking all of K (no
split: at large M there are enough tiles), with grouped tile order (``GROUP_M`` row
blocks share the weight columns they read, so the packed weight stays in L2) and the same
dequantize-per-slice + ``tl.dot`` step as split-K (helper ``dot_tile``).

int8 family (``gemm_int8``): activations quantized per token (``lowbit.quant``, exactly
the reference's rounding), int8 ``tl.dot`` with int32 accumulation. The reference sums
groups in order in fp32 (``y = y + s_g * acc_g``), so K is never split: the program walks
the groups in order in one flat, software-pipelined loop (a step holds several whole short
groups, or one tile of a long group), keeps an exact int32 accumulator per group, subtracts
``(z_g - OFF) * sum(xq)`` in int32 (asymmetric weights) and adds ``s_g * acc_g`` in fp32
without FMA (the launch disables FP fusion); then ``y *= sx``, ``y += bias``.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .gemm_splitk import MIN_DOT_K, MIN_DOT_K_INT8, dot_block_k
from .layout import DeviceWeight, tile_k
from .unpack import dot_tile, dot_tile_int8, load_a_tile, load_group_params, signed_codes


@triton.jit
def _tile_ids(pid, M, N, BM: tl.constexpr, BN: tl.constexpr, GROUP_M: tl.constexpr):
    """Grouped ordering: consecutive programs cover GROUP_M row blocks per column block."""
    num_m = tl.cdiv(M, BM)
    num_n = tl.cdiv(N, BN)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % size_m
    pid_n = (pid % per_group) // size_m
    return pid_m, pid_n


@triton.jit
def _gemm_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, bias_ptr, out_ptr, M, N, K, GS, stride_xm,
    W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, E: tl.constexpr, BITS: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, PER_TILE: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    pid_m, pid_n = _tile_ids(pid, M, N, BM, BN, GROUP_M)
    BKE: tl.constexpr = BK // E
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    m_mask = offs_m < M
    n_mask = offs_n < N
    offs_j = tl.arange(0, BKE)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    # the activation tile and the group's scale/zero are loaded one iteration ahead
    a = load_a_tile(x_ptr, stride_xm, offs_m, m_mask, K, 0, K, BK)
    s, z = load_group_params(s_ptr, z_ptr, K * 0, N, offs_n, n_mask & PER_TILE, HAS_Z, BITS)
    for k0 in range(0, K, BK):
        a_next = load_a_tile(x_ptr, stride_xm, offs_m, m_mask, K, k0 + BK, K, BK)
        s_next, z_next = load_group_params(s_ptr, z_ptr, (k0 + BK) // GS, N, offs_n,
                                           n_mask & PER_TILE & (k0 + BK < K), HAS_Z, BITS)
        acc = dot_tile(acc, a, s[None, :], z[None, :], q_ptr, s_ptr, z_ptr, N, K, GS, k0, offs_j, offs_n, n_mask,
                       W0, W1, W2, E, BITS, HAS_Z, PER_TILE, BM, BKE, BN)
        a = a_next
        s = s_next
        z = z_next
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    out_off = offs_m[:, None] * N + offs_n[None, :]
    tl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


@triton.jit
def _add_group(y, acc, xsum, s, z, HAS_Z: tl.constexpr, BITS: tl.constexpr):
    """``y + s_g * float(acc_g)``, acc_g = ``acc - (z_g - OFF) * xsum`` (asymmetric): the
    group's exact int32 sum, then one fp32 multiply and one add (no FP fusion at launch)."""
    if HAS_Z:
        acc = acc - (z.to(tl.int32) - (1 << (BITS - 1)))[None, :] * xsum[:, None]
    return y + s[None, :] * acc.to(tl.float32)


@triton.jit
def _add_terms_in_order(y, t, G: tl.constexpr):
    """``y + t[..., 0] + t[..., 1] + ...`` one add at a time, in order. t: [BM, BN, G], G in
    {2, 4, 8} (``tl.split`` halves the last axis: index g = 4a + 2b + c splits on c first)."""
    if G == 2:
        t0, t1 = tl.split(t)
        y = y + t0
        y = y + t1
    elif G == 4:
        e, o = tl.split(tl.reshape(t, [t.shape[0], t.shape[1], 2, 2]))  # g = 2a + b
        t0, t2 = tl.split(e)
        t1, t3 = tl.split(o)
        y = y + t0
        y = y + t1
        y = y + t2
        y = y + t3
    else:
        e, o = tl.split(tl.reshape(t, [t.shape[0], t.shape[1], 2, 2, 2]))  # g = 4a + 2b + c
        ee, eo = tl.split(e)
        oe, oo = tl.split(o)
        t0, t4 = tl.split(ee)
        t2, t6 = tl.split(eo)
        t1, t5 = tl.split(oe)
        t3, t7 = tl.split(oo)
        y = y + t0
        y = y + t1
        y = y + t2
        y = y + t3
        y = y + t4
        y = y + t5
        y = y + t6
        y = y + t7
    return y


@triton.jit
def _group_dot_step(y, xq_ptr, q_ptr, s_ptr, stride_xm, pid_m, M, N, K, GS, k0, offs_n, n_mask,
                    W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, BITS: tl.constexpr,
                    BM: tl.constexpr, BK: tl.constexpr, SUB: tl.constexpr):
    """A step of G = BK // SUB whole groups in one int8 dot (symmetric weights): the activation
    tile is block-diagonal, [G*BM, BK] with row block g holding group g's columns and zeros
    elsewhere, so row block g of the product is group g's exact sum. Its fp32 terms are
    added to y in group order; terms past K are -0.0, which leaves any y unchanged."""
    G: tl.constexpr = BK // SUB
    r = tl.arange(0, G * BM)
    rm = pid_m * BM + r % BM
    rg = r // BM
    offs_k = k0 + tl.arange(0, BK)
    k_ok = offs_k < K
    amask = (rm < M)[:, None] & k_ok[None, :] & ((tl.arange(0, BK) // SUB)[None, :] == rg[:, None])
    a = tl.load(xq_ptr + rm[:, None] * stride_xm + offs_k[None, :], mask=amask, other=0)
    w = signed_codes(q_ptr, N, K, offs_k, offs_n, k_ok[:, None] & n_mask[None, :], W0, W1, W2, BITS)
    acc = tl.dot(a, w.to(tl.int8), out_dtype=tl.int32)
    g = k0 // GS + rg
    g_ok = (g < K // GS)[:, None]
    s = tl.load(s_ptr + g[:, None] * N + offs_n[None, :], mask=g_ok & n_mask[None, :], other=0.0).to(tl.float32)
    t = tl.where(g_ok, s * acc.to(tl.float32), -0.0)
    t = tl.permute(tl.reshape(t, [G, BM, t.shape[1]]), (1, 2, 0))
    return _add_terms_in_order(y, t, G)


@triton.jit
def _gemm_int8_kernel(
    xq_ptr, sx_ptr, q_ptr, s_ptr, z_ptr, bias_ptr, out_ptr, M, N, K, GS, stride_xm,
    W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, BITS: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, USE_DOT: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SUB: tl.constexpr, WHOLE: tl.constexpr,
    GROUP_M: tl.constexpr, STAGES: tl.constexpr, GROUP_DOT: tl.constexpr,
):
    """One flat K loop (so the pipeliner keeps STAGES steps of codes in flight). WHOLE: a
    step holds BK // SUB whole groups of SUB codes, each summed exactly and added to y in
    order; else SUB = BK divides the group and the group's sum is added at its last tile."""
    pid = tl.program_id(0).to(tl.int64)
    pid_m, pid_n = _tile_ids(pid, M, N, BM, BN, GROUP_M)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    m_mask = offs_m < M
    n_mask = offs_n < N
    y = tl.zeros([BM, BN], dtype=tl.float32)
    acc = tl.zeros([BM, BN], dtype=tl.int32)
    xsum = tl.zeros([BM], dtype=tl.int32)
    for k0 in tl.range(0, K, BK, num_stages=STAGES):
        if GROUP_DOT:
            y = _group_dot_step(y, xq_ptr, q_ptr, s_ptr, stride_xm, pid_m, M, N, K, GS, k0, offs_n, n_mask,
                                W0, W1, W2, BITS, BM, BK, SUB)
        for i in tl.static_range(0 if GROUP_DOT else BK // SUB):
            ks = k0 + i * SUB
            a = load_a_tile(xq_ptr, stride_xm, offs_m, m_mask, K, ks, K, SUB)
            # the group's scale and zero are loaded with the codes, never behind a branch:
            # a load under a branch is not pipelined and costs a memory round trip a group
            s, z = load_group_params(s_ptr, z_ptr, ks // GS, N, offs_n, n_mask & (ks < K), HAS_Z, BITS)
            acc, xsum = dot_tile_int8(acc, xsum, a, q_ptr, N, K, ks, offs_n, n_mask,
                                      W0, W1, W2, BITS, SUB, USE_DOT, HAS_Z)
            if WHOLE:  # a step may run past the last group: y stays (y + 0 could flip a -0)
                y = tl.where(ks < K, _add_group(y, acc, xsum, s, z, HAS_Z, BITS), y)
                acc = tl.zeros([BM, BN], dtype=tl.int32)
                xsum = tl.zeros([BM], dtype=tl.int32)
            else:  # the group ends with this tile
                last = (ks + SUB) % GS == 0
                y = tl.where(last, _add_group(y, acc, xsum, s, z, HAS_Z, BITS), y)
                acc = tl.where(last, 0, acc)
                xsum = tl.where(last, 0, xsum)
    y = y * tl.load(sx_ptr + offs_m, mask=m_mask, other=0.0)[:, None]
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    out_off = offs_m[:, None] * N + offs_n[None, :]
    tl.store(out_ptr + out_off, y.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


def gemm(x: torch.Tensor, w: DeviceWeight, bias: Optional[torch.Tensor] = None, *, block_m: int = 64,
         block_n: int = 128, block_k: int = 64, group_m: int = 8, num_warps: int = 4,
         num_stages: int = 3) -> torch.Tensor:
    """y = x @ W.T (+ bias). x: [M, K] fp16/bf16 (fp32 for CPU tests) contiguous -> [M, N] x.dtype."""
    m, k = x.shape
    if k != w.k:
        raise ValueError(f"gemm expects x [M, {w.k}], got {tuple(x.shape)}")
    p = w.planes
    bk = dot_block_k(block_k, p.E)
    out = x.new_empty(m, w.n)
    grid = (triton.cdiv(m, block_m) * triton.cdiv(w.n, block_n),)
    _gemm_kernel[grid](
        x, w.codes, w.scales, w.zeros if w.zeros is not None else w.scales, bias if bias is not None else w.scales,
        out, m, w.n, k, w.group_size, x.stride(0), p.W0, p.W1, p.W2, p.E, w.bits, w.zeros is not None,
        bias is not None, w.group_size % bk == 0, block_m, block_n, bk, group_m,
        num_warps=num_warps, num_stages=num_stages,
    )
    return out


def gemm_int8(xq: torch.Tensor, sx: torch.Tensor, w: DeviceWeight, bias: Optional[torch.Tensor],
              out_dtype: torch.dtype, *, block_m: int = 16, block_n: int = 64, block_k: int = 128,
              group_m: int = 8, num_warps: int = 4, num_stages: int = 3, group_dot: bool = False) -> torch.Tensor:
    """int8-activation GEMM. xq: [M, K] int8, sx: [M] fp32 -> [M, N] out_dtype, bit-exact
    against ``lowbit.quant.int8_linear_reference`` (integer zeros). block_k: codes per loop
    step (whole groups when the group is shorter)."""
    m, k = xq.shape
    if xq.dtype != torch.int8 or k != w.k:
        raise ValueError(f"gemm_int8 expects xq int8 [M, {w.k}], got {xq.dtype} {tuple(xq.shape)}")
    p = w.planes
    sub = tile_k(min(block_k, w.group_size), w.group_size, 1)
    if sub is None:
        raise ValueError(f"gemm_int8: no power-of-two K tile divides group_size={w.group_size}")
    whole = sub == w.group_size
    bk = sub * max(1, block_k // sub) if whole else sub
    out = torch.empty(m, w.n, dtype=out_dtype, device=xq.device)
    grid = (triton.cdiv(m, block_m) * triton.cdiv(w.n, block_n),)
    use_dot = sub >= MIN_DOT_K_INT8 and block_m >= MIN_DOT_K
    # group_dot: the step's whole groups in one block-diagonal dot (symmetric, 2/4/8 a step)
    group_dot = group_dot and whole and use_dot and w.zeros is None and bk // sub in (2, 4, 8)
    _gemm_int8_kernel[grid](
        xq, sx, w.codes, w.scales, w.zeros if w.zeros is not None else w.scales, bias if bias is not None else w.scales,
        out, m, w.n, k, w.group_size, xq.stride(0), p.W0, p.W1, p.W2, w.bits, w.zeros is not None,
        bias is not None, use_dot, block_m, block_n, bk, sub, whole, group_m, num_stages, group_dot,
        num_warps=num_warps, num_stages=num_stages, enable_fp_fusion=False,
    )
    return out
