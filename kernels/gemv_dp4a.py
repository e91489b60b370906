"""dp4a GEMV (M = 1, 4-bit weights, fp16/bf16/fp32 activations): integer dot products of 4 codes.

Family: the word GEMV (``gemv_words``) spends an AND/OR and an FMA on every code, which makes
an M = 1 call issue-bound on an H200 at about half the copy bandwidth. Here the codes stay
integers: ``dp4a`` multiplies 4 unsigned bytes by 4 signed bytes and adds them to an int32
in one instruction.

* Activations: a small first kernel cuts x into chunks of ``CX = min(group_size, 128)`` codes,
  scales each chunk to integers ``v = round(x / s)`` with ``|v| <= 127 * 128`` and splits
  them as ``v = 128 * h + l`` (``h`` in [-127, 127], ``l`` in [-64, 64]), both int8. The
  rounding error is under ``max|x| / 32512`` per element (16-bit activations, near fp16's own
  rounding), and the chunk's ``sum(s * v)`` is stored for the zero point.
* Weights: the same N-contiguous device layout as the other families, read as int32 words (4
  columns x one byte row). Four byte rows of a word column are transposed with 8 ``prmt``
  (4 words: one per column holding 4 byte rows = 8 codes), then per word one AND (even
  codes), one shift+AND (odd codes) and 4 ``dp4a`` (even/odd codes x h/l parts).
  About 1.4 instructions a code against ~4 in the word GEMV.
* Per x chunk: ``y += s_w * (s_x * (128 * sum(q*h) + sum(q*l)) - z * sum(s_x * v))``.

The words are staged through shared memory by the loop pipeliner (``STAGES``); K splits go
through the self-cleaning split-K workspace (``splitk_workspace.py``). Under ``TRITON_INTERPRET=1`` (no inline PTX)
the transpose and the dot products run as plain integer ops with the same results.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .gemv_words import finish_row, program_words
from .splitk_workspace import split_buffers
from .layout import DeviceWeight
from .unpack import inline_ptx

X_MAX = tl.constexpr(127 * 128)  # |v| bound: h = round(v / 128) stays in int8, l = v - 128 h in [-64, 64]


@triton.jit
def _quant_x_kernel(x_ptr, xw_ptr, xs_ptr, xsum_ptr, CX: tl.constexpr):
    """One chunk of CX activations -> int8 h/l parts packed for dp4a, scale, sum.

    Words per 8 codes (block i): [h of codes 8i+0,2,4,6 | h of 8i+1,3,5,7 | l even | l odd],
    byte j of a word holding code 8i + 2j (+1): the order the transposed weight bytes have."""
    c = tl.program_id(0)
    offs = c * CX + tl.arange(0, CX)
    x = tl.load(x_ptr + offs).to(tl.float32)
    amax = tl.max(tl.abs(x), axis=0)
    s = tl.where(amax > 0, amax / X_MAX, 1.0)
    v = tl.floor(x / s + 0.5)
    h = tl.floor(v / 128 + 0.5)
    lo = v - 128 * h
    tl.store(xs_ptr + c, s)
    tl.store(xsum_ptr + c, s * tl.sum(v, axis=0))
    shift = 8 * tl.arange(0, 4)[None, :, None]  # byte j of the word
    hw = tl.sum((tl.reshape(h.to(tl.int32), [CX // 8, 4, 2]) & 0xFF) << shift, axis=1)  # [CX/8, 2]
    lw = tl.sum((tl.reshape(lo.to(tl.int32), [CX // 8, 4, 2]) & 0xFF) << shift, axis=1)
    blk = c * (CX // 8) + tl.arange(0, CX // 8)[:, None]
    par = tl.arange(0, 2)[None, :]
    tl.store(xw_ptr + blk * 4 + par, hw)
    tl.store(xw_ptr + blk * 4 + 2 + par, lw)


@triton.jit
def _byte(w, j: tl.constexpr):
    return (w >> (8 * j)) & 0xFF


@triton.jit
def _transpose4(w0, w1, w2, w3, ASM: tl.constexpr):
    """4x4 byte transpose: word ``c`` of the result holds byte ``c`` of w0..w3 (bytes 0..3)."""
    if ASM:
        return tl.inline_asm_elementwise(
            """{
            .reg .b32 a, b, c, d;
            prmt.b32 a, $4, $5, 0x5140;
            prmt.b32 b, $4, $5, 0x7362;
            prmt.b32 c, $6, $7, 0x5140;
            prmt.b32 d, $6, $7, 0x7362;
            prmt.b32 $0, a, c, 0x5410;
            prmt.b32 $1, a, c, 0x7632;
            prmt.b32 $2, b, d, 0x5410;
            prmt.b32 $3, b, d, 0x7632;
            }""",
            "=r,=r,=r,=r,r,r,r,r", [w0, w1, w2, w3], dtype=(tl.int32, tl.int32, tl.int32, tl.int32),
            is_pure=True, pack=1)
    else:
        t0 = _byte(w0, 0) | (_byte(w1, 0) << 8) | (_byte(w2, 0) << 16) | (_byte(w3, 0) << 24)
        t1 = _byte(w0, 1) | (_byte(w1, 1) << 8) | (_byte(w2, 1) << 16) | (_byte(w3, 1) << 24)
        t2 = _byte(w0, 2) | (_byte(w1, 2) << 8) | (_byte(w2, 2) << 16) | (_byte(w3, 2) << 24)
        t3 = _byte(w0, 3) | (_byte(w1, 3) << 8) | (_byte(w2, 3) << 16) | (_byte(w3, 3) << 24)
        return t0, t1, t2, t3


@triton.jit
def _dp4a_ref(a, b):
    """sum over bytes j of unsigned a_j * signed b_j."""
    acc = _byte(a, 0) * ((b << 24) >> 24)
    acc += _byte(a, 1) * ((b << 16) >> 24)
    acc += _byte(a, 2) * ((b << 8) >> 24)
    acc += _byte(a, 3) * (b >> 24)
    return acc


@triton.jit
def _dot8(t, he, ho, le, lo, ASM: tl.constexpr):
    """The 8 codes of transposed word ``t`` (even codes in the low nibbles) against the
    activation words: (sum q*h, sum q*l)."""
    if ASM:
        return tl.inline_asm_elementwise(
            """{
            .reg .b32 e, o;
            and.b32 e, $2, 0x0F0F0F0F;
            shr.u32 o, $2, 4;
            and.b32 o, o, 0x0F0F0F0F;
            dp4a.u32.s32 $0, e, $3, 0;
            dp4a.u32.s32 $0, o, $4, $0;
            dp4a.u32.s32 $1, e, $5, 0;
            dp4a.u32.s32 $1, o, $6, $1;
            }""",
            "=r,=r,r,r,r,r,r", [t, he, ho, le, lo], dtype=(tl.int32, tl.int32), is_pure=True, pack=1)
    else:
        e = t & 0x0F0F0F0F
        o = (t >> 4) & 0x0F0F0F0F
        return _dp4a_ref(e, he) + _dp4a_ref(o, ho), _dp4a_ref(e, le) + _dp4a_ref(o, lo)


@triton.jit
def _dot8_acc(t, he, ho, le, lo, h, l, ASM: tl.constexpr):
    """``_dot8`` of one transposed word column, summed over the step's rows into (h, l)."""
    ph, pl = _dot8(t, he, ho, le, lo, ASM)
    return h + tl.sum(ph, axis=0), l + tl.sum(pl, axis=0)


@triton.jit
def _chunk_term(ah, al, sx, smx, s_ptr, z_ptr, g, N, offs_w, w_mask, C: tl.constexpr, HAS_Z: tl.constexpr):
    """``s_w * (s_x * sum q*v - z * sum x)`` of one x chunk for byte column ``C`` of each word."""
    cols = 4 * offs_w + C
    s = tl.load(s_ptr + g * N + cols, mask=w_mask, other=0.0).to(tl.float32)
    dot = (128 * ah + al).to(tl.float32) * sx
    if HAS_Z:
        z = tl.load(z_ptr + g * N + cols, mask=w_mask, other=0.0).to(tl.float32)
        return s * (dot - z * smx)
    else:
        return s * (dot - 8 * smx)


@triton.jit
def _gemv_dp4a_kernel(
    xw_ptr, xs_ptr, xsum_ptr, q_ptr, s_ptr, z_ptr, bias_ptr, ws_ptr, cnt_ptr, out_ptr,
    N, RG, RC, RPP,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr,
    BNW: tl.constexpr, R: tl.constexpr, STAGES: tl.constexpr, ASM: tl.constexpr,
):
    pid_n, pid_k, NW, offs_w, w_mask = program_words(N, BNW)
    R4: tl.constexpr = R // 4
    offs_i = tl.arange(0, R4)
    row_lo = pid_k * RPP
    zero = tl.zeros([BNW], dtype=tl.float32)
    o0, o1, o2, o3 = zero, zero, zero, zero
    izero = tl.zeros([BNW], dtype=tl.int32)  # this chunk's integer sums, per byte column: h and l parts
    h0, h1, h2, h3, l0, l1, l2, l3 = izero, izero, izero, izero, izero, izero, izero, izero
    ipc = RC // R  # steps per x chunk
    # byte rows 4i + j of the step: four tiles, so that each thread holds the 4 rows it transposes
    p0 = q_ptr + (4 * offs_i[:, None]) * NW + offs_w[None, :]
    m = w_mask[None, :]
    for it in tl.range(0, RPP // R, num_stages=STAGES):
        r0 = row_lo + it * R
        base = r0.to(tl.int64) * NW
        w0 = tl.load(p0 + base, mask=m, other=0)
        w1 = tl.load(p0 + base + NW, mask=m, other=0)
        w2 = tl.load(p0 + base + 2 * NW, mask=m, other=0)
        w3 = tl.load(p0 + base + 3 * NW, mask=m, other=0)
        xb = xw_ptr + (r0 // 4 + offs_i) * 4  # the step's 8-code blocks
        he = tl.load(xb)[:, None]
        ho = tl.load(xb + 1)[:, None]
        le = tl.load(xb + 2)[:, None]
        lo = tl.load(xb + 3)[:, None]
        t0, t1, t2, t3 = _transpose4(w0, w1, w2, w3, ASM)
        h0, l0 = _dot8_acc(t0, he, ho, le, lo, h0, l0, ASM)
        h1, l1 = _dot8_acc(t1, he, ho, le, lo, h1, l1, ASM)
        h2, l2 = _dot8_acc(t2, he, ho, le, lo, h2, l2, ASM)
        h3, l3 = _dot8_acc(t3, he, ho, le, lo, h3, l3, ASM)
        if (it + 1) % ipc == 0:  # end of an x chunk (inside one weight group)
            c = r0 // RC
            g = r0 // RG
            sx = tl.load(xs_ptr + c)
            smx = tl.load(xsum_ptr + c)
            o0 += _chunk_term(h0, l0, sx, smx, s_ptr, z_ptr, g, N, offs_w, w_mask, 0, HAS_Z)
            o1 += _chunk_term(h1, l1, sx, smx, s_ptr, z_ptr, g, N, offs_w, w_mask, 1, HAS_Z)
            o2 += _chunk_term(h2, l2, sx, smx, s_ptr, z_ptr, g, N, offs_w, w_mask, 2, HAS_Z)
            o3 += _chunk_term(h3, l3, sx, smx, s_ptr, z_ptr, g, N, offs_w, w_mask, 3, HAS_Z)
            h0, h1, h2, h3, l0, l1, l2, l3 = izero, izero, izero, izero, izero, izero, izero, izero
    finish_row(o0, o1, o2, o3, ws_ptr, cnt_ptr, out_ptr, bias_ptr, N, pid_n, offs_w, w_mask, SPLIT_K, BNW, HAS_BIAS)


def reference(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, zeros: Optional[torch.Tensor],
              group_size: int) -> torch.Tensor:
    """What the kernels compute, in float64 torch: x [1, K] split into integer chunks exactly as
    ``_quant_x_kernel`` does, then ``sum_g s_w * (s_x * sum q*v - z * s_x * sum v)``.
    codes [N, K] (0..15), scales/zeros [N, K / group_size] -> [1, N] float64."""
    k = x.shape[1]
    cx = x_chunk(group_size)
    xc = x.double().reshape(-1, cx).float()  # the kernel reads fp32
    amax = xc.abs().amax(1, keepdim=True)
    s = torch.where(amax > 0, amax / float(X_MAX), torch.ones_like(amax))
    v = torch.floor(xc / s + 0.5).double()
    qv = (codes.double().reshape(codes.shape[0], k // cx, cx) * v[None]).sum(-1)  # [N, chunks]
    sd = s.double().reshape(1, -1)
    z = zeros.double() if zeros is not None else torch.full_like(scales, 8, dtype=torch.float64)
    g = torch.arange(k // cx, device=x.device) * cx // group_size  # each chunk's group
    term = scales.double()[:, g] * (sd * qv - z[:, g] * sd * v.sum(1)[None])
    return term.sum(1)[None]


def x_chunk(group_size: int) -> int:
    """Activation codes per integer scale: the weight group, at most 128."""
    return min(group_size, 128)


def dp4a_supported(w: DeviceWeight) -> bool:
    """4-bit codes, whole words of columns, x chunks that tile the groups (and at least 32 codes)."""
    cx = x_chunk(w.group_size)
    return w.bits == 4 and w.n % 4 == 0 and cx >= 32 and cx & (cx - 1) == 0 and w.group_size % cx == 0 \
        and w.k % cx == 0


def _split(rows: int, unit: int, split_k: int) -> int:
    """The largest split <= split_k whose row ranges are whole multiples of ``unit`` rows."""
    for s in range(max(split_k, 1), 0, -1):
        if rows % s == 0 and (rows // s) % unit == 0:
            return s
    return 1


def gemv_dp4a(x: torch.Tensor, w: DeviceWeight, bias: Optional[torch.Tensor] = None, *, block_n: int = 512,
              rows: int = 32, split_k: int = 16, num_warps: int = 1, stages: int = 3) -> torch.Tensor:
    """y = x @ W.T (+ bias) for one row of x ([1, K] fp16/bf16/fp32, unit stride) -> [1, N] x.dtype.

    block_n: columns per program (a multiple of 4); rows: byte rows per step (a power of two,
    at least 4); split_k: K ranges over a second grid axis (reduced to one that holds whole
    x chunks); stages: shared-memory stages of the loop pipeliner (1 = none)."""
    if x.dim() != 2 or x.shape[0] != 1 or x.shape[1] != w.k or x.stride(1) != 1:
        raise ValueError(f"gemv_dp4a expects x [1, {w.k}] with unit stride along K, got {tuple(x.shape)} "
                         f"strides {x.stride()}")
    if not dp4a_supported(w):
        raise ValueError(f"gemv_dp4a needs 4-bit codes, N % 4 == 0 and groups of 32, 64 or a multiple of 128 "
                         f"codes, got bits={w.bits} N={w.n} group_size={w.group_size}")
    if rows < 4 or rows & (rows - 1):
        raise ValueError(f"gemv_dp4a: rows must be a power of two >= 4, got {rows}")
    cx = x_chunk(w.group_size)
    rc = cx // 2  # byte rows per x chunk
    r = min(rows, rc)
    total_rows = w.k // 2
    xw = torch.empty(w.k // 2, dtype=torch.int32, device=x.device)  # 4 words per 8 codes
    xs = torch.empty(w.k // cx, dtype=torch.float32, device=x.device)
    xsum = torch.empty_like(xs)
    _quant_x_kernel[(w.k // cx,)](x, xw, xs, xsum, cx, num_warps=1)
    split = _split(total_rows, rc, split_k)
    bnw = max(block_n // 4, 1)
    out = torch.empty(1, w.n, dtype=x.dtype, device=x.device)
    blocks = triton.cdiv(w.n // 4, bnw)
    ws, cnt, split = split_buffers(x.device, split, w.n, blocks)
    grid = (blocks, split)
    _gemv_dp4a_kernel[grid](xw, xs, xsum, w.codes.view(torch.int32), w.scales,
                            w.zeros if w.zeros is not None else w.scales, bias if bias is not None else w.scales,
                            ws, cnt, out, w.n, w.group_size // 2, rc, total_rows // split, w.zeros is not None,
                            bias is not None, split, bnw, r, max(stages, 1), inline_ptx(x.device), num_warps=num_warps)
    return out
