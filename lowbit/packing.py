"""Universal bit-packing: the one canonical, device-portable format for 1-8 bit codes.

The format (specified byte by byte in docs/format.md):

* codes are unsigned b-bit integers laid out along the last dim (K, the reduction dim);
* K is cut into *chunks* of 8 codes; each chunk becomes exactly ``b`` bytes;
* inside a chunk, ``b`` is split into the bit-planes of its binary decomposition, widest
  first (7 = 4+2+1, 6 = 4+2, 5 = 4+1, 3 = 2+1; 1, 2, 4, 8 are a single plane). The first
  plane holds the lowest bits of each code, the next plane the bits above them, and so on;
* a plane of width ``w`` takes ``w`` bytes: code ``i`` of the chunk (0..7) sits in byte
  ``(i*w) // 8`` of the plane at bit ``(i*w) % 8`` (LSB first).

Because every chunk is self-contained, ``pack(codes)[..., a*b//8 : c*b//8] ==
pack(codes[..., a:c])`` whenever ``a`` and ``c`` are multiples of 8, and slicing leading
dims trivially commutes with packing. This module knows nothing about scales, modules or
kernels; it is pure torch and works on any device.
"""
from __future__ import annotations

import functools

import torch

__all__ = ["pack", "unpack", "packed_size", "plane_widths", "CHUNK", "check_bits"]

#: Codes per chunk: 8 codes of any width fill a whole number of bytes.
CHUNK = 8


def check_bits(bits: int, what: str = "bits") -> int:
    """Validate a code width; returns it as int or raises ValueError naming ``what``."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"{what} must be an int in 1..8, got {bits!r}")
    if not 1 <= bits <= 8:
        raise ValueError(f"{what} must be in 1..8, got {bits}")
    return bits


@functools.lru_cache(maxsize=None)
def plane_widths(bits: int) -> tuple[int, ...]:
    """Bit-plane widths of ``bits``, widest first (e.g. 7 -> (4, 2, 1), 8 -> (8,))."""
    check_bits(bits)
    return tuple(w for w in (8, 4, 2, 1) if bits & w)


def packed_size(k: int, bits: int) -> int:
    """Bytes per row for ``k`` codes of width ``bits`` (``k`` must be a multiple of 8)."""
    check_bits(bits)
    if k % CHUNK:
        raise ValueError(f"the packed dim must be a multiple of {CHUNK}, got {k}")
    return k // CHUNK * bits


def _shifts(w: int, device: torch.device) -> torch.Tensor:
    # bit offset of each of the 8/w codes that share one byte of a plane of width w
    return torch.arange(0, 8, w, dtype=torch.uint8, device=device)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned codes along the last dim into the canonical format.

    codes: [..., K] integer tensor with values in [0, 2**bits); K a multiple of 8.
    Returns: [..., K // 8 * bits] uint8 on the same device.
    """
    check_bits(bits)
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise TypeError(f"pack expects integer codes, got {codes.dtype}")
    *lead, k = codes.shape
    packed_size(k, bits)  # validates K
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= (1 << bits)):
        raise ValueError(f"codes must lie in [0, {1 << bits}) for bits={bits}")
    c = codes.to(torch.uint8).reshape(*lead, k // CHUNK, CHUNK)
    planes, low = [], 0
    for w in plane_widths(bits):
        per = 8 // w  # codes per byte in this plane
        v = ((c >> low) & ((1 << w) - 1)).reshape(*lead, k // CHUNK, w, per)
        planes.append((v << _shifts(w, c.device)).sum(-1, dtype=torch.uint8))
        low += w
    out = torch.cat(planes, dim=-1) if len(planes) > 1 else planes[0]
    return out.reshape(*lead, k // CHUNK * bits)


def unpack(packed: torch.Tensor, bits: int, k: int | None = None) -> torch.Tensor:
    """Inverse of :func:`pack`.

    packed: [..., K // 8 * bits] uint8. ``k`` (optional) is checked against the size.
    Returns: [..., K] uint8 codes.
    """
    check_bits(bits)
    if packed.dtype != torch.uint8:
        raise TypeError(f"unpack expects uint8 packed data, got {packed.dtype}")
    *lead, nbytes = packed.shape
    if nbytes % bits:
        raise ValueError(f"packed last dim {nbytes} is not a multiple of bits={bits}")
    chunks = nbytes // bits
    if k is not None and k != chunks * CHUNK:
        raise ValueError(f"packed data holds {chunks * CHUNK} codes per row, not k={k}")
    p = packed.reshape(*lead, chunks, bits)
    out = torch.zeros(*lead, chunks, CHUNK, dtype=torch.uint8, device=packed.device)
    start, low = 0, 0
    for w in plane_widths(bits):
        plane = p[..., start : start + w].unsqueeze(-1)  # [..., chunks, w, 1]
        v = (plane >> _shifts(w, packed.device)) & ((1 << w) - 1)  # [..., chunks, w, 8/w]
        out |= v.reshape(*lead, chunks, CHUNK) << low
        start += w
        low += w
    return out.reshape(*lead, chunks * CHUNK)
