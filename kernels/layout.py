"""The Triton kernels' device layout, derived from the canonical packed format (pure torch).

Canonical (``lowbit.packing``): ``qdata [N, K/8*bits]`` uint8, K cut into chunks of 8 codes,
each chunk holding the bit-planes of ``bits`` widest first. Concatenated over chunks, the
bytes of one plane of width ``w`` are a plain K-packed stream: code ``k`` sits in byte
``k // (8/w)`` at bit ``(k % (8/w)) * w``. The device layout keeps those streams and only
de-interleaves the planes and transposes them, so the kernels read N-contiguous bytes:

* ``codes``: ``[K*bits/8, N]`` uint8; plane ``p`` (widest first) occupies rows
  ``[K*prefix_p/8, K*(prefix_p + w_p)/8)``, where ``prefix_p`` is the sum of the wider
  planes' widths; row ``r`` of plane ``w`` holds codes ``r*(8/w) + b`` at bit ``b*w``.
* ``scales``: ``[K/group_size, N]`` in the scales' dtype (transposed, N-contiguous).
* ``zeros``: same shape and dtype as ``scales``, only when asymmetric.

All three live in one flat uint8 buffer (each segment 16-byte aligned) so the tensor
subclass can cache a single tensor; :func:`views` cuts it back into typed views.
This module knows nothing about Triton, modules or configs; it runs on any device.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from lowbit.packing import CHUNK, plane_widths

__all__ = ["LayoutViews", "PlaneConfig", "plane_config", "make_layout", "views", "layout_nbytes"]

# segment alignment inside the flat buffer: 16 bytes keeps every typed view aligned for
# 16-byte vector loads and satisfies ``Tensor.view(dtype)`` for 2- and 4-byte dtypes
_ALIGN = 16


class PlaneConfig(NamedTuple):
    """Kernel constants for one code width.

    W0, W1, W2: plane widths widest first (0 = no such plane). E: slices per K tile, i.e.
    codes per byte of the narrowest plane (a tile of BK codes is read as E slices of BK/E
    rows; slice t holds the codes k = k0 + E*j + t).
    """

    W0: int
    W1: int
    W2: int
    E: int


def plane_config(bits: int) -> PlaneConfig:
    ws = plane_widths(bits)
    padded = tuple(ws) + (0,) * (3 - len(ws))
    return PlaneConfig(padded[0], padded[1], padded[2], CHUNK // min(ws))


def _pad(nbytes: int) -> int:
    return (nbytes + _ALIGN - 1) // _ALIGN * _ALIGN


def layout_nbytes(n: int, k: int, bits: int, groups: int, elt: int, has_zeros: bool) -> tuple[int, int, int]:
    """Byte offsets (scales, zeros, end) of the segments in the flat buffer."""
    s_off = _pad(k // CHUNK * bits * n)
    z_off = s_off + _pad(groups * n * elt)
    end = z_off + (_pad(groups * n * elt) if has_zeros else 0)
    return s_off, z_off, end


@torch.no_grad()
def make_layout(qdata: torch.Tensor, scales: torch.Tensor, zeros: Optional[torch.Tensor], bits: int) -> torch.Tensor:
    """Derive the flat device-layout buffer.

    qdata: [N, K/8*bits] uint8 canonical codes; scales, zeros: [N, G] (zeros None when
    symmetric). Returns a 1-D uint8 tensor on qdata's device.
    """
    n, nbytes = qdata.shape
    chunks = nbytes // bits
    k = chunks * CHUNK
    g = scales.shape[1]
    s_off, z_off, end = layout_nbytes(n, k, bits, g, scales.element_size(), zeros is not None)
    out = torch.zeros(end, dtype=torch.uint8, device=qdata.device)
    q = qdata.reshape(n, chunks, bits)
    row, start = 0, 0
    for w in plane_widths(bits):
        rows = chunks * w  # K*w/8 bytes of this plane per weight row
        plane = q[:, :, start : start + w].reshape(n, rows)
        out[row * n : (row + rows) * n].view(rows, n).copy_(plane.t())
        row, start = row + rows, start + w
    seg = g * n * scales.element_size()
    out[s_off : s_off + seg].view(scales.dtype).view(g, n).copy_(scales.t())
    if zeros is not None:
        out[z_off : z_off + seg].view(scales.dtype).view(g, n).copy_(zeros.to(scales.dtype).t())
    return out


class LayoutViews(NamedTuple):
    codes: torch.Tensor  # [K*bits/8, N] uint8
    scales: torch.Tensor  # [G, N]
    zeros: Optional[torch.Tensor]  # [G, N] or None


def views(layout: torch.Tensor, n: int, k: int, bits: int, groups: int, dtype: torch.dtype, has_zeros: bool) -> LayoutViews:
    """Cut the flat buffer from :func:`make_layout` into typed views (no copies)."""
    elt = torch.empty((), dtype=dtype).element_size()
    s_off, z_off, end = layout_nbytes(n, k, bits, groups, elt, has_zeros)
    if layout.dtype != torch.uint8 or layout.dim() != 1 or layout.numel() != end:
        raise ValueError(
            f"triton layout must be a flat uint8 buffer of {end} bytes for N={n} K={k} bits={bits} "
            f"groups={groups} {dtype}, got {layout.dtype} {tuple(layout.shape)}"
        )
    codes = layout[: k // CHUNK * bits * n].view(k // CHUNK * bits, n)
    seg = groups * n * elt
    scales = layout[s_off : s_off + seg].view(dtype).view(groups, n)
    zeros = layout[z_off : z_off + seg].view(dtype).view(groups, n) if has_zeros else None
    return LayoutViews(codes, scales, zeros)


class DeviceWeight(NamedTuple):
    """What every launcher receives: the layout views plus the logical sizes.

    codes: [K*bits/8, N] uint8; scales/zeros: [G, N] (zeros None = symmetric);
    group_size: the effective group size (K for per-channel).
    """

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: Optional[torch.Tensor]
    n: int
    k: int
    bits: int
    group_size: int

    @property
    def planes(self) -> PlaneConfig:
        return plane_config(self.bits)


def device_weight(layout: torch.Tensor, n: int, k: int, bits: int, group_size: int, dtype: torch.dtype, has_zeros: bool) -> DeviceWeight:
    """Views of a flat layout buffer as a :class:`DeviceWeight`."""
    v = views(layout, n, k, bits, k // group_size, dtype, has_zeros)
    return DeviceWeight(v.codes, v.scales, v.zeros, n, k, bits, group_size)


def tile_k(want: int, group_size: int, e: int) -> Optional[int]:
    """The largest power-of-two K tile <= ``want`` that holds whole slices (a multiple of
    ``e``) and lies inside one group (divides ``group_size``); None if there is none."""
    bk = 1 << (max(want, 1).bit_length() - 1)
    while bk >= e:
        if group_size % bk == 0:
            return bk
        bk //= 2
    return None
