"""Dequantize-then-cuBLAS: for large M, write the float weight once and let cuBLAS multiply.

Family: ``dequantize`` expands the device layout into ``W.T`` as a dense ``[K, N]`` tensor
(N-contiguous, the layout's own order, so the stores coalesce), computing
``(q - z) * s`` in fp32 and rounding once to the activation dtype, exactly as the
reference does; ``dequant_linear`` then calls ``torch.addmm``/``torch.matmul``. It costs
one extra write and read of the float weight (``4*N*K`` bytes for fp16), which is small
against the matmul once M is in the thousands. Also the plain-torch reference
(``reference_linear``) the tests compare every family with lives here.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .layout import DeviceWeight
from .unpack import codes_to_f32, load_group_params, unpack_slice


@triton.jit
def _dequant_kernel(
    q_ptr, s_ptr, z_ptr, out_ptr, N, K, GS,
    W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, E: tl.constexpr, BITS: tl.constexpr,
    HAS_Z: tl.constexpr, PER_TILE: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr,
):
    pid_k = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1).to(tl.int64)
    BKE: tl.constexpr = BK // E
    k0 = pid_k * BK
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_mask = offs_n < N
    offs_j = tl.arange(0, BKE)
    j_mask = k0 + E * offs_j < K
    mask = j_mask[:, None] & n_mask[None, :]
    if PER_TILE:  # the tile lies in one group: one scale/zero row for all its slices
        s, z = load_group_params(s_ptr, z_ptr, k0 // GS, N, offs_n, n_mask, HAS_Z, BITS)
        s = s[None, :]
        z = z[None, :]
    b0 = tl.zeros([BKE, BN], dtype=tl.uint8)
    b1 = b0
    b2 = b0
    for t in tl.static_range(E):
        q, b0, b1, b2 = unpack_slice(q_ptr, N, K, k0, offs_j, offs_n, mask, b0, b1, b2, t, W0, W1, W2, E)
        rows = k0 + E * offs_j + t
        if not PER_TILE:
            s, z = load_group_params(s_ptr, z_ptr, (rows // GS)[:, None], N, offs_n[None, :], mask, HAS_Z, BITS)
        wt = ((codes_to_f32(q) - z) * s).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + rows.to(tl.int64)[:, None] * N + offs_n[None, :], wt, mask=mask)


def dequantize_t(w: DeviceWeight, dtype: torch.dtype, *, block_k: int = 64, block_n: int = 128,
                 num_warps: int = 4) -> torch.Tensor:
    # block_k is rounded to a power of two holding whole slices; it need not divide the
    # group size (slices then read their own group's row of scales)
    """The dense transposed weight ``W.T``: [K, N] ``dtype``."""
    p = w.planes
    bk = max(1 << (max(block_k, 1) - 1).bit_length(), p.E)
    out = torch.empty(w.k, w.n, dtype=dtype, device=w.codes.device)
    grid = (triton.cdiv(w.k, bk), triton.cdiv(w.n, block_n))
    _dequant_kernel[grid](
        w.codes, w.scales, w.zeros if w.zeros is not None else w.scales, out, w.n, w.k, w.group_size,
        p.W0, p.W1, p.W2, p.E, w.bits, w.zeros is not None, w.group_size % bk == 0, bk, block_n,
        num_warps=num_warps,
    )
    return out


def dequant_linear(x: torch.Tensor, w: DeviceWeight, bias: Optional[torch.Tensor] = None, *, block_k: int = 64,
                   block_n: int = 128, num_warps: int = 4) -> torch.Tensor:
    """y = x @ W.T (+ bias) through a dense dequantized weight and cuBLAS. x: [M, K] -> [M, N].
    The launch arguments are the dequantize kernel's (``dequantize_t``)."""
    wt = dequantize_t(w, x.dtype, block_k=block_k, block_n=block_n, num_warps=num_warps)
    if bias is not None:
        return torch.addmm(bias.to(x.dtype), x, wt)
    return x @ wt


def reference_linear(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, zeros: Optional[torch.Tensor],
                     bits: int, bias: Optional[torch.Tensor] = None, act: str = "none") -> torch.Tensor:
    """The plain-torch semantics every family is tested against (``lowbit.quant``).

    codes: [N, K] uint8 (unpacked); scales/zeros: [N, G]. act "int8" = the integer semantics.
    """
    from lowbit import quant

    if act == "int8":
        return quant.int8_linear_reference(x, codes, scales, zeros, bits, bias, x.dtype)
    return quant.weight_only_linear_reference(x, codes, scales, zeros, bits, bias)
