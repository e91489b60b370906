"""Typed metadata shared by the tensor subclass, the custom ops and the backends.

``QuantMeta`` says how to read a quantized weight's canonical tensors; ``QWeight`` is what
a backend receives (plain tensors + meta). Neither knows about modules or configs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, NamedTuple, Optional

import torch

from .packing import check_bits, packed_size

__all__ = ["QuantMeta", "QWeight", "ACT_MODES"]

ACT_MODES = ("none", "int8")
USAGES = ("linear", "embedding")


@dataclass(frozen=True)
class QuantMeta:
    """How a LowBitTensor's inner tensors encode its logical ``[N, K]`` weight.

    bits: code width 1..8. group_size: K elements per scale, None = one group per row.
    symmetric: zero point fixed at 2**(bits-1) (no zeros tensor). act: activation handling
    for linear ("none" = float activations, "int8" = int8 per-token dynamic).
    transposed: the logical tensor is ``W.T`` (``[K, N]``), as produced by ``t()``.
    usage: what the tensor is for; an "embedding" table gets no linear kernel layout (the
    embedding kernels read canonical rows), so it is not stored twice.
    """

    bits: int
    group_size: Optional[int]
    symmetric: bool
    act: Literal["none", "int8"] = "none"
    transposed: bool = False
    usage: Literal["linear", "embedding"] = "linear"

    def __post_init__(self):
        check_bits(self.bits)
        if self.act not in ACT_MODES:
            raise ValueError(f"act must be one of {ACT_MODES}, got {self.act!r}")
        if self.usage not in USAGES:
            raise ValueError(f"usage must be one of {USAGES}, got {self.usage!r}")

    def group(self, k: int) -> int:
        """Effective group size for a weight with ``k`` columns."""
        return k if self.group_size is None else self.group_size

    def replace(self, **kw) -> "QuantMeta":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QuantMeta":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown QuantMeta field(s) {unknown}")
        return cls(**d)

    def check_parts(self, qdata, scales, zeros, n: int, k: int, where: str = "LowBitTensor") -> None:
        """Raise a clear error if the inner tensors do not match this meta and ``[n, k]``."""
        gs = self.group(k)
        if gs <= 0 or k % gs:
            raise ValueError(f"{where}: group_size {self.group_size} does not divide K={k}")
        want_q = (n, packed_size(k, self.bits))
        if qdata.dtype != torch.uint8 or tuple(qdata.shape) != want_q:
            raise ValueError(f"{where}: qdata must be uint8 {want_q}, got {qdata.dtype} {tuple(qdata.shape)}")
        want_s = (n, k // gs)
        if tuple(scales.shape) != want_s:
            raise ValueError(f"{where}: scales must be {want_s}, got {tuple(scales.shape)}")
        if self.symmetric != (zeros is None):
            raise ValueError(f"{where}: symmetric={self.symmetric} but zeros is {'absent' if zeros is None else 'present'}")
        if zeros is not None and tuple(zeros.shape) != want_s:
            raise ValueError(f"{where}: zeros must be {want_s}, got {tuple(zeros.shape)}")


class QWeight(NamedTuple):
    """A quantized weight as a backend sees it: logical ``[n, k]``, canonical tensors, and
    optionally a backend-specific device layout (``layout``, named ``layout_name``)."""

    qdata: torch.Tensor
    scales: torch.Tensor
    zeros: Optional[torch.Tensor]
    meta: QuantMeta
    n: int
    k: int
    layout: Optional[torch.Tensor] = None
    layout_name: str = ""

    @property
    def group_size(self) -> int:
        return self.meta.group(self.k)
