"""Word GEMV (M = 1..8) for single-plane widths (1, 2, 4, 8 bits): 32-bit loads, ~2.5 ops a code.

Family: reads the same N-contiguous device layout as the others, but as int32 words (4
columns x one byte row each, so ``N % 4 == 0``), each thread owning whole words of a few
byte rows. A code becomes a float without extracting it: one shift per byte puts the byte's
fields at mantissa bits 15..22, and one AND+OR (a single LOP3) per code gives the fp32
``f = 1 + q * 2**-j`` for field ``t``. With the activation pre-scaled by ``2**j``,
``f * x' = x' + q * x``, so one FMA per code accumulates ``sum q*x`` plus ``sum x'``, which is
subtracted once per group (exact powers of two; the cancellation costs under 2**-15
relative). The M = 1 kernel ORs in the exponent of ``2**j`` instead of 1.0's, so the field
decodes to ``2**j + q`` and x needs no pre-scaling. Per code: LOP3 + FFMA, plus a shift per byte.

Program ``(pid_n, pid_k)`` owns ``4 * BNW`` columns and ``rows_per_program`` byte rows, read
``R`` rows a step, either staged through shared memory by the loop pipeliner (``STAGES``) or
prefetched one step ahead into registers (``PREFETCH``). With
``SPLIT_K > 1`` partial sums go through the self-cleaning split-K workspace
(``splitk_workspace.py``): no memset or cast kernel per call, correct under graph replay.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .layout import DeviceWeight
from .splitk_workspace import finish_tile, split_buffers
from .unpack import pdl, pdl_wait

WIDTHS = (1, 2, 4, 8)
_ONE_BITS = 0x3F800000  # 1.0f
MAX_M = 8  # activation rows per call: each decoded code is reused this many times on CUDA cores


@triton.jit
def _field_f32(w, C: tl.constexpr, T: tl.constexpr, BITS: tl.constexpr, FPS: tl.constexpr, one):
    """fp32 ``1 + q * 2**-(BITS*(FPS-u))`` for field ``T`` (run ``T // FPS``, place ``u = T % FPS``)
    of byte ``C`` of each int32 word: the run is shifted so its top field ends at mantissa bit
    22, then one AND+OR keeps the field and sets the exponent of 1.0. The shift is the same for
    the ``FPS`` fields of a run, so the compiler computes it once."""
    SHIFT: tl.constexpr = 23 - BITS * FPS * (T // FPS + 1) - 8 * C
    FIELD: tl.constexpr = ((1 << BITS) - 1) << (23 - BITS * (FPS - T % FPS))
    if SHIFT >= 0:
        sh = w << SHIFT
    else:
        sh = w >> (-SHIFT)  # arithmetic shift: the sign bits are masked off below
    # ``one`` (the bits of 1.0f) is a kernel argument, not a literal: with one constant in a
    # register the AND and the OR fuse into a single LOP3 (two immediates cannot)
    return ((sh & FIELD) | one).to(tl.float32, bitcast=True)


@triton.jit
def program_words(N, BNW: tl.constexpr):
    """This program's column block (as int32 words of 4 columns) and K split."""
    pid_n = tl.program_id(0)
    NW = N // 4
    offs_w = pid_n * BNW + tl.arange(0, BNW)
    return pid_n, tl.program_id(1), NW, offs_w, offs_w < NW


@triton.jit
def _chunk_rows(RG, RPP, E: tl.constexpr):
    """Byte rows summed before a scale is applied: the group's rows inside this program,
    at most 128 codes' worth where that divides them (long per-channel groups: short sums keep
    the cancellation error of the decode small)."""
    ch = tl.minimum(RG, RPP)
    CAP: tl.constexpr = 128 // E
    if ch > CAP and ch % CAP == 0:
        ch = CAP
    return ch


@triton.jit
def _gemv_words_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, bias_ptr, ws_ptr, cnt_ptr, out_ptr,
    N, RG, RPP, one,
    BITS: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr,
    BNW: tl.constexpr, R: tl.constexpr, PREFETCH: tl.constexpr, STAGES: tl.constexpr, PDL: tl.constexpr,
):
    E: tl.constexpr = 8 // BITS
    # fields per shift: 4-bit shares one shift per byte (lowest field at 2**-8); 1/2-bit use
    # runs whose lowest field is at 2**-4, keeping the cancellation error near 1e-6
    FPS: tl.constexpr = 2 if BITS == 4 else (1 if BITS == 8 else 4 // BITS)
    pid_n, pid_k, NW, offs_w, w_mask = program_words(N, BNW)
    offs_r = tl.arange(0, R)
    row_lo = pid_k * RPP
    ch = _chunk_rows(RG, RPP, E)
    o0 = tl.zeros([BNW], dtype=tl.float32)
    o1 = o0
    o2 = o0
    o3 = o0
    a0 = o0
    a1 = o0
    a2 = o0
    a3 = o0
    cx = tl.zeros([R], dtype=tl.float32)  # sum of the pre-scaled activations
    sx = tl.zeros([R], dtype=tl.float32)  # sum of the activations
    n_it = RPP // R
    ipc = ch // R  # steps per scale chunk
    ptrs = q_ptr + offs_r[:, None] * NW + offs_w[None, :]
    if PDL:  # before any load: the previous kernel may have written x, the workspace, even the codes
        pdl_wait()
    wt = tl.load(ptrs + row_lo.to(tl.int64) * NW, mask=w_mask[None, :], other=0)
    for it in tl.range(0, n_it, num_stages=STAGES):
        r0 = row_lo + it * R
        if PREFETCH:  # next step's words in flight while this step computes
            nxt = row_lo + tl.minimum(it + 1, n_it - 1) * R  # the last step reloads its own rows
            wn = tl.load(ptrs + nxt.to(tl.int64) * NW, mask=w_mask[None, :], other=0)
        else:
            wt = tl.load(ptrs + r0.to(tl.int64) * NW, mask=w_mask[None, :], other=0)
        rows = r0 + offs_r
        if E == 2:  # both fields' activations are adjacent: one vector load, split in registers
            xa, xb = tl.split(tl.load(x_ptr + rows[:, None] * 2 + tl.arange(0, 2)[None, :]).to(tl.float32))
        for t in tl.static_range(E):
            if E == 2:
                xv = xa if t == 0 else xb
            else:
                xv = tl.load(x_ptr + rows * E + t).to(tl.float32)
            # with the exponent of 2**j in place of 1.0's the field decodes to 2**j + q, so
            # f * x = 2**j * x + q * x and x needs no pre-scaling
            one_t = one + ((BITS * (FPS - t % FPS)) << 23)
            cx = tl.fma(xv, 1 << (BITS * (FPS - t % FPS)), cx)  # exact power of two
            sx += xv
            a0 += tl.sum(_field_f32(wt, 0, t, BITS, FPS, one_t) * xv[:, None], axis=0)
            a1 += tl.sum(_field_f32(wt, 1, t, BITS, FPS, one_t) * xv[:, None], axis=0)
            a2 += tl.sum(_field_f32(wt, 2, t, BITS, FPS, one_t) * xv[:, None], axis=0)
            a3 += tl.sum(_field_f32(wt, 3, t, BITS, FPS, one_t) * xv[:, None], axis=0)
        if (it + 1) % ipc == 0:  # end of a scale chunk: apply the group's scale and zero
            g = r0 // RG
            cxs = tl.sum(cx, axis=0)
            sxs = tl.sum(sx, axis=0)
            o0 += _group_term_1d(a0, cxs, sxs, s_ptr, z_ptr, g, N, offs_w, w_mask, 0, HAS_Z, BITS)
            o1 += _group_term_1d(a1, cxs, sxs, s_ptr, z_ptr, g, N, offs_w, w_mask, 1, HAS_Z, BITS)
            o2 += _group_term_1d(a2, cxs, sxs, s_ptr, z_ptr, g, N, offs_w, w_mask, 2, HAS_Z, BITS)
            o3 += _group_term_1d(a3, cxs, sxs, s_ptr, z_ptr, g, N, offs_w, w_mask, 3, HAS_Z, BITS)
            a0 = tl.zeros([BNW], dtype=tl.float32)
            a1 = a0
            a2 = a0
            a3 = a0
            cx = tl.zeros([R], dtype=tl.float32)
            sx = cx
        if PREFETCH:
            wt = wn
    finish_row(o0, o1, o2, o3, ws_ptr, cnt_ptr, out_ptr, bias_ptr, N, pid_n, offs_w, w_mask, SPLIT_K, BNW, HAS_BIAS)


@triton.jit
def finish_row(o0, o1, o2, o3, ws_ptr, cnt_ptr, out_ptr, bias_ptr, N, pid_n, offs_w, w_mask,
               SPLIT_K: tl.constexpr, BNW: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Store one row's sums ``o<C>`` (byte column C of each word): directly, or with
    ``SPLIT_K > 1`` through the self-cleaning workspace, the last program of the column block
    writing the output."""
    if SPLIT_K == 1:
        _store_cols_1d(out_ptr, bias_ptr, o0, offs_w, w_mask, 0, HAS_BIAS)
        _store_cols_1d(out_ptr, bias_ptr, o1, offs_w, w_mask, 1, HAS_BIAS)
        _store_cols_1d(out_ptr, bias_ptr, o2, offs_w, w_mask, 2, HAS_BIAS)
        _store_cols_1d(out_ptr, bias_ptr, o3, offs_w, w_mask, 3, HAS_BIAS)
    else:
        tl.atomic_add(ws_ptr + 4 * offs_w, o0, mask=w_mask, sem="relaxed")
        tl.atomic_add(ws_ptr + 4 * offs_w + 1, o1, mask=w_mask, sem="relaxed")
        tl.atomic_add(ws_ptr + 4 * offs_w + 2, o2, mask=w_mask, sem="relaxed")
        tl.atomic_add(ws_ptr + 4 * offs_w + 3, o3, mask=w_mask, sem="relaxed")
        row = tl.arange(0, 1)  # the output as a one-row tile
        finish_tile(ws_ptr, cnt_ptr, out_ptr, bias_ptr, pid_n, row, pid_n * (4 * BNW) + tl.arange(0, 4 * BNW), row < 1, N,
                    SPLIT_K, HAS_BIAS)


@triton.jit
def _group_term_1d(a, cxs, sxs, s_ptr, z_ptr, g, N, offs_w, w_mask, C: tl.constexpr, HAS_Z: tl.constexpr,
                BITS: tl.constexpr):
    """``s * (sum q*x - z * sum x)`` of one group for byte column ``C`` of each word."""
    cols = 4 * offs_w + C
    s = tl.load(s_ptr + g * N + cols, mask=w_mask, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + g * N + cols, mask=w_mask, other=0.0).to(tl.float32)
        return s * (a - cxs - z * sxs)
    else:
        return s * (a - cxs - (1 << (BITS - 1)) * sxs)


@triton.jit
def _store_cols_1d(out_ptr, bias_ptr, o, offs_w, w_mask, C: tl.constexpr, HAS_BIAS: tl.constexpr):
    cols = 4 * offs_w + C
    if HAS_BIAS:
        o += tl.load(bias_ptr + cols, mask=w_mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + cols, o.to(out_ptr.dtype.element_ty), mask=w_mask)


@triton.jit
def _gemv_words_rows_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, bias_ptr, ws_ptr, cnt_ptr, out_ptr,
    M, N, RG, RPP, stride_xm, one,
    BITS: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr,
    BM: tl.constexpr, BNW: tl.constexpr, R: tl.constexpr, PREFETCH: tl.constexpr, STAGES: tl.constexpr,
):
    E: tl.constexpr = 8 // BITS
    FPS: tl.constexpr = 2 if BITS == 4 else (1 if BITS == 8 else 4 // BITS)
    pid_n, pid_k, NW, offs_w, w_mask = program_words(N, BNW)
    offs_r = tl.arange(0, R)
    offs_m = tl.arange(0, BM)
    m_mask = offs_m < M
    row_lo = pid_k * RPP
    ch = _chunk_rows(RG, RPP, E)
    # per activation row m and byte column c of each word: running sums a (this chunk), o (all)
    o0 = tl.zeros([BM, BNW], dtype=tl.float32)
    o1 = o0
    o2 = o0
    o3 = o0
    a0 = o0
    a1 = o0
    a2 = o0
    a3 = o0
    cx = tl.zeros([BM, R], dtype=tl.float32)  # sum of the pre-scaled activations
    sx = cx  # sum of the activations
    n_it = RPP // R
    ipc = ch // R  # steps per scale chunk
    ptrs = q_ptr + offs_r[:, None] * NW + offs_w[None, :]
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_r[None, :] * E
    wt = tl.load(ptrs + row_lo.to(tl.int64) * NW, mask=w_mask[None, :], other=0)
    for it in tl.range(0, n_it, num_stages=STAGES):
        r0 = row_lo + it * R
        if PREFETCH:  # next step's words in flight while this step computes
            nxt = row_lo + tl.minimum(it + 1, n_it - 1) * R  # the last step reloads its own rows
            wn = tl.load(ptrs + nxt.to(tl.int64) * NW, mask=w_mask[None, :], other=0)
        else:
            wt = tl.load(ptrs + r0.to(tl.int64) * NW, mask=w_mask[None, :], other=0)
        for t in tl.static_range(E):
            xv = tl.load(x_ptrs + (r0 * E + t), mask=m_mask[:, None], other=0.0).to(tl.float32)
            xs = xv * (1 << (BITS * (FPS - t % FPS)))  # exact power of two
            cx += xs
            sx += xv
            a0 += _rows_dot(_field_f32(wt, 0, t, BITS, FPS, one), xs, BM)
            a1 += _rows_dot(_field_f32(wt, 1, t, BITS, FPS, one), xs, BM)
            a2 += _rows_dot(_field_f32(wt, 2, t, BITS, FPS, one), xs, BM)
            a3 += _rows_dot(_field_f32(wt, 3, t, BITS, FPS, one), xs, BM)
        if (it + 1) % ipc == 0:  # end of a scale chunk: apply the group's scale and zero
            g = r0 // RG
            cxs = tl.sum(cx, axis=1)[:, None]
            sxs = tl.sum(sx, axis=1)[:, None]
            o0 += _group_term(a0, cxs, sxs, s_ptr, z_ptr, g, N, offs_w, w_mask, 0, HAS_Z, BITS)
            o1 += _group_term(a1, cxs, sxs, s_ptr, z_ptr, g, N, offs_w, w_mask, 1, HAS_Z, BITS)
            o2 += _group_term(a2, cxs, sxs, s_ptr, z_ptr, g, N, offs_w, w_mask, 2, HAS_Z, BITS)
            o3 += _group_term(a3, cxs, sxs, s_ptr, z_ptr, g, N, offs_w, w_mask, 3, HAS_Z, BITS)
            a0 = tl.zeros([BM, BNW], dtype=tl.float32)
            a1 = a0
            a2 = a0
            a3 = a0
            cx = tl.zeros([BM, R], dtype=tl.float32)
            sx = cx
        if PREFETCH:
            wt = wn
    mw_mask = m_mask[:, None] & w_mask[None, :]
    if SPLIT_K == 1:
        _store_cols(out_ptr, bias_ptr, o0, offs_m, offs_w, mw_mask, N, 0, HAS_BIAS)
        _store_cols(out_ptr, bias_ptr, o1, offs_m, offs_w, mw_mask, N, 1, HAS_BIAS)
        _store_cols(out_ptr, bias_ptr, o2, offs_m, offs_w, mw_mask, N, 2, HAS_BIAS)
        _store_cols(out_ptr, bias_ptr, o3, offs_m, offs_w, mw_mask, N, 3, HAS_BIAS)
    else:
        ws_cols = ws_ptr + offs_m[:, None] * N + 4 * offs_w[None, :]
        tl.atomic_add(ws_cols, o0, mask=mw_mask, sem="relaxed")
        tl.atomic_add(ws_cols + 1, o1, mask=mw_mask, sem="relaxed")
        tl.atomic_add(ws_cols + 2, o2, mask=mw_mask, sem="relaxed")
        tl.atomic_add(ws_cols + 3, o3, mask=mw_mask, sem="relaxed")
        offs_n = pid_n * (4 * BNW) + tl.arange(0, 4 * BNW)
        finish_tile(ws_ptr, cnt_ptr, out_ptr, bias_ptr, pid_n, offs_m, offs_n, m_mask, N, SPLIT_K, HAS_BIAS)


@triton.jit
def _rows_dot(f, xs, BM: tl.constexpr):
    """``sum_r f[r, :] * xs[m, r]`` for each activation row m: [R, BNW] x [BM, R] -> [BM, BNW]."""
    return tl.sum(f[None, :, :] * xs[:, :, None], axis=1)


@triton.jit
def _group_term(a, cxs, sxs, s_ptr, z_ptr, g, N, offs_w, w_mask, C: tl.constexpr, HAS_Z: tl.constexpr,
                BITS: tl.constexpr):
    """``s * (sum q*x - z * sum x)`` of one group for byte column ``C`` of each word;
    a: [BM, BNW]; cxs, sxs: [BM, 1]."""
    cols = 4 * offs_w + C
    s = tl.load(s_ptr + g * N + cols, mask=w_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_Z:
        z = tl.load(z_ptr + g * N + cols, mask=w_mask, other=0.0).to(tl.float32)[None, :]
        return s * (a - cxs - z * sxs)
    else:
        return s * (a - cxs - (1 << (BITS - 1)) * sxs)


@triton.jit
def _store_cols(out_ptr, bias_ptr, o, offs_m, offs_w, mask, N, C: tl.constexpr, HAS_BIAS: tl.constexpr):
    cols = 4 * offs_w + C
    if HAS_BIAS:
        o += tl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + offs_m[:, None] * N + cols[None, :], o.to(out_ptr.dtype.element_ty), mask=mask)


def words_supported(w: DeviceWeight) -> bool:
    """Single-plane width, whole words of columns, whole groups of byte rows."""
    return w.bits in WIDTHS and w.n % 4 == 0 and w.group_size % (8 // w.bits) == 0


def words_split(rows: int, rows_per_group: int, split_k: int, r: int) -> Optional[int]:
    """The largest split <= ``split_k`` whose row ranges are whole multiples of ``r`` rows and
    either hold whole groups or lie inside one group; None if even 1 does not fit."""
    for s in range(max(split_k, 1), 0, -1):
        if rows % s:
            continue
        rpp = rows // s
        if rpp % r:
            continue
        if (rpp >= rows_per_group and rpp % rows_per_group == 0 and rows_per_group % r == 0) or \
                (rpp < rows_per_group and rows_per_group % rpp == 0):
            return s
    return None


def gemv_words(x: torch.Tensor, w: DeviceWeight, bias: Optional[torch.Tensor] = None, *, block_n: int = 256,
               rows: int = 16, split_k: int = 8, num_warps: int = 1, num_stages: int = 1,
               prefetch: bool = True, stages: int = 1) -> torch.Tensor:
    """y = x @ W.T (+ bias). x: [M, K] fp16/bf16/fp32 (M <= MAX_M; unit stride along K) ->
    [M, N] x.dtype. Every row of x reuses each decoded code (CUDA cores, no tensor cores).

    block_n: columns per program (a multiple of 4); rows: byte rows loaded per step (a power
    of two); split_k: K ranges over a second grid axis (reduced to one that fits); stages > 1:
    the loop pipeliner stages the words through shared memory (``cp.async``), ``stages - 1``
    steps ahead, so the words in flight need no registers (254 -> 168 a thread; the M = 1 default); else
    prefetch: load the next step into registers while this one computes (a second step
    ahead and register caps were measured slower on an H200: docs/gpu_kernels.md)."""
    if x.dim() != 2 or not 1 <= x.shape[0] <= MAX_M or x.shape[1] != w.k or x.stride(1) != 1:
        raise ValueError(f"gemv_words expects x [M <= {MAX_M}, {w.k}] with unit stride along K, got "
                         f"{tuple(x.shape)} strides {x.stride()}")
    if not words_supported(w):
        raise ValueError(f"gemv_words needs bits in {WIDTHS} and N % 4 == 0, got bits={w.bits} N={w.n}")
    m = x.shape[0]
    e = 8 // w.bits
    total_rows = w.k // e
    rg = w.group_size // e
    r = min(rows, rg) if rg % min(rows, rg) == 0 else 1
    split = words_split(total_rows, rg, split_k, r)
    if split is None:
        raise ValueError(f"gemv_words: no K split fits K={w.k} group_size={w.group_size} rows={r}")
    bnw = max(block_n // 4, 1)
    out = torch.empty(m, w.n, dtype=x.dtype, device=x.device)
    blocks = triton.cdiv(w.n // 4, bnw)
    ws, cnt, split = split_buffers(x.device, split, m * w.n, blocks)
    grid = (blocks, split)
    kw = dict(num_warps=num_warps, num_stages=num_stages)
    args = (x, w.codes.view(torch.int32), w.scales, w.zeros if w.zeros is not None else w.scales,
            bias if bias is not None else w.scales, ws, cnt, out)
    if m == 1:  # 1-D accumulators: the multi-row kernel's [1, BNW] tensors cost registers
        use_pdl = pdl(x.device)
        _gemv_words_kernel[grid](*args, w.n, rg, total_rows // split, _ONE_BITS, w.bits, w.zeros is not None,
                                 bias is not None, split, bnw, r, bool(prefetch) and stages <= 1, max(stages, 1),
                                 use_pdl, **kw, **({"launch_pdl": True} if use_pdl else {}))
    else:
        _gemv_words_rows_kernel[grid](*args, m, w.n, rg, total_rows // split, x.stride(0), _ONE_BITS, w.bits,
                                      w.zeros is not None, bias is not None, split, 1 << (m - 1).bit_length(), bnw,
                                      r, bool(prefetch) and stages <= 1, max(stages, 1), **kw)
    return out
