"""Quantization math in pure torch: the reference every kernel is tested against.

Conventions (docs/quantization.md has the derivations):

* weights ``w: [N, K]`` are split along K into groups of ``group_size`` (or one group per
  row when ``group_size is None``); each group has a scale ``s`` and a zero ``z``;
* codes are unsigned: ``q = clamp(round(w / s + z), 0, 2**bits - 1)`` and
  ``w_hat = (q - z) * s``;
* symmetric: ``z = 2**(bits-1)`` for every group (not stored), the range
  ``[-2**(bits-1), 2**(bits-1) - 1]`` is used as in torchao;
* asymmetric min-max: the range always contains 0 and ``z`` is an integer;
* HQQ: starts from min-max and runs half-quadratic updates of a float zero point under an
  l_p (p < 1) error; each group keeps whichever candidate has the lowest squared error, so
  it is never worse than min-max;
* int8 dynamic activations: symmetric per token, ``sx = amax / 127``,
  ``xq = clamp(round(x / sx), -127, 127)``; the integer semantics of the int8 linear are in
  :func:`int8_linear_reference`.

This module knows nothing about tensor subclasses, modules or kernels.
"""
from __future__ import annotations

from typing import Optional

import torch

from .packing import check_bits

__all__ = [
    "quantize_weight",
    "dequantize",
    "quantize_per_token_int8",
    "int8_linear_reference",
    "weight_only_linear_reference",
    "reconstruction_error",
    "groups_of",
]

# Scales are clamped away from zero so a constant group cannot divide by zero.
_MIN_SCALE = 1e-10


def groups_of(k: int, group_size: Optional[int]) -> int:
    """Number of groups along K; raises if ``group_size`` does not divide ``k``."""
    gs = k if group_size is None else group_size
    if gs <= 0 or k % gs:
        raise ValueError(f"group_size {group_size} does not divide K={k}")
    return k // gs


def _grouped(w: torch.Tensor, group_size: Optional[int]) -> torch.Tensor:
    n, k = w.shape
    return w.reshape(n, groups_of(k, group_size), k if group_size is None else group_size)


def _store(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # round to the storage dtype and back, so codes are chosen with the stored scale
    return x.to(dtype).float()


def _codes(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor, qmax: int) -> torch.Tensor:
    return torch.clamp(torch.round(w / s + z), 0, qmax)


def _sq_err(w, s, z, qmax):
    return ((_codes(w, s, z, qmax) - z) * s - w).pow(2).sum(-1, keepdim=True)


def _shrink_lp(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    # generalized soft-thresholding: proximal operator of |x|^p, p < 1
    ax = x.abs()
    thr = torch.where(ax > 0, ax.clamp_min(1e-12).pow(p - 1) / beta, torch.zeros_like(ax))
    return torch.sign(x) * torch.relu(ax - thr)


def _hqq(wg, s0, z0, qmax, scale_dtype, iters=20, p=0.7, beta=10.0, kappa=1.01):
    """Half-quadratic zero-point optimization; returns per-group best (s, z) vs the start."""
    best_s, best_z = s0, z0
    best_err = _sq_err(wg, s0, z0, qmax)
    # HQQ's own start: full [min, max] range, float zero
    wmin, wmax = wg.amin(-1, keepdim=True), wg.amax(-1, keepdim=True)
    s = _store(((wmax - wmin) / qmax).clamp_min(_MIN_SCALE), scale_dtype)
    z = _store(-wmin / s, scale_dtype)
    for _ in range(iters):
        zc = z.clamp(0, qmax)
        err = _sq_err(wg, s, zc, qmax)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, s, best_s)
        best_z = torch.where(better, zc, best_z)
        q = _codes(wg, s, z, qmax)
        e = _shrink_lp(wg - (q - z) * s, beta, p)
        z = _store((q - (wg - e) / s).mean(-1, keepdim=True), scale_dtype)
        beta *= kappa
    return best_s, best_z


@torch.no_grad()
def quantize_weight(
    w: torch.Tensor,
    bits: int,
    group_size: Optional[int],
    symmetric: bool = False,
    method: str = "minmax",
    scale_dtype: Optional[torch.dtype] = None,
):
    """Quantize a 2-D float weight groupwise along its last dim.

    w: [N, K] float. Returns ``(codes [N, K] uint8, scales [N, G], zeros [N, G] | None)``;
    scales/zeros have ``scale_dtype`` (default ``w.dtype``); zeros is None when symmetric.
    Min-max zeros are integers; HQQ zeros are floats.
    """
    check_bits(bits)
    if w.dim() != 2 or not w.dtype.is_floating_point:
        raise TypeError(f"quantize_weight expects a 2-D float tensor, got {tuple(w.shape)} {w.dtype}")
    if not torch.isfinite(w).all():
        raise ValueError("weight contains NaN or Inf")
    if method not in ("minmax", "hqq"):
        raise ValueError(f"method must be 'minmax' or 'hqq', got {method!r}")
    scale_dtype = scale_dtype or w.dtype
    n, k = w.shape
    wg = _grouped(w.float(), group_size)
    qmax = (1 << bits) - 1
    if symmetric:
        half = 1 << (bits - 1)
        s = torch.maximum(-wg.amin(-1, keepdim=True) / half, wg.amax(-1, keepdim=True) / (half - 1))
        s = _store(s.clamp_min(_MIN_SCALE), scale_dtype)
        z = torch.full_like(s, float(half))
    else:
        wmin = wg.amin(-1, keepdim=True).clamp(max=0)
        wmax = wg.amax(-1, keepdim=True).clamp(min=0)
        s = _store(((wmax - wmin) / qmax).clamp_min(_MIN_SCALE), scale_dtype)
        z = torch.round(-wmin / s).clamp(0, qmax)
        if method == "hqq":
            s, z = _hqq(wg, s, z, qmax, scale_dtype)
    codes = _codes(wg, s, z, qmax).to(torch.uint8).reshape(n, k)
    scales = s.squeeze(-1).to(scale_dtype)
    zeros = None if symmetric else z.squeeze(-1).to(scale_dtype)
    return codes, scales, zeros


def _zero_points(scales, zeros, bits):
    if zeros is None:
        return torch.full_like(scales, float(1 << (bits - 1)), dtype=torch.float32)
    return zeros.float()


def dequantize(
    codes: torch.Tensor,
    scales: torch.Tensor,
    zeros: Optional[torch.Tensor],
    bits: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``w_hat = (codes - zeros) * scales`` groupwise, computed in fp32.

    codes: [N, K] integer; scales, zeros: [N, G] (zeros None = symmetric). Returns [N, K] ``dtype``.
    """
    n, k = codes.shape
    g = scales.shape[-1]
    cg = codes.float().reshape(n, g, k // g)
    z = _zero_points(scales, zeros, bits).unsqueeze(-1)
    return ((cg - z) * scales.float().unsqueeze(-1)).reshape(n, k).to(dtype)


def quantize_per_token_int8(x: torch.Tensor):
    """Symmetric int8 per-row quantization. x: [M, K] float -> (xq [M, K] int8, sx [M] fp32)."""
    xf = x.float()
    amax = xf.abs().amax(-1) if xf.shape[-1] else xf.new_zeros(xf.shape[:-1])
    # divide by a tensor, not a Python scalar: CUDA torch turns "/ scalar" into a multiply by
    # the reciprocal (1 ulp off true division); tensor / tensor is IEEE division on every device
    sx = torch.where(amax > 0, amax / amax.new_full((), 127.0), torch.ones_like(amax))
    xq = torch.clamp(torch.round(xf / sx.unsqueeze(-1)), -127, 127).to(torch.int8)
    return xq, sx


def int8_linear_reference(
    x: torch.Tensor,
    codes: torch.Tensor,
    scales: torch.Tensor,
    zeros: Optional[torch.Tensor],
    bits: int,
    bias: Optional[torch.Tensor] = None,
    out_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """The integer semantics of the int8-dynamic linear, written for clarity.

    x: [M, K] float; codes: [N, K] uint8; scales/zeros: [N, G] (zeros integer-valued).
    For each group g: ``acc_g = sum_k xq*q - z_g * sum_k xq`` exactly (int32 range);
    then, in fp32 and in group order, ``y += s_g * float(acc_g)`` (multiply, then add: no
    FMA); finally ``y *= sx`` and ``y += bias``. Kernels must reproduce this bit for bit.
    Returns [M, N] in ``out_dtype`` (default x.dtype).
    """
    m, k = x.shape
    n, g = codes.shape[0], scales.shape[-1]
    gs = k // g
    xq, sx = quantize_per_token_int8(x)
    z = _zero_points(scales, zeros, bits).double()
    s = scales.float()
    # float64 holds every int32 partial sum exactly and runs on CPU and CUDA alike
    xg = xq.double().reshape(m, g, gs)
    cg = codes.double().reshape(n, g, gs)
    y = torch.zeros(m, n, dtype=torch.float32, device=x.device)
    for j in range(g):
        xj = xg[:, j, :]
        acc = xj @ cg[:, j, :].T - xj.sum(-1, keepdim=True) * z[:, j]
        y = y + s[:, j] * acc.float()
    y = y * sx.unsqueeze(-1)
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype or x.dtype)


def weight_only_linear_reference(x, codes, scales, zeros, bits, bias=None):
    """``F.linear(x, dequantize(W).to(x.dtype), bias)``. x: [M, K] -> [M, N] x.dtype."""
    w = dequantize(codes, scales, zeros, bits, x.dtype)
    return torch.nn.functional.linear(x, w, None if bias is None else bias.to(x.dtype))


def reconstruction_error(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """Relative Frobenius error ``||w - w_hat|| / ||w||``."""
    return float((w.float() - w_hat.float()).norm() / w.float().norm().clamp_min(1e-30))
