"""Tensor-core GEMM for small batches (M up to 64) reading column pairs as 16-bit words.

Family for single-plane widths (1, 2, 4, 8 bits), fp16/bf16 activations. The N-contiguous
device layout is read as uint16: element ``(r, c)`` holds byte row ``r`` of columns ``2c``
(low byte) and ``2c + 1``. A tensor-core B fragment wants two consecutive reduction rows of
one column in a 32-bit register, and for a 16-bit type that is what ``ldmatrix.trans``
delivers from shared memory: rows ``r, r+1`` of a column pair, i.e. bytes
``(r, 2c) (r, 2c+1) (r+1, 2c) (r+1, 2c+1)``. The code field ``t`` of column ``2c`` of both rows
is then one shift and one LOP3 away from an fp16x2 ``(1024 + q_r, 1024 + q_{r+1})`` (the
field ORed into the mantissa of 1024), and one packed subtract makes it exact ``q`` (bf16:
128 and an FMA); column ``2c + 1`` shifts by 8 more. So ~1.5 instructions a code, no
int-to-float conversion, no shuffle: the even and odd columns are two ``tl.dot``s, joined
once at the end.

Slices as in ``unpack.py``: slice ``t`` of a ``BK`` tile holds the codes ``k0 + E*j + t``, so
the activation tile is split into ``E`` slices in registers. The dot runs on exact integer
codes; each ``BK`` tile lies inside one group (``BK`` divides the group size), and the
group's zero and scale are applied to the tile's fp32 sums: ``s * (sum x*q - z * sum x)``
(float zeros work too). With ``SPLIT_K > 1`` partial tiles go by fire-and-forget atomics
into the self-cleaning workspace (``splitk_workspace.py``) and the last program of an output tile
(an acq_rel counter) writes the output: no memset or cast kernel, correct under graph replay.

The decode is inline PTX (``ASM``); the Triton interpreter cannot run that, so with
``ASM=False`` (CPU tests, fp32 activations, 8-bit codes with bf16) the same fields are
extracted with plain shifts and converted, which is what the PTX computes.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .gemv_words import WIDTHS
from .splitk_workspace import split_buffers, store_tile
from .layout import DeviceWeight
from .unpack import _slice_of, inline_ptx, split_slices

MIN_DOT_K = 16  # tl.dot needs >= 16 along the reduction dim
MAX_M = 64  # dispatch offers it up to here (the batches it was measured at); any M computes correctly

# $2: two uint16 elements (rows r, r+1 of a column pair); $3/$5: shifts for the even/odd
# column (pack=2 passes each int32 operand as two registers; both hold the same value);
# $7: the field mask in both halves. Out: fp16x2 / bf16x2 codes of the even and odd column.
_DECODE_F16 = tl.constexpr("""{
.reg .b32 e, o, m;
mov.b32 m, 0x64006400;
shr.b32 e, $2, $3;
shr.b32 o, $2, $5;
lop3.b32 e, e, $7, m, 0xEA;
lop3.b32 o, o, $7, m, 0xEA;
sub.f16x2 $0, e, m;
sub.f16x2 $1, o, m;
}""")
# bf16: 128 + q (7 mantissa bits, so codes < 128); fma with 1.0 and -128 (sub.bf16x2 needs sm_90)
_DECODE_BF16 = tl.constexpr("""{
.reg .b32 e, o, m, one, neg;
mov.b32 m, 0x43004300;
mov.b32 one, 0x3F803F80;
mov.b32 neg, 0xC300C300;
shr.b32 e, $2, $3;
shr.b32 o, $2, $5;
lop3.b32 e, e, $7, m, 0xEA;
lop3.b32 o, o, $7, m, 0xEA;
fma.rn.bf16x2 $0, e, one, neg;
fma.rn.bf16x2 $1, o, one, neg;
}""")


@triton.jit
def _decode_slice(b, T: tl.constexpr, BITS: tl.constexpr, DT: tl.constexpr, ASM: tl.constexpr):
    """Codes of slice ``T`` of a [BKE, H] uint16 tile: (even columns, odd columns), [BKE, H] each, in DT."""
    SH: tl.constexpr = T * BITS
    FIELD: tl.constexpr = (1 << BITS) - 1
    if ASM:
        she = tl.full(b.shape, SH, tl.int32)
        sho = tl.full(b.shape, SH + 8, tl.int32)
        mask = tl.full(b.shape, FIELD * 0x10001, tl.int32)
        if DT == tl.float16:
            e, o = tl.inline_asm_elementwise(_DECODE_F16, "=r,=r,r,r,r,r,r,r,r", [b, she, sho, mask],
                                             dtype=(tl.float16, tl.float16), is_pure=True, pack=2)
        else:
            e, o = tl.inline_asm_elementwise(_DECODE_BF16, "=r,=r,r,r,r,r,r,r,r", [b, she, sho, mask],
                                             dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=2)
    else:
        w = b.to(tl.int32)
        e = ((w >> SH) & FIELD).to(tl.float32).to(DT)
        o = ((w >> (SH + 8)) & FIELD).to(tl.float32).to(DT)
    return e, o


@triton.jit
def _group_params(s_ptr, z_ptr, g, N, offs_c, c_mask, HAS_Z: tl.constexpr, BITS: tl.constexpr):
    """Scale and zero of group ``g`` for the even and odd columns of each pair (fp32 [H])."""
    base = g * N + 2 * offs_c
    s_e = tl.load(s_ptr + base, mask=c_mask, other=0.0).to(tl.float32)
    s_o = tl.load(s_ptr + base + 1, mask=c_mask, other=0.0).to(tl.float32)
    if HAS_Z:
        z_e = tl.load(z_ptr + base, mask=c_mask, other=0.0).to(tl.float32)
        z_o = tl.load(z_ptr + base + 1, mask=c_mask, other=0.0).to(tl.float32)
    else:
        z_e = tl.full(s_e.shape, 1 << (BITS - 1), tl.float32)
        z_o = z_e
    return s_e, s_o, z_e, z_o


@triton.jit
def _gemm_pairs_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, bias_ptr, ws_ptr, cnt_ptr, out_ptr, M, N, K, GS, K_SPLIT, stride_xm,
    BITS: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, STAGES: tl.constexpr, ASM: tl.constexpr,
):
    E: tl.constexpr = 8 // BITS
    BKE: tl.constexpr = BK // E
    H: tl.constexpr = BN // 2
    DT = x_ptr.dtype.element_ty
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_n = tl.cdiv(N, BN)
    pid_m = pid // num_n
    pid_n = pid % num_n
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_c = pid_n * H + tl.arange(0, H)  # column pairs
    offs_j = tl.arange(0, BKE)
    offs_k = tl.arange(0, BK)
    m_mask = offs_m < M
    c_mask = offs_c < N // 2
    q16 = q_ptr.to(tl.pointer_type(tl.uint16))
    acc_e = tl.zeros([BM, H], dtype=tl.float32)
    acc_o = tl.zeros([BM, H], dtype=tl.float32)
    k_lo = pid_k * K_SPLIT
    k_hi = tl.minimum(k_lo + K_SPLIT, K)
    # the group's scales/zeros are loaded one tile ahead (the codes and x are staged by the pipeliner)
    s_e, s_o, z_e, z_o = _group_params(s_ptr, z_ptr, k_lo // GS, N, offs_c, c_mask, HAS_Z, BITS)
    for k0 in tl.range(k_lo, k_hi, BK, num_stages=STAGES):
        b = tl.load(q16 + (k0 // E + offs_j)[:, None] * (N // 2) + offs_c[None, :], mask=c_mask[None, :], other=0)
        a = tl.load(x_ptr + offs_m[:, None] * stride_xm + (k0 + offs_k)[None, :], mask=m_mask[:, None], other=0.0)
        nxt = (k0 + BK < k_hi) & c_mask
        s_e2, s_o2, z_e2, z_o2 = _group_params(s_ptr, z_ptr, (k0 + BK) // GS, N, offs_c, nxt, HAS_Z, BITS)
        xs = tl.sum(a.to(tl.float32), axis=1)
        a0, a1, a2, a3, a4, a5, a6, a7 = split_slices(a, E, BM, BKE)
        d_e = tl.zeros([BM, H], dtype=tl.float32)
        d_o = tl.zeros([BM, H], dtype=tl.float32)
        for t in tl.static_range(E):
            w_e, w_o = _decode_slice(b, t, BITS, DT, ASM)
            at = _slice_of(a0, a1, a2, a3, a4, a5, a6, a7, t)
            d_e = tl.dot(at, w_e, d_e)
            d_o = tl.dot(at, w_o, d_o)
        acc_e += (d_e - xs[:, None] * z_e[None, :]) * s_e[None, :]
        acc_o += (d_o - xs[:, None] * z_o[None, :]) * s_o[None, :]
        s_e = s_e2
        s_o = s_o2
        z_e = z_e2
        z_o = z_o2
    acc = tl.reshape(tl.join(acc_e, acc_o), [BM, BN])  # column 2c + i = pair c, element i
    offs_n = pid_n * BN + tl.arange(0, BN)
    store_tile(acc, ws_ptr, cnt_ptr, out_ptr, bias_ptr, pid, offs_m, offs_n, m_mask, N, SPLIT_K, HAS_BIAS)


def pairs_block_k(block_k: int, w: DeviceWeight) -> Optional[int]:
    """The K tile: a power of two <= ``block_k`` (at least one dot's worth of rows per slice)
    dividing the group size; None if the width or group size allows none."""
    e = 8 // w.bits
    bk = 1 << (max(block_k, 1).bit_length() - 1)
    bk = max(bk, MIN_DOT_K * e)
    while bk >= MIN_DOT_K * e:
        if w.group_size % bk == 0:
            return bk
        bk //= 2
    return None


def gemm_plan(name: str, x: torch.Tensor, w: DeviceWeight, block_m: int, block_n: int, block_k: int,
              split_k: int) -> tuple:
    """The launch plan both tensor-core GEMMs (``gemm_pairs``, ``gemm_swap``) share: x checked
    against w, the K tile (inside one group), a K split dividing the tile count (1 when the
    problem does not fit the split-K workspace) and the output-tile count.
    -> (K tile, tiles, split_k, output tiles, workspace sums, counters)."""
    m, k = x.shape
    if k != w.k:
        raise ValueError(f"{name} expects x [M, {w.k}], got {tuple(x.shape)}")
    if x.stride(1) != 1:
        raise ValueError(f"{name}: x rows must be contiguous")
    bk = pairs_block_k(block_k, w)
    tiles = k // bk
    split_k = max(1, min(split_k, tiles))
    while tiles % split_k:
        split_k -= 1
    grid_mn = triton.cdiv(m, block_m) * triton.cdiv(w.n, block_n)
    ws, cnt, split_k = split_buffers(x.device, split_k, m * w.n, grid_mn)
    return bk, tiles, split_k, grid_mn, ws, cnt


def pairs_supported(w: DeviceWeight) -> bool:
    """Single-plane width, whole column pairs, a K tile inside one group."""
    return w.bits in WIDTHS and w.n % 2 == 0 and pairs_block_k(128, w) is not None


def gemm_pairs(x: torch.Tensor, w: DeviceWeight, bias: Optional[torch.Tensor] = None, *, block_m: int = 16,
               block_n: int = 128, block_k: int = 128, split_k: int = 1, num_warps: int = 4,
               stages: int = 3, maxnreg: Optional[int] = None) -> torch.Tensor:
    """y = x @ W.T (+ bias). x: [M, K] fp16/bf16 (fp32 for CPU tests), rows contiguous -> [M, N] x.dtype.
    ``maxnreg``: a register cap per thread (CUDA), to fit more programs per SM (on the H100 it
    was not faster, docs/gpu_kernels.md; kept for tuning on other GPUs)."""
    if not pairs_supported(w):
        raise ValueError(f"gemm_pairs needs 1/2/4/8-bit codes, even N and a group size of >= {MIN_DOT_K} slice "
                         f"rows; got bits={w.bits}, N={w.n}, group_size={w.group_size}")
    if block_n < 32 or block_n & (block_n - 1):
        raise ValueError(f"gemm_pairs: block_n must be a power of two >= 32, got {block_n}")
    if block_m < 16 or block_m > 128 or block_m & (block_m - 1):
        raise ValueError(f"gemm_pairs: block_m must be a power of two in 16..128 (one tensor-core tile), got {block_m}")
    bk, tiles, split_k, grid_mn, ws, cnt = gemm_plan("gemm_pairs", x, w, block_m, block_n, block_k, split_k)
    m, k = x.shape
    out = x.new_empty(m, w.n)
    _gemm_pairs_kernel[(grid_mn, split_k)](
        x, w.codes, w.scales, w.zeros if w.zeros is not None else w.scales, bias if bias is not None else w.scales,
        ws, cnt, out, m, w.n, k, w.group_size, tiles // split_k * bk, x.stride(0),
        w.bits, w.zeros is not None, bias is not None, split_k, block_m, block_n, bk, stages,
        # the PTX decode: fp16, or bf16 with codes under 128 (its magic number has 7 mantissa bits)
        inline_ptx(x.device) and (x.dtype == torch.float16 or (x.dtype == torch.bfloat16 and w.bits < 8)),
        num_warps=num_warps, **({"maxnreg": maxnreg} if maxnreg and x.is_cuda else {}),
    )
    return out
