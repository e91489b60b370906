"""``quantize_``: walk a model, swap weights for LowBitTensors, report every layer.

This is the only module that knows about ``nn.Module``s and configs together; it never
touches kernels.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from .configs import EmbeddingConfig, Int8DynamicActivationConfig, WeightOnlyConfig
from .packing import CHUNK
from .tensor import LowBitTensor

__all__ = ["quantize_", "is_linear", "is_embedding", "QuantizeReport", "LayerResult"]

_CONFIGS = (WeightOnlyConfig, Int8DynamicActivationConfig, EmbeddingConfig)


def is_linear(module: nn.Module, fqn: str = "") -> bool:
    """Default filter for the linear configs: ``nn.Linear`` and its subclasses."""
    return isinstance(module, nn.Linear)


def is_embedding(module: nn.Module, fqn: str = "") -> bool:
    """Default filter for :class:`EmbeddingConfig`: ``nn.Embedding`` and its subclasses."""
    return isinstance(module, nn.Embedding)


@dataclass
class LayerResult:
    name: str
    kind: str
    shape: tuple
    quantized: bool
    reason: str  # why it was skipped, or a note ("tied to ...")
    bytes_before: int
    bytes_after: int


@dataclass
class QuantizeReport:
    """What :func:`quantize_` did to each layer the filter selected. ``str()`` is a table."""

    config: object
    layers: list[LayerResult] = field(default_factory=list)

    @property
    def quantized(self) -> list[LayerResult]:
        return [r for r in self.layers if r.quantized]

    @property
    def skipped(self) -> list[LayerResult]:
        return [r for r in self.layers if not r.quantized]

    @property
    def bytes_before(self) -> int:
        return sum(r.bytes_before for r in self.layers)

    @property
    def bytes_after(self) -> int:
        return sum(r.bytes_after for r in self.layers)

    def __str__(self) -> str:
        rows = [("layer", "type", "shape", "status", "MiB before", "MiB after", "note")]
        for r in self.layers:
            rows.append((
                r.name, r.kind, "x".join(map(str, r.shape)), "quantized" if r.quantized else "SKIPPED",
                f"{r.bytes_before / 2**20:.3f}", f"{r.bytes_after / 2**20:.3f}", r.reason,
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [f"lowbit.quantize_ with {self.config}"]
        for i, row in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        before, after = self.bytes_before, self.bytes_after
        ratio = f"{before / after:.2f}x smaller" if after else "n/a"
        lines.append(
            f"{len(self.quantized)} quantized, {len(self.skipped)} skipped; "
            f"{before / 2**20:.2f} MiB -> {after / 2**20:.2f} MiB ({ratio})"
        )
        return "\n".join(lines)

    __repr__ = __str__


def _call_filter(filter_fn: Callable, module: nn.Module, name: str) -> bool:
    try:
        nparams = len(inspect.signature(filter_fn).parameters)
    except (TypeError, ValueError):
        nparams = 2
    return bool(filter_fn(module, name) if nparams >= 2 else filter_fn(module))


def _skip_reason(module: nn.Module, config) -> Optional[str]:
    """Why this layer cannot take this config, or None if it can."""
    want = nn.Embedding if isinstance(config, EmbeddingConfig) else nn.Linear
    if not isinstance(module, want):
        return f"{type(config).__name__} applies to nn.{want.__name__}, not {type(module).__name__}"
    w = module.weight
    if isinstance(w, LowBitTensor):
        return "already quantized"
    if w.device.type == "meta":
        return "weight is on the meta device (materialize or load it first)"
    if not w.dtype.is_floating_point:
        return f"weight dtype {w.dtype} is not floating point"
    if isinstance(module, nn.Embedding) and module.max_norm is not None:
        return "max_norm renormalizes the table in place"
    k = w.shape[1]
    if k % CHUNK:
        return f"K={k} is not a multiple of {CHUNK} (needed to pack)"
    if config.group_size is not None and k % config.group_size:
        return f"group_size {config.group_size} does not divide K={k}"
    return None


def quantize_(
    model: nn.Module,
    config,
    filter_fn: Optional[Callable] = None,
    *,
    strict: bool = False,
) -> QuantizeReport:
    """Quantize ``model``'s layers in place and return a report of every selected layer.

    config: WeightOnlyConfig | Int8DynamicActivationConfig | EmbeddingConfig.
    filter_fn(module, fqn) -> bool selects layers (default: is_linear, or is_embedding for
    EmbeddingConfig). A selected layer that cannot be quantized is listed in the report
    with the reason; with ``strict=True`` that raises instead. NaN/Inf weights always raise.
    Weights shared by several modules (tied) are quantized once and stay shared.
    """
    if not isinstance(config, _CONFIGS):
        raise TypeError(f"config must be one of {[c.__name__ for c in _CONFIGS]}, got {type(config).__name__}")
    if filter_fn is None:
        filter_fn = is_embedding if isinstance(config, EmbeddingConfig) else is_linear
    report = QuantizeReport(config)
    done: dict[int, tuple[nn.Parameter, str]] = {}
    for name, module in list(model.named_modules()):
        if not _call_filter(filter_fn, module, name):
            continue
        w = getattr(module, "weight", None)
        if not isinstance(w, torch.Tensor):
            continue  # a container or weightless module is not a layer
        shape = tuple(w.shape)
        before = 0 if isinstance(w, LowBitTensor) else w.numel() * w.element_size()
        if id(w) in done:
            p, first = done[id(w)]
            module.weight = p
            report.layers.append(LayerResult(name, type(module).__name__, shape, True, f"tied to {first}", 0, 0))
            continue
        reason = _skip_reason(module, config)
        if reason is not None:
            report.layers.append(LayerResult(name, type(module).__name__, shape, False, reason, before, before))
            continue
        if not torch.isfinite(w.detach()).all():
            raise ValueError(f"layer {name!r} ({type(module).__name__} {list(shape)}): weight contains NaN or Inf")
        usage = "embedding" if isinstance(config, EmbeddingConfig) else "linear"
        q = LowBitTensor.from_float(
            w.detach(), config.bits, config.group_size, config.symmetric, config.method, config.act, usage
        )
        module.weight = nn.Parameter(q, requires_grad=False)
        done[id(w)] = (module.weight, name)
        report.layers.append(LayerResult(name, type(module).__name__, shape, True, "", before, q.packed_nbytes))
    if strict and report.skipped:
        lines = "; ".join(f"{r.name}: {r.reason}" for r in report.skipped)
        raise ValueError(f"quantize_(strict=True): {len(report.skipped)} layer(s) cannot be quantized: {lines}")
    return report
