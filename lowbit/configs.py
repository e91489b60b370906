"""User-facing quantization configs: frozen dataclasses, validated on construction.

A config says *what* to do to a layer (bits, grouping, activation handling); it knows
nothing about kernels or devices.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

from .packing import CHUNK, check_bits

__all__ = [
    "WeightOnlyConfig",
    "Int8DynamicActivationConfig",
    "EmbeddingConfig",
    "QuantConfig",
]

_METHODS = ("minmax", "hqq")


def _check_group_size(group_size: Optional[int]) -> None:
    if group_size is None:
        return
    if isinstance(group_size, bool) or not isinstance(group_size, int):
        raise TypeError(f"group_size must be a positive int or None (per-channel), got {group_size!r}")
    if group_size <= 0 or group_size % CHUNK:
        raise ValueError(f"group_size must be a positive multiple of {CHUNK} or None (per-channel), got {group_size}")


def _check_common(cfg) -> None:
    check_bits(cfg.bits)
    _check_group_size(cfg.group_size)
    if cfg.method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {cfg.method!r}")
    if not isinstance(cfg.symmetric, bool):
        raise TypeError(f"symmetric must be a bool, got {cfg.symmetric!r}")
    if cfg.symmetric and cfg.bits < 2:
        raise ValueError("symmetric quantization needs bits >= 2 (1-bit codes have no zero level); use symmetric=False")
    if cfg.symmetric and cfg.method == "hqq":
        raise ValueError("method='hqq' optimizes the zero point, so it needs symmetric=False")


@dataclass(frozen=True)
class _Base:
    def __post_init__(self):
        _check_common(self)

    @classmethod
    def from_dict(cls, d: dict) -> "_Base":
        """Build from a dict; unknown keys are an error (a typo must not be ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TypeError(f"{cls.__name__} got unknown field(s) {unknown}; known: {sorted(names)}")
        return cls(**d)

    @property
    def name(self) -> str:
        gs = "pc" if self.group_size is None else f"g{self.group_size}"
        sym = "sym" if self.symmetric else "asym"
        return f"{self.prefix}{self.bits}-{gs}-{sym}-{self.method}"


@dataclass(frozen=True)
class WeightOnlyConfig(_Base):
    """Low-bit weights, float (fp16/bf16/fp32) activations.

    bits: 1..8. group_size: scales/zeros per ``group_size`` consecutive K elements, or None
    for one per output channel. symmetric: zero fixed at 2**(bits-1). method: "minmax" or
    "hqq" (half-quadratic optimized zero points; lower reconstruction error).
    """

    bits: int = 4
    group_size: Optional[int] = 128
    symmetric: bool = False
    method: Literal["minmax", "hqq"] = "minmax"
    prefix = "w"
    act = "none"


@dataclass(frozen=True)
class Int8DynamicActivationConfig(_Base):
    """Low-bit weights x int8 per-token dynamic activations, int32 accumulation.

    Zero points are integers here so that the whole group dot product is exact in int32,
    so only method="minmax" is accepted (HQQ zero points are floats).
    """

    def __post_init__(self):
        super().__post_init__()
        if self.method != "minmax":
            raise ValueError(
                "Int8DynamicActivationConfig needs integer zero points, so method must be 'minmax' "
                f"(got {self.method!r}); use WeightOnlyConfig for HQQ"
            )

    bits: int = 4
    group_size: Optional[int] = 32
    symmetric: bool = True
    method: Literal["minmax", "hqq"] = "minmax"
    prefix = "a8w"
    act = "int8"


@dataclass(frozen=True)
class EmbeddingConfig(_Base):
    """Low-bit embedding tables; groups run along the embedding dim."""

    bits: int = 4
    group_size: Optional[int] = 32
    symmetric: bool = False
    method: Literal["minmax", "hqq"] = "minmax"
    prefix = "emb"
    act = "none"


QuantConfig = WeightOnlyConfig | Int8DynamicActivationConfig | EmbeddingConfig
