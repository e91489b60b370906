"""Tensor-core GEMM for small batches with the weights as the MMA's left operand ("swap AB").

Family for single-plane widths (1, 2, 4, 8 bits), fp16/bf16 activations. It computes the
transposed product ``y.T[N, M] = W[N, K] @ x.T[K, M]``: a tile of ``BN`` weight rows is the
left operand and the ``BM`` activation rows the right one. Why: on Hopper the asynchronous
warpgroup MMA (``wgmma``) needs 64 rows on its left side and may take that side from
registers, while the right side must sit in shared memory. With the weights on the left, a
batch of 16-64 tokens still fills the instruction, and the codes are decoded in the registers
the MMA reads (the ``cp.async``-staged byte tile is loaded straight into the operand layout:
no shared-memory round trip for decoded weights). ``gemm_pairs`` (activations on the left)
can only use ``mma.sync`` for tiles under 64 rows; this family beats it from M = 17 on (H100,
docs/gpu_kernels.md).

Slices as in ``unpack.py``: slice ``t`` of a ``BK`` tile holds the codes ``k0 + E*j + t``. A
byte row of the N-contiguous layout is one K step of ``BN`` weight rows, so the loaded
``[BN, BK/E]`` byte tile decodes to ``E`` slices. The activations must match: a small prep
kernel writes each K tile's slices one after another (``_swap_prep_kernel``), so every slice
is a contiguous run the pipeliner stages with ``cp.async`` straight into the MMA's operand.
Splitting a natural-order tile in registers instead, or loading it with stride ``E``, was
1.6-5x slower at M = 64 (measured on an H200).

Decode (inline PTX on CUDA, ~2.5 ops a code): the field ORed into the mantissa of 1024 (fp16)
or 128 (bf16, codes under 128), the constant subtracted (exact ``q``), then the zero point
(one rounding in the activation dtype; exact for integer zeros, which min-max gives; HQQ
float zeros round like a dequantized fp16/bf16 weight). So the MMA sums ``(q - z) * x`` and
each group's scale multiplies the tile's fp32 sums; each ``BK`` tile lies inside one group.
Split-K goes through the self-cleaning workspace (``splitk_workspace.py``).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from .gemv_words import WIDTHS
from .layout import DeviceWeight
from .gemm_pairs import gemm_plan, pairs_block_k
from .splitk_workspace import store_tile
from .unpack import inline_ptx

MIN_DOT_K = 16  # tl.dot needs >= 16 along the reduction dim
MIN_BN = 64  # one warpgroup MMA covers 64 left-operand rows


# PTX decode of 4 codes (pack=4): $2 the 4 bytes; $3/$4 the zero points of elements 0-1 / 2-3
# (fp16x2 / bf16x2; when symmetric, the folded constant -(1024 + 2**(bits-1)), bf16 -(128 + ..));
# $5 the field's shift, $9 its mask in both halves (pack=4 passes each int32 operand as four
# registers, all the same). prmt spreads bytes 0,1 (2,3) into the halves of a word; shift and
# LOP3 put the field into the mantissa of 1024 (bf16: 128); subtracting the constant gives exact
# q, subtracting z rounds once (exact for integer zeros). ~2.5 ops a code. bf16 uses FMAs with
# 1.0 (sub.bf16x2 needs sm_90; the FMA form runs on sm_80 too).
@functools.lru_cache(maxsize=None)
def _decode_asm(bf16: bool, has_z: bool) -> str:
    magic = "0x43004300" if bf16 else "0x64006400"
    extra = ([("one", "0x3F803F80")] + ([("neg", "0xC300C300"), ("negone", "0xBF80BF80")] if has_z else [])) if bf16 else []
    regs = ".reg .b32 lo, hi, m" + "".join(f", {r}" for r, _ in extra) + ";"
    consts = [f"mov.b32 m, {magic};"] + [f"mov.b32 {r}, {v};" for r, v in extra]
    spread = ["prmt.b32 lo, $2, 0, 0x4140;", "prmt.b32 hi, $2, 0, 0x4342;", "shr.b32 lo, lo, $5;",
              "shr.b32 hi, hi, $5;", "lop3.b32 lo, lo, $9, m, 0xEA;", "lop3.b32 hi, hi, $9, m, 0xEA;"]
    if has_z and bf16:
        tail = ["fma.rn.bf16x2 lo, lo, one, neg;", "fma.rn.bf16x2 hi, hi, one, neg;",
                "fma.rn.bf16x2 $0, $3, negone, lo;", "fma.rn.bf16x2 $1, $4, negone, hi;"]
    elif has_z:
        tail = ["sub.f16x2 lo, lo, m;", "sub.f16x2 hi, hi, m;", "sub.f16x2 $0, lo, $3;", "sub.f16x2 $1, hi, $4;"]
    elif bf16:
        tail = ["fma.rn.bf16x2 $0, lo, one, $3;", "fma.rn.bf16x2 $1, hi, one, $4;"]
    else:
        tail = ["add.f16x2 $0, lo, $3;", "add.f16x2 $1, hi, $4;"]
    return "\n".join(["{", regs] + consts + spread + tail + ["}"])


@triton.jit
def _decode_ptx(b, zq, T: tl.constexpr, BITS: tl.constexpr, DT: tl.constexpr, HAS_Z: tl.constexpr,
                DECODE: tl.constexpr):
    """``q - z`` of field ``T`` of every byte of ``b`` in DT through inline PTX (fp16, or bf16
    with codes under 128); zq: [BN, 1] zero points in DT (ignored when symmetric); DECODE: the
    ``_decode_asm`` text for DT and HAS_Z."""
    FIELD: tl.constexpr = (1 << BITS) - 1
    sh = tl.full(b.shape, T * BITS, tl.int32)
    mask = tl.full(b.shape, FIELD * 0x10001, tl.int32)
    if HAS_Z:
        zz = tl.broadcast_to(zq, b.shape)
    else:  # the symmetric zero folded into the magic constant
        if DT == tl.float16:
            zz = tl.full(b.shape, -(1024.0 + (1 << (BITS - 1))), tl.float16)
        else:
            zz = tl.full(b.shape, -(128.0 + (1 << (BITS - 1))), tl.bfloat16)
    return tl.inline_asm_elementwise(DECODE, "=r,=r,r,r,r,r,r,r,r,r,r,r,r", [b, zz, sh, mask],
                                     dtype=zz.dtype, is_pure=True, pack=4)


@triton.jit
def _decode(b, zq, T: tl.constexpr, BITS: tl.constexpr, DT: tl.constexpr, MAGIC: tl.constexpr, HAS_Z: tl.constexpr):
    """``q - z`` for field ``T`` of every byte of ``b`` ([BN, BKE] uint8) in DT; zq: the zero
    points [BN, 1] in DT (unused when symmetric: z = 2**(BITS-1) is folded into the constant)."""
    SH: tl.constexpr = T * BITS
    FIELD: tl.constexpr = (1 << BITS) - 1
    ZSYM: tl.constexpr = 1 << (BITS - 1)
    if MAGIC:  # q into the mantissa of 1024 (fp16) / 128 (bf16), then the constant off: exact
        if DT == tl.float16:
            v = (((b.to(tl.int16) >> SH) & FIELD) | 0x6400).to(tl.float16, bitcast=True)
            BASE: tl.constexpr = 1024.0
        else:
            v = (((b.to(tl.int16) >> SH) & FIELD) | 0x4300).to(tl.bfloat16, bitcast=True)
            BASE: tl.constexpr = 128.0
        if HAS_Z:  # q exact, then one rounding of q - z (exact for integer zeros)
            return (v - BASE) - zq
        else:
            return v - (BASE + ZSYM)
    else:
        q = ((b.to(tl.int32) >> SH) & FIELD).to(tl.float32)
        if HAS_Z:
            return (q - zq.to(tl.float32)).to(DT)
        else:
            return (q - ZSYM).to(DT)


@triton.jit
def _group_params(s_ptr, z_ptr, g, N, offs_n, mask, HAS_Z: tl.constexpr):
    """Scale (fp32) and zero (storage dtype; a dummy when symmetric) of group ``g`` for the
    tile's weight rows, [BN] each."""
    s = tl.load(s_ptr + g * N + offs_n, mask=mask, other=0.0)
    if HAS_Z:
        z = tl.load(z_ptr + g * N + offs_n, mask=mask, other=0.0)
    else:
        z = s
    return s.to(tl.float32), z


@triton.jit
def _swap_prep_kernel(x_ptr, xp_ptr, K, stride_xm, E: tl.constexpr, BKE: tl.constexpr, TP: tl.constexpr):
    """``TP`` consecutive K tiles of one activation row with each tile's E slices stored one
    after another (slice t = codes k0 + E*j + t, j < BKE): contiguous, so the GEMM stages each
    slice with cp.async straight into the MMA's shared-memory operand."""
    m = tl.program_id(0)
    offs_p = tl.program_id(1) * TP + tl.arange(0, TP)
    offs_t = tl.arange(0, E)
    offs_j = tl.arange(0, BKE)
    k0 = (offs_p * (E * BKE))[:, None, None]
    mask = k0 < K
    v = tl.load(x_ptr + m * stride_xm + k0 + offs_j[None, None, :] * E + offs_t[None, :, None], mask=mask)
    tl.store(xp_ptr + m * K + k0 + offs_t[None, :, None] * BKE + offs_j[None, None, :], v, mask=mask)


@triton.jit
def _gemm_swap_kernel(
    xp_ptr, q_ptr, s_ptr, z_ptr, bias_ptr, ws_ptr, cnt_ptr, out_ptr, M, N, K, GS, K_SPLIT,
    BITS: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, STAGES: tl.constexpr, MAGIC: tl.constexpr,
    ASM: tl.constexpr, DECODE: tl.constexpr,
):
    E: tl.constexpr = 8 // BITS
    BKE: tl.constexpr = BK // E
    DT = xp_ptr.dtype.element_ty
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_n = tl.cdiv(N, BN)
    pid_m = pid // num_n
    pid_n = pid % num_n
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_j = tl.arange(0, BKE)
    n_mask = offs_n < N
    m_mask = offs_m < M
    acc = tl.zeros([BN, BM], dtype=tl.float32)
    k_lo = pid_k * K_SPLIT
    k_hi = tl.minimum(k_lo + K_SPLIT, K)
    # the group's scale/zero are loaded one tile ahead (codes and x are staged by the pipeliner)
    s, z = _group_params(s_ptr, z_ptr, k_lo // GS, N, offs_n, n_mask, HAS_Z)
    for k0 in tl.range(k_lo, k_hi, BK, num_stages=STAGES):
        b = tl.load(q_ptr + (k0 // E + offs_j)[None, :] * N + offs_n[:, None], mask=n_mask[:, None], other=0)
        s2, z2 = _group_params(s_ptr, z_ptr, (k0 + BK) // GS, N, offs_n, (k0 + BK < k_hi) & n_mask, HAS_Z)
        zq = z.to(DT)[:, None]
        d = tl.zeros([BN, BM], dtype=tl.float32)
        for t in tl.static_range(E):
            xt = tl.load(xp_ptr + offs_m[None, :] * K + (k0 + t * BKE + offs_j)[:, None], mask=m_mask[None, :], other=0.0)
            if ASM:
                wt = _decode_ptx(b, zq, t, BITS, DT, HAS_Z, DECODE)
            else:
                wt = _decode(b, zq, t, BITS, DT, MAGIC, HAS_Z)
            d = tl.dot(wt, xt, d)
        acc += d * s[:, None]
        s = s2
        z = z2
    store_tile(tl.trans(acc), ws_ptr, cnt_ptr, out_ptr, bias_ptr, pid, offs_m, offs_n, m_mask, N, SPLIT_K, HAS_BIAS)


def swap_supported(w: DeviceWeight) -> bool:
    """Single-plane width and a K tile inside one group."""
    return w.bits in WIDTHS and pairs_block_k(128, w) is not None


def gemm_swap(x: torch.Tensor, w: DeviceWeight, bias: Optional[torch.Tensor] = None, *, block_m: int = 16,
              block_n: int = 128, block_k: int = 128, split_k: int = 1, num_warps: int = 4,
              stages: int = 3, asm: bool = True) -> torch.Tensor:
    """y = x @ W.T (+ bias). x: [M, K] fp16/bf16 (fp32 for CPU tests), rows contiguous -> [M, N] x.dtype.
    block_m: activation rows per program (the MMA's right side, 16..256); block_n: weight rows
    per program (the left side, >= 64 per 4 warps)."""
    if not swap_supported(w):
        raise ValueError(f"gemm_swap needs 1/2/4/8-bit codes and a group size of >= {MIN_DOT_K} slice rows; "
                         f"got bits={w.bits}, group_size={w.group_size}")
    if block_n < MIN_BN or block_n & (block_n - 1):
        raise ValueError(f"gemm_swap: block_n must be a power of two >= {MIN_BN}, got {block_n}")
    if block_m < 16 or block_m > 256 or block_m & (block_m - 1):
        raise ValueError(f"gemm_swap: block_m must be a power of two in 16..256, got {block_m}")
    bk, tiles, split_k, grid_mn, ws, cnt = gemm_plan("gemm_swap", x, w, block_m, block_n, block_k, split_k)
    m, k = x.shape
    e = 8 // w.bits
    xp = torch.empty(m, k, dtype=x.dtype, device=x.device)
    tp = min(triton.next_power_of_2(tiles), max(1, 1024 // bk))  # ~1024 activations a program
    _swap_prep_kernel[(m, triton.cdiv(tiles, tp))](x, xp, k, x.stride(0), e, bk // e, tp, num_warps=4)
    out = x.new_empty(m, w.n)
    # the magic-number decode: fp16, or bf16 with codes under 128 (7 mantissa bits)
    magic = x.dtype == torch.float16 or (x.dtype == torch.bfloat16 and w.bits < 8)
    _gemm_swap_kernel[(grid_mn, split_k)](
        xp, w.codes, w.scales, w.zeros if w.zeros is not None else w.scales, bias if bias is not None else w.scales,
        ws, cnt, out, m, w.n, k, w.group_size, tiles // split_k * bk,
        w.bits, w.zeros is not None, bias is not None, split_k, block_m, block_n, bk, stages,
        magic, magic and inline_ptx(x.device) and asm, _decode_asm(x.dtype == torch.bfloat16, w.zeros is not None),
        num_warps=num_warps,
    )
    return out
