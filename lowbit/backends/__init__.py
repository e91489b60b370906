"""Backend registry: the custom ops ask here which implementation runs a call.

A backend is a class with a name, a priority and the device types it serves; it answers
``supports(op, w, x_dtype)`` and implements ``linear`` and/or ``embedding`` over plain
tensors (``QWeight``). It may derive a device layout once per weight (``prepare``), which
the tensor subclass caches and hands back on every call. Built-in backends are imported
lazily on first use and register themselves; others call :func:`register_backend`.
The reference backend supports everything on every device, so selection never fails.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import threading
from typing import Iterator, Optional

import torch

from ..meta import QWeight

__all__ = ["Backend", "register_backend", "unregister_backend", "registered_backends", "select", "prepare_layout", "use_backend"]

# modules that define built-in backends; each calls register_backend() at import
_BUILTIN = ("lowbit.backends.reference", "lowbit.backends.triton", "lowbit.backends.cpu")


class Backend:
    """Base class for a backend. Subclasses set ``name``, ``priority`` (higher wins) and
    ``device_types``, and override what they implement."""

    name: str = ""
    priority: int = 0
    device_types: tuple[str, ...] = ()

    def available(self) -> bool:
        """Whether this backend can run here at all (e.g. its extension is built)."""
        return True

    def unavailable_reason(self) -> str:
        return ""

    def supports(self, op: str, w: QWeight, x_dtype: Optional[torch.dtype]) -> bool:
        return False

    def linear(self, x: torch.Tensor, w: QWeight, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """x: [M, K] float, M >= 1 -> [M, N] x.dtype."""
        raise NotImplementedError(f"backend {self.name!r} does not implement linear")

    def embedding(self, indices: torch.Tensor, w: QWeight, dtype: torch.dtype) -> torch.Tensor:
        """indices: any integer shape -> [*indices.shape, K] ``dtype``."""
        raise NotImplementedError(f"backend {self.name!r} does not implement embedding")

    def prepare(self, w: QWeight) -> Optional[torch.Tensor]:
        """Derive this backend's device layout from the canonical tensors, or None."""
        return None


_registry: dict[str, Backend] = {}
_available: dict[str, bool] = {}
_loaded = False
_lock = threading.Lock()
_forced: Optional[str] = None


def register_backend(backend: Backend) -> Backend:
    """Add (or replace, by name) a backend. Returns it, so it can decorate an instance."""
    if not backend.name:
        raise ValueError("a backend needs a name")
    _registry[backend.name] = backend
    _available.pop(backend.name, None)
    return backend


def unregister_backend(name: str) -> None:
    """Remove a backend by name (tests, or to disable a misbehaving one)."""
    _registry.pop(name, None)
    _available.pop(name, None)


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    with _lock:
        if not _loaded:
            for mod in _BUILTIN:
                importlib.import_module(mod)
            _loaded = True


def registered_backends() -> list[Backend]:
    """All registered backends, highest priority first."""
    _ensure_loaded()
    return sorted(_registry.values(), key=lambda b: -b.priority)


def _is_available(b: Backend) -> bool:
    if b.name not in _available:
        _available[b.name] = bool(b.available())
    return _available[b.name]


def _forced_name() -> Optional[str]:
    return _forced or os.environ.get("LOWBIT_BACKEND") or None


def select(op: str, device_type: str, w: QWeight, x_dtype: Optional[torch.dtype] = None) -> Backend:
    """The highest-priority available backend that supports this call."""
    forced = _forced_name()
    if forced:
        b = {x.name: x for x in registered_backends()}.get(forced)
        if b is None:
            raise ValueError(f"LOWBIT_BACKEND / use_backend names unknown backend {forced!r}")
        if not (_is_available(b) and device_type in b.device_types and b.supports(op, w, x_dtype)):
            raise RuntimeError(f"backend {forced!r} was forced but cannot run {op} on {device_type} for {w.meta}")
        return b
    for b in registered_backends():
        if device_type in b.device_types and _is_available(b) and b.supports(op, w, x_dtype):
            return b
    raise RuntimeError(f"no lowbit backend supports {op} on {device_type} for {w.meta}")  # reference covers all


def prepare_layout(w: QWeight) -> tuple[str, Optional[torch.Tensor]]:
    """Ask the best backend for this device to derive its layout: ``(name, layout | None)``."""
    try:
        b = select("linear", w.qdata.device.type, w, None)
    except RuntimeError:
        return "", None
    layout = b.prepare(w)
    return (b.name, layout) if layout is not None else ("", None)


@contextlib.contextmanager
def use_backend(name: Optional[str]) -> Iterator[None]:
    """Force one backend by name inside the block (tests, benchmarks); None = automatic."""
    global _forced
    old, _forced = _forced, name
    try:
        yield
    finally:
        _forced = old
