"""Per-token int8 activation quantization in one kernel: the first step of the int8-dynamic
families (``gemv_int8``, ``gemm_int8``).

Reference: :func:`lowbit.quant.quantize_per_token_int8` (``sx = amax / 127``, or 1 for an
all-zero row; ``xq = clamp(round(x / sx), -127, 127)``), reproduced bit for bit: the divisions
are IEEE round-to-nearest (``div_rn``; Triton's plain fp32 ``/`` is approximate on GPUs) and
rounding is half to even, as ``torch.round``. As torch ops inside the custom op the reference
is ~7 kernels a call; this is one.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["quantize_rows_int8"]

# adding and subtracting 1.5 * 2^23 rounds an fp32 |v| < 2^22 to an integer, half to even
_ROUND = tl.constexpr(12582912.0)


@triton.jit
def _quant_rows_kernel(x_ptr, q_ptr, s_ptr, K, stride_xm, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    x_row = x_ptr + row * stride_xm
    amax = tl.zeros([BLOCK], dtype=tl.float32)
    for k0 in range(0, K, BLOCK):
        v = tl.load(x_row + k0 + offs, mask=k0 + offs < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(v))
    m = tl.max(amax, axis=0)
    sx = tl.where(m > 0, tl.div_rn(m, 127.0), 1.0)
    tl.store(s_ptr + row, sx)
    for k0 in range(0, K, BLOCK):
        mask = k0 + offs < K
        v = tl.load(x_row + k0 + offs, mask=mask, other=0.0).to(tl.float32)
        r = tl.div_rn(v, sx)  # |r| <= 127 (up to rounding), so the trick below is exact
        r = (r + _ROUND) - _ROUND
        r = tl.minimum(tl.maximum(r, -127.0), 127.0)
        tl.store(q_ptr + row * K + k0 + offs, r.to(tl.int8), mask=mask)


def quantize_rows_int8(x: torch.Tensor, block: int = 1024, num_warps: int = 4):
    """x: [M, K] float -> (xq [M, K] int8, sx [M] fp32), equal to ``quantize_per_token_int8(x)``."""
    if x.dim() != 2 or not x.dtype.is_floating_point:
        raise ValueError(f"quantize_rows_int8: expected a 2-D float tensor, got {tuple(x.shape)} {x.dtype}")
    if x.shape[1] and x.stride(1) != 1:
        x = x.contiguous()
    m, k = x.shape
    xq = torch.empty(m, k, dtype=torch.int8, device=x.device)
    sx = torch.empty(m, dtype=torch.float32, device=x.device)
    if m == 0:
        return xq, sx
    if k == 0:
        return xq, sx.fill_(1.0)
    block = min(block, triton.next_power_of_2(k))
    _quant_rows_kernel[(m,)](x, xq, sx, k, x.stride(0), BLOCK=block, num_warps=num_warps)
    return xq, sx
