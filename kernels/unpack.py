"""Shared ``@triton.jit`` helpers: unpack one slice of a K tile of codes, and load scales.

Every kernel family reads the device layout of ``kernels/layout.py``. A K tile of ``BK``
codes starting at ``k0`` is read as ``E`` *slices* of ``BKE = BK // E`` rows; slice ``t``
holds the codes ``k = k0 + E*j + t`` for ``j in [0, BKE)``. With that split, every byte of
every plane is loaded exactly once per tile (a plane of width ``w`` serves ``8/w``
consecutive slices from one load) and no shuffle is needed: the activation is read with
stride ``E`` to match. Kernels call :func:`unpack_slice` in a ``tl.static_range(E)`` loop,
threading the loaded byte tiles ``b0, b1, b2`` through it.

This module knows nothing about the op, the backend or the tensor subclass.
"""
import functools
import os

import triton
import triton.language as tl


def inline_ptx(device) -> bool:
    """Whether kernels on ``device`` may run inline PTX: CUDA, and not the Triton interpreter
    (which cannot execute it; kernels then take their plain-Triton path)."""
    return device.type == "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1"


@functools.lru_cache(maxsize=None)
def _pdl_ok(index: int) -> bool:
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return False
    import torch

    # griddepcontrol is sm_90+ PTX; the launch attribute needs a Triton that sets it
    return "launch_pdl" in getattr(CUDAOptions, "__dataclass_fields__", {}) and torch.cuda.get_device_capability(index) >= (9, 0)


def pdl(device) -> bool:
    """Whether launches on ``device`` use programmatic dependent launch: the kernel may start
    while the previous kernel in the stream finishes, and waits for it (``pdl_wait``) before
    touching memory that kernel could have written. Hopper and later, a Triton with the
    ``launch_pdl`` option, inline PTX allowed; ``LOWBIT_PDL=0`` turns it off."""
    return inline_ptx(device) and os.environ.get("LOWBIT_PDL", "1") != "0" and _pdl_ok(device.index or 0)


@triton.jit
def pdl_wait():
    """Wait until the previous grid in the stream has completed and its writes are visible
    (a no-op without programmatic dependent launch)."""
    tl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _plane(q_ptr, N, row0, k0, offs_j, offs_n, mask, b, T: tl.constexpr, W: tl.constexpr, E: tl.constexpr):
    """Bits of slice ``T`` from the plane of width ``W`` starting at row ``row0``.

    b: the byte tile [BKE, BN] uint8 this plane loaded for an earlier slice (reloaded here
    when slice T starts a new byte). Returns (codes part [BKE, BN] int32, byte tile).
    """
    EPW: tl.constexpr = 8 // W  # codes per byte of this plane
    if T % EPW == 0:
        rows = row0 + k0 // EPW + (E // EPW) * offs_j + T // EPW
        ptrs = q_ptr + rows.to(tl.int64)[:, None] * N + offs_n[None, :]
        b = tl.load(ptrs, mask=mask, other=0)
    part = (b.to(tl.int32) >> ((T % EPW) * W)) & ((1 << W) - 1)
    return part, b


@triton.jit
def unpack_slice(
    q_ptr, N, K, k0, offs_j, offs_n, mask, b0, b1, b2,
    T: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, E: tl.constexpr,
):
    """Codes of slice ``T`` of the tile at ``k0``: [BKE, BN] int32 in [0, 2**bits).

    q_ptr: device-layout codes [K*bits/8, N] uint8; offs_j: [BKE] slice rows; offs_n: [BN]
    columns; mask: [BKE, BN] valid elements (masked codes read as 0). W0, W1, W2: plane
    widths widest first (0 = absent); the first plane holds the lowest bits.
    Returns (codes, b0, b1, b2), the byte tiles to pass to the next slice.
    """
    q, b0 = _plane(q_ptr, N, 0, k0, offs_j, offs_n, mask, b0, T, W0, E)
    if W1 > 0:
        q1, b1 = _plane(q_ptr, N, (K // 8) * W0, k0, offs_j, offs_n, mask, b1, T, W1, E)
        q = q | (q1 << W0)
    if W2 > 0:
        q2, b2 = _plane(q_ptr, N, (K // 8) * (W0 + W1), k0, offs_j, offs_n, mask, b2, T, W2, E)
        q = q | (q2 << (W0 + W1))
    return q, b0, b1, b2


@triton.jit
def codes_to_f32(q):
    """Exact fp32 value of int32 codes in [0, 2**23) without an int->float conversion
    instruction (a quarter-rate op on Hopper that bounded the GEMV): OR the code into the
    mantissa of 2**23, reinterpret as fp32, subtract 2**23 (exact)."""
    MAGIC: tl.constexpr = 0x4B000000  # bit pattern of 2.0**23
    TWO_POW_23: tl.constexpr = 8388608.0
    return (q | MAGIC).to(tl.float32, bitcast=True) - TWO_POW_23


@triton.jit
def load_group_params(s_ptr, z_ptr, g, N, offs_n, n_mask, HAS_Z: tl.constexpr, BITS: tl.constexpr):
    """Scale and zero of group ``g`` (scalar or tensor of group indices broadcastable with
    offs_n) as fp32. s_ptr/z_ptr: [G, N] N-contiguous. Symmetric (HAS_Z False): zero is
    the constant 2**(BITS-1)."""
    # g * N < G * N elements of the scales tensor, so int32 holds it; offs_n is int64
    off = offs_n + g * N
    s = tl.load(s_ptr + off, mask=n_mask, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + off, mask=n_mask, other=0.0).to(tl.float32)
    else:
        z = tl.full(s.shape, 1 << (BITS - 1), tl.float32)
    return s, z


@triton.jit
def gemv_tile(
    d2, xs, x_ptr, q_ptr, N, K, k0, offs_j, offs_n, n_mask,
    W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, E: tl.constexpr,
    BKE: tl.constexpr, BN: tl.constexpr, INT: tl.constexpr,
):
    """One K tile of a single-row product, before scales, accumulated in 2-D so the
    caller reduces over K once per group: ``d2 [BKE, BN] += x[k] * q[k, n]`` and
    ``xs [BKE] += x[k]`` over the tile's slices.

    x_ptr: the activation row (fp16/bf16/fp32, or int8 when INT). d2/xs are fp32 for
    float activations, int32 (exact) when INT. Rows past K are masked to 0.
    """
    j_mask = k0 + E * offs_j < K
    mask = j_mask[:, None] & n_mask[None, :]
    b0 = tl.zeros([BKE, BN], dtype=tl.uint8)
    b1 = b0
    b2 = b0
    for t in tl.static_range(E):
        q, b0, b1, b2 = unpack_slice(q_ptr, N, K, k0, offs_j, offs_n, mask, b0, b1, b2, t, W0, W1, W2, E)
        xv = tl.load(x_ptr + k0 + E * offs_j + t, mask=j_mask, other=0)
        if INT:
            xt = xv.to(tl.int32)
            d2 += xt[:, None] * q
        else:
            xt = xv.to(tl.float32)
            d2 += xt[:, None] * codes_to_f32(q)
        xs += xt
    return d2, xs


@triton.jit
def load_a_tile(x_ptr, stride_xm, offs_m, m_mask, K, k0, k_end, BK: tl.constexpr):
    """Activation tile ``x[offs_m, k0:k0+BK]`` [BM, BK], contiguous along K (16-byte
    loads); zeros past K, or everywhere when ``k0 >= k_end`` (a prefetch past the range)."""
    offs_k = k0 + tl.arange(0, BK)
    mask = m_mask[:, None] & ((offs_k < K) & (k0 < k_end))[None, :]
    return tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=mask, other=0)


@triton.jit
def _slice_of(a0, a1, a2, a3, a4, a5, a6, a7, T: tl.constexpr):
    if T == 0:
        r = a0
    elif T == 1:
        r = a1
    elif T == 2:
        r = a2
    elif T == 3:
        r = a3
    elif T == 4:
        r = a4
    elif T == 5:
        r = a5
    elif T == 6:
        r = a6
    else:
        r = a7
    return r


@triton.jit
def split_slices(a, E: tl.constexpr, BM: tl.constexpr, BKE: tl.constexpr):
    """Split an activation tile [BM, BK] (natural K order) into its E slices [BM, BKE]:
    slice t holds columns ``E*j + t``. Returns 8 tensors (unused ones repeat slice 0);
    pick one with ``_slice_of``. Pure register shuffles (tl.reshape + tl.split)."""
    if E == 1:
        a0 = a
        a1 = a
        a2 = a
        a3 = a
        a4 = a
        a5 = a
        a6 = a
        a7 = a
    elif E == 2:
        a0, a1 = tl.split(tl.reshape(a, [BM, BKE, 2]))
        a2 = a0
        a3 = a0
        a4 = a0
        a5 = a0
        a6 = a0
        a7 = a0
    elif E == 4:
        lo, hi = tl.split(tl.reshape(a, [BM, BKE, 2, 2]))  # by bit 0 of t
        a0, a2 = tl.split(lo)
        a1, a3 = tl.split(hi)
        a4 = a0
        a5 = a0
        a6 = a0
        a7 = a0
    else:
        ev, od = tl.split(tl.reshape(a, [BM, BKE, 2, 2, 2]))  # by bit 0 of t
        e0, e1 = tl.split(ev)  # by bit 1
        o0, o1 = tl.split(od)
        a0, a4 = tl.split(e0)  # by bit 2
        a2, a6 = tl.split(e1)
        a1, a5 = tl.split(o0)
        a3, a7 = tl.split(o1)
    return a0, a1, a2, a3, a4, a5, a6, a7


@triton.jit
def dot_tile(
    acc, a, s, z, q_ptr, s_ptr, z_ptr, N, K, GS, k0, offs_j, offs_n, n_mask,
    W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, E: tl.constexpr, BITS: tl.constexpr,
    HAS_Z: tl.constexpr, PER_TILE: tl.constexpr, BM: tl.constexpr, BKE: tl.constexpr, BN: tl.constexpr,
):
    """acc [BM, BN] fp32 += a [BM, BK] @ dequant(W)[k0:k0+BK, offs_n] on tensor cores.

    a: the activation tile from ``load_a_tile`` (loaded an iteration ahead by the caller);
    s, z: [1, BN] fp32 group scale/zero when PER_TILE (the tile lies in one group), else
    ignored and each slice row looks up its own group. Each slice is dequantized as
    ``(q - z) * s`` in fp32, rounded once to the activation dtype (the reference's
    rounding), and multiplied with ``tl.dot`` into the fp32 accumulator.
    """
    j_mask = k0 + E * offs_j < K
    mask = j_mask[:, None] & n_mask[None, :]
    a0, a1, a2, a3, a4, a5, a6, a7 = split_slices(a, E, BM, BKE)
    b0 = tl.zeros([BKE, BN], dtype=tl.uint8)
    b1 = b0
    b2 = b0
    for t in tl.static_range(E):
        q, b0, b1, b2 = unpack_slice(q_ptr, N, K, k0, offs_j, offs_n, mask, b0, b1, b2, t, W0, W1, W2, E)
        if not PER_TILE:
            g = (k0 + E * offs_j + t) // GS
            s, z = load_group_params(s_ptr, z_ptr, g[:, None], N, offs_n[None, :], mask, HAS_Z, BITS)
        wt = ((codes_to_f32(q) - z) * s).to(a.dtype)
        acc = tl.dot(_slice_of(a0, a1, a2, a3, a4, a5, a6, a7, t), wt, acc)
    return acc


@triton.jit
def _plane_rows(q_ptr, N, row0, offs_k, mask, offs_n, W: tl.constexpr):
    """Bits of codes ``offs_k`` (any order) from the plane of width ``W`` at row ``row0``:
    [len(offs_k), BN] int32. Each byte is loaded once per code it holds (the repeats hit L1)."""
    EPW: tl.constexpr = 8 // W  # codes per byte of this plane
    rows = row0 + offs_k // EPW
    b = tl.load(q_ptr + rows.to(tl.int64)[:, None] * N + offs_n[None, :], mask=mask, other=0)
    return (b.to(tl.int32) >> ((offs_k % EPW) * W)[:, None]) & ((1 << W) - 1)


@triton.jit
def codes_in_order(q_ptr, N, K, offs_k, offs_n, mask, W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr):
    """Codes of rows ``offs_k`` in natural K order, [len(offs_k), BN] int32 in [0, 2**bits):
    a row per code, so no slices to reassemble (the planes as in ``unpack_slice``)."""
    q = _plane_rows(q_ptr, N, 0, offs_k, mask, offs_n, W0)
    if W1 > 0:
        q = q | (_plane_rows(q_ptr, N, (K // 8) * W0, offs_k, mask, offs_n, W1) << W0)
    if W2 > 0:
        q = q | (_plane_rows(q_ptr, N, (K // 8) * (W0 + W1), offs_k, mask, offs_n, W2) << (W0 + W1))
    return q


@triton.jit
def signed_codes(q_ptr, N, K, offs_k, offs_n, mask, W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr,
                 BITS: tl.constexpr):
    """``codes_in_order(...) - 2**(bits-1)``: int32 in [-2**(bits-1), 2**(bits-1)), so every
    width fits an int8 dot operand (the int8 GEMM's OFF)."""
    return codes_in_order(q_ptr, N, K, offs_k, offs_n, mask, W0, W1, W2) - (1 << (BITS - 1))


@triton.jit
def dot_tile_int8(
    acc, xsum, a, q_ptr, N, K, k0, offs_n, n_mask,
    W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, BITS: tl.constexpr,
    BK: tl.constexpr, USE_DOT: tl.constexpr, XSUM: tl.constexpr,
):
    """Exact int32 ``acc [BM, BN] += a @ (q - OFF)[k0:k0+BK, offs_n]`` with OFF = 2**(bits-1),
    so every width's codes fit int8 (symmetric weights need no other correction), and
    ``xsum [BM] += sum_k a`` when XSUM (asymmetric: the caller subtracts ``(z - OFF) * xsum``).
    a: [BM, BK] int8 activation tile from ``load_a_tile``, natural K order like the codes.
    USE_DOT: one int8 ``tl.dot`` (BM >= 16, BK >= 32: the sm_90 minimum); else a CUDA-core
    multiply-reduce.
    """
    offs_k = k0 + tl.arange(0, BK)
    mask = (offs_k < K)[:, None] & n_mask[None, :]
    w = signed_codes(q_ptr, N, K, offs_k, offs_n, mask, W0, W1, W2, BITS)
    if USE_DOT:
        acc = tl.dot(a, w.to(tl.int8), acc, out_dtype=tl.int32)
    else:
        acc += tl.sum(a.to(tl.int32)[:, :, None] * w[None, :, :], axis=1)
    if XSUM:
        xsum += tl.sum(a.to(tl.int32), axis=1)
    return acc, xsum


@triton.jit
def _plane_words(qw_ptr, NW, row0, k0, offs_j, offs_w, mask, b, T: tl.constexpr, W: tl.constexpr, E: tl.constexpr):
    """Like ``_plane`` but reads 32-bit words: each holds the bytes of 4 adjacent columns
    (byte c = column 4*w + c). Returns the byte tile as uint32 [BKE, BNW] (reloaded when
    slice T starts a new byte) and the bit offset of slice T inside each byte."""
    EPW: tl.constexpr = 8 // W  # codes per byte of this plane
    if T % EPW == 0:
        rows = row0 + k0 // EPW + (E // EPW) * offs_j + T // EPW
        b = tl.load(qw_ptr + rows.to(tl.int64)[:, None] * NW + offs_w[None, :], mask=mask, other=0)
    return b


@triton.jit
def _word_field_f32(b, POS: tl.constexpr, W: tl.constexpr, LOW: tl.constexpr):
    """``field << LOW`` as exact fp32, where field = bits [POS, POS+W) of the uint32 words b.

    No shift to bit 0 and no int->float conversion: the field is ORed, in place, into the
    mantissa of 2**(23 - SH + LOW) (whose last mantissa bit is worth 2**(LOW - SH)), and
    2**(23 - SH + LOW) is subtracted: one LOP3 and one FADD per code. Fields above bit 15
    use ``b >> 16`` (shared by all codes of the word) so that SH + W <= 23.
    """
    if POS >= 16:
        src = b >> 16
        SH: tl.constexpr = POS - 16
    else:
        src = b
        SH: tl.constexpr = POS
    EXP_BITS: tl.constexpr = (150 - SH + LOW) << 23  # biased exponent 127 + 23 - SH + LOW
    MASK: tl.constexpr = ((1 << W) - 1) << SH
    v = ((src & MASK) | EXP_BITS).to(tl.float32, bitcast=True)
    base = tl.full([1], EXP_BITS, tl.uint32).to(tl.float32, bitcast=True)
    return v - base


@triton.jit
def gemv_tile_words(
    d0, d1, d2, d3, xs, x_ptr, q_ptr, N, K, k0, offs_j, offs_w, w_mask,
    W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, E: tl.constexpr,
    BKE: tl.constexpr, BNW: tl.constexpr,
):
    """``gemv_tile`` for float activations reading the codes as 32-bit words (N % 4 == 0):
    byte c of a word is column ``4*w + c``. Each code costs one LOP3 + one FADD per plane
    (``_word_field_f32``) + one FFMA. d0..d3 [BKE, BNW] fp32 accumulate columns
    ``4*offs_w + c`` for c = 0..3; xs [BKE] accumulates x."""
    qw_ptr = q_ptr.to(tl.pointer_type(tl.uint32))
    NW = N // 4
    j_mask = k0 + E * offs_j < K
    mask = j_mask[:, None] & w_mask[None, :]
    b0 = tl.zeros([BKE, BNW], dtype=tl.uint32)
    b1 = b0
    b2 = b0
    for t in tl.static_range(E):
        b0 = _plane_words(qw_ptr, NW, 0, k0, offs_j, offs_w, mask, b0, t, W0, E)
        if W1 > 0:
            b1 = _plane_words(qw_ptr, NW, (K // 8) * W0, k0, offs_j, offs_w, mask, b1, t, W1, E)
        if W2 > 0:
            b2 = _plane_words(qw_ptr, NW, (K // 8) * (W0 + W1), k0, offs_j, offs_w, mask, b2, t, W2, E)
        xt = tl.load(x_ptr + k0 + E * offs_j + t, mask=j_mask, other=0).to(tl.float32)
        xs += xt
        for c in tl.static_range(4):
            f = _word_field_f32(b0, 8 * c + (t % (8 // W0)) * W0, W0, 0)
            if W1 > 0:
                f += _word_field_f32(b1, 8 * c + (t % (8 // W1)) * W1, W1, W0)
            if W2 > 0:
                f += _word_field_f32(b2, 8 * c + (t % (8 // W2)) * W2, W2, W0 + W1)
            f = xt[:, None] * f
            if c == 0:
                d0 += f
            elif c == 1:
                d1 += f
            elif c == 2:
                d2 += f
            else:
                d3 += f
    return d0, d1, d2, d3, xs
