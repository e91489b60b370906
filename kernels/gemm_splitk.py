"""Split-K GEMM on tensor cores for small batches (M ~ 2-64), fp16/bf16 activations.

Family: at small M a plain GEMM has too few output tiles to fill the GPU, so K is split
over a second grid axis. Program ``(pid_mn, pid_k)`` owns a ``BM x BN`` output tile and
the ``pid_k``-th of ``SPLIT_K`` K ranges (whole ``BK`` tiles); each tile is dequantized
slice by slice (shared helper ``dot_tile``) and multiplied with ``tl.dot`` into an fp32
accumulator. With ``SPLIT_K > 1`` the partials go by ``atomic_add`` into an fp32
workspace the launcher zeroes inside the op, then one cast (+ bias) gives the output:
correct under CUDA-graph replay, nothing persistent to reset.

Constraints (checked by the launcher): ``BK`` a power of two with ``BK / E >= 16``
(a ``tl.dot`` needs K >= 16); ``K_SPLIT`` a multiple of ``BK``. If ``BK`` divides the group
size the scales are read once per tile, else per slice row.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .layout import DeviceWeight
from .unpack import dot_tile, load_a_tile, load_group_params

# tl.dot needs at least 16 along its reduction dim
MIN_DOT_K = 16
# int8 tl.dot needs at least 32 along its reduction dim on sm_90 (16 fails to compile there)
MIN_DOT_K_INT8 = 32


@triton.jit
def _gemm_splitk_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, bias_ptr, out_ptr, M, N, K, GS, K_SPLIT, stride_xm,
    W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, E: tl.constexpr, BITS: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, PER_TILE: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    pid_k = tl.program_id(1).to(tl.int64)
    num_n = tl.cdiv(N, BN)
    pid_m = pid // num_n
    pid_n = pid % num_n
    BKE: tl.constexpr = BK // E
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    m_mask = offs_m < M
    n_mask = offs_n < N
    offs_j = tl.arange(0, BKE)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    k_lo = pid_k * K_SPLIT
    k_hi = tl.minimum(k_lo + K_SPLIT, K)
    # the activation tile and the group's scale/zero are loaded one iteration ahead
    # (they are not software-pipelined by the compiler like the codes are)
    a = load_a_tile(x_ptr, stride_xm, offs_m, m_mask, K, k_lo, k_hi, BK)
    s, z = load_group_params(s_ptr, z_ptr, k_lo // GS, N, offs_n, n_mask & PER_TILE, HAS_Z, BITS)
    for k0 in range(k_lo, k_hi, BK):
        a_next = load_a_tile(x_ptr, stride_xm, offs_m, m_mask, K, k0 + BK, k_hi, BK)
        s_next, z_next = load_group_params(s_ptr, z_ptr, (k0 + BK) // GS, N, offs_n,
                                           n_mask & PER_TILE & (k0 + BK < k_hi), HAS_Z, BITS)
        acc = dot_tile(acc, a, s[None, :], z[None, :], q_ptr, s_ptr, z_ptr, N, K, GS, k0, offs_j, offs_n, n_mask,
                       W0, W1, W2, E, BITS, HAS_Z, PER_TILE, BM, BKE, BN)
        a = a_next
        s = s_next
        z = z_next
    out_off = offs_m[:, None] * N + offs_n[None, :]
    o_mask = m_mask[:, None] & n_mask[None, :]
    if ATOMIC:
        tl.atomic_add(out_ptr + out_off, acc, mask=o_mask)
    else:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=o_mask)


def dot_block_k(block_k: int, e: int) -> int:
    """A power-of-two K tile >= ``block_k`` whose slices are long enough for ``tl.dot``."""
    bk = 1 << (max(block_k, 1) - 1).bit_length()
    return max(bk, MIN_DOT_K * e)


def gemm_splitk(x: torch.Tensor, w: DeviceWeight, bias: Optional[torch.Tensor] = None, *, block_m: int = 16,
                block_n: int = 64, block_k: int = 64, split_k: int = 4, num_warps: int = 4,
                num_stages: int = 2) -> torch.Tensor:
    """y = x @ W.T (+ bias). x: [M, K] fp16/bf16 (fp32 for CPU tests) contiguous -> [M, N] x.dtype."""
    m, k = x.shape
    if k != w.k:
        raise ValueError(f"gemm_splitk expects x [M, {w.k}], got {tuple(x.shape)}")
    p = w.planes
    bk = dot_block_k(block_k, p.E)
    tiles = triton.cdiv(k, bk)
    split_k = max(1, min(split_k, tiles))
    k_split = triton.cdiv(tiles, split_k) * bk
    split_k = triton.cdiv(k, k_split)
    atomic = split_k > 1
    out = torch.zeros(m, w.n, dtype=torch.float32, device=x.device) if atomic else x.new_empty(m, w.n)
    grid = (triton.cdiv(m, block_m) * triton.cdiv(w.n, block_n), split_k)
    _gemm_splitk_kernel[grid](
        x, w.codes, w.scales, w.zeros if w.zeros is not None else w.scales, bias if bias is not None else w.scales,
        out, m, w.n, k, w.group_size, k_split, x.stride(0), p.W0, p.W1, p.W2, p.E, w.bits, w.zeros is not None,
        bias is not None and not atomic, atomic, w.group_size % bk == 0, block_m, block_n, bk,
        num_warps=num_warps, num_stages=num_stages,
    )
    if not atomic:
        return out
    if bias is not None:
        out += bias.float()
    return out.to(x.dtype)
