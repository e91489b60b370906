"""Plain-tensor parameters for fast compiled calls.

A compiled module takes its parameters as graph inputs. A tensor-subclass parameter is
unwrapped into its plain inner tensors *on every call*, in Python (AOTAutograd's runtime
wrapper: ``__tensor_flatten__`` and a recursion per inner tensor, ~16 us a weight on an
H100 host with torch 2.11). A decoder with 225 quantized linears spends ~4 ms a step there,
longer than the kernels of its CUDA-graph replay (measured: docs/benchmarks.md, "where a
decode step went").

:func:`unwrap_for_compile` moves that work to trace time: each LowBitTensor parameter (or
DTensor shard of one, under tensor parallel) is replaced by its plain inner tensors,
registered as parameters through a ``torch.nn.utils.parametrize`` parametrization whose
forward rebuilds the weight (a DTensor through ``DTensor.from_local``, which dynamo traces).
Inside a compiled graph the rebuild is traced away; in eager it costs a few microseconds a call.
:func:`rewrap` undoes it (e.g. before ``state_dict`` / :func:`lowbit.save_file`).

A plain ``nn.Linear`` takes a shorter way: it becomes an :class:`UnwrappedLinear` whose forward
passes the leaves (``weight_qdata``, ``weight_scales``, ``weight_zeros``, ``weight_kernel_data``)
straight to the op. Dynamo then guards a few tensors and constants per layer instead of the
~60 guards its trace of the parametrization installs: checking the guards of a 32-layer W4
decoder step took 0.24–0.31 ms this way against 0.86–2.6 ms (bf16: 0.09–0.16 ms; torch 2.13,
``benchmarks/compile_guards.py``, docs/benchmarks.md). On an H100 80GB HBM3 (torch 2.11,
triton 3.6) the 8B W4 decode step's host time fell from 3.3-4.0 ms to 0.95-1.04 ms with it, and
batch 1 went from 1.76x to 2.03x bf16 (``bash scripts/gpu_e2e_check.sh``; output in
docs/data/e2e_h100_2026-12-06b).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from .tensor import LowBitTensor, linear_parts

__all__ = ["unwrap_for_compile", "rewrap", "is_unwrapped"]


@dataclass(frozen=True)
class _Spec:
    """How to rebuild one wrapper subclass from its inner tensors (depth first)."""

    cls: type
    names: tuple
    ctx: Any
    size: torch.Size
    stride: tuple
    children: tuple  # a _Spec per inner name; None for a plain tensor
    dtensor: bool = False  # decided here, not in the traced rebuild (dynamo warns on cached calls)


def _flatten(t: torch.Tensor) -> tuple[Optional[_Spec], list]:
    if not is_traceable_wrapper_subclass(t):
        return None, [t]
    if isinstance(t, LowBitTensor):
        # derive the device layout now so it is a leaf: the rebuilt tensor is traced and cannot
        # cache one, so without it every compiled call would repack the weight (DTensor shards
        # reach here without a layout: theirs is derived lazily on the first eager call)
        t.refresh_kernel_data()
    if _is_dtensor(type(t)):  # public API only: DTensor's flatten format changes between releases
        spec, leaves = _flatten(t._local_tensor)
        return _Spec(type(t), ("_local_tensor",), (t.device_mesh, t.placements), t.size(), t.stride(), (spec,),
                     dtensor=True), leaves
    names, ctx = t.__tensor_flatten__()
    children, leaves = [], []
    for name in names:
        spec, sub = _flatten(getattr(t, name))
        children.append(spec)
        leaves += sub
    return _Spec(type(t), tuple(names), ctx, t.size(), t.stride(), tuple(children)), leaves


def _unflatten(spec: Optional[_Spec], leaves: Iterator[torch.Tensor]) -> torch.Tensor:
    if spec is None:
        return next(leaves)
    inner = {name: _unflatten(child, leaves) for name, child in zip(spec.names, spec.children)}
    if spec.dtensor:  # dynamo traces DTensor.from_local, not DTensor(...) from a spec
        mesh, placements = spec.ctx
        return spec.cls.from_local(inner["_local_tensor"], mesh, placements, run_check=False,
                                  shape=spec.size, stride=spec.stride)
    return spec.cls.__tensor_unflatten__(inner, spec.ctx, spec.size, spec.stride)


@functools.cache
def _is_dtensor(cls: type) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return False
    return issubclass(cls, DTensor)


class _Rebuild(nn.Module):
    """Parametrization: the stored parameters are the plain leaves; forward rebuilds the weight."""

    spec: Optional[_Spec] = None
    device: Optional[torch.device] = None

    def right_inverse(self, t: torch.Tensor) -> list:
        self.spec, leaves = _flatten(t)
        self.device = leaves[0].device
        return leaves

    def forward(self, *leaves: torch.Tensor) -> torch.Tensor:
        if leaves[0].device != self.device:
            _moved(self.device, leaves[0].device)
        return _unflatten(self.spec, iter(leaves))


_LEAVES = ("qdata", "scales", "zeros", "kernel_data")


class UnwrappedLinear(nn.Linear):
    """An ``nn.Linear`` whose LowBitTensor weight is stored as plain parameters
    ``weight_<part>`` (made by :func:`unwrap_for_compile`, undone by :func:`rewrap`)."""

    _lowbit_parts: tuple  # (QuantMeta, dtype, kernel_format, device) of the weight

    def _parts(self) -> tuple:
        """(meta, dtype, kernel_format) of the weight, once its parts are checked to be where
        they were unwrapped."""
        meta, dtype, kernel_format, device = self._lowbit_parts
        if self.weight_qdata.device != device:
            _moved(device, self.weight_qdata.device)
        return meta, dtype, kernel_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        meta, dtype, kernel_format = self._parts()
        return linear_parts(x, self.weight_qdata, self.weight_scales, self.weight_zeros, self.weight_kernel_data,
                            kernel_format, self.bias, meta, dtype)

    @property
    def weight(self) -> torch.Tensor:
        """The LowBitTensor, rebuilt from the stored parts (for eager code that reads it)."""
        meta, dtype, kernel_format = self._parts()
        return LowBitTensor(self.weight_qdata, self.weight_scales, self.weight_zeros, meta, dtype,
                            self.weight_kernel_data, kernel_format)


def _moved(was: torch.device, now: torch.device):
    # the parts include the device layout derived for ``was``: moving them as plain tensors
    # would pair it with another backend (a trace-time check when compiled)
    raise RuntimeError(f"lowbit: a weight unwrapped by unwrap_for_compile on {was} is now on {now}; "
                       "call lowbit.rewrap(model), move the model, then unwrap_for_compile(model) again")


def _unwrap_linear(module: nn.Linear) -> None:
    w = module.weight
    w.refresh_kernel_data()
    del module._parameters["weight"]
    module.__class__ = UnwrappedLinear
    module._lowbit_parts = (w.meta, w.dtype, w.kernel_format if w.kernel_data is not None else "", w.device)
    for part in _LEAVES:
        t = getattr(w, part)
        module.register_parameter(f"weight_{part}", None if t is None else nn.Parameter(t, requires_grad=False))


def _rewrap_linear(module: UnwrappedLinear) -> None:
    w = module.weight
    for part in _LEAVES:
        del module._parameters[f"weight_{part}"]
    del module._lowbit_parts
    module.__class__ = nn.Linear
    module.weight = nn.Parameter(w, requires_grad=False)


def _holds_lowbit(t: torch.Tensor) -> bool:
    if isinstance(t, LowBitTensor):
        return True
    if not is_traceable_wrapper_subclass(t):
        return False
    return any(_holds_lowbit(getattr(t, name)) for name in t.__tensor_flatten__()[0])


def unwrap_for_compile(model: nn.Module) -> nn.Module:
    """Store every LowBitTensor parameter of ``model`` as its plain inner tensors (in place;
    returns ``model``). Call it after quantizing (and loading / sharding) and before
    ``torch.compile``. The parameter names in ``state_dict`` change: ``<linear>.weight_qdata``...
    for a plain ``nn.Linear`` (:class:`UnwrappedLinear`), torch's parametrize names
    (``...parametrizations.weight.original0``...) for other modules and DTensor shards;
    :func:`rewrap` restores them."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"unwrap_for_compile expects an nn.Module, got {type(model).__name__}")
    todo = []
    for fqn, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(p, LowBitTensor) or (_is_dtensor(type(p)) and isinstance(p._local_tensor, LowBitTensor)):
                todo.append((module, name))
            elif _holds_lowbit(p):
                raise NotImplementedError(
                    f"unwrap_for_compile: {fqn + '.' if fqn else ''}{name} is a {type(p).__name__} holding a LowBitTensor; "
                    "only LowBitTensor weights and DTensor shards of them can be unwrapped: compile it as it is")
    for module, name in todo:
        if type(module) is nn.Linear and name == "weight" and isinstance(module.weight, LowBitTensor) \
                and not parametrize.is_parametrized(module):
            _unwrap_linear(module)
        else:
            parametrize.register_parametrization(module, name, _Rebuild())
    return model


def is_unwrapped(model: nn.Module) -> bool:
    """True if some parameter of ``model`` is stored unwrapped by :func:`unwrap_for_compile`."""
    return any(isinstance(m, UnwrappedLinear) or _rebuilt_names(m) for m in model.modules())


def _rebuilt_names(module: nn.Module) -> list:
    if not parametrize.is_parametrized(module):
        return []
    return [n for n, plist in module.parametrizations.items() if any(isinstance(p, _Rebuild) for p in plist)]


def rewrap(model: nn.Module) -> nn.Module:
    """Undo :func:`unwrap_for_compile`: the parameters are LowBitTensors again (in place)."""
    for module in list(model.modules()):
        if isinstance(module, UnwrappedLinear):
            _rewrap_linear(module)
        for name in _rebuilt_names(module):
            parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model
