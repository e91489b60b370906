"""LowBitTensor: a quantized weight that looks like a float tensor from the outside.

Outside: the logical shape ``[N, K]`` (``[K, N]`` after ``t()``) and float dtype.
Inside: the canonical packed codes (``qdata``), ``scales``, ``zeros`` (None when
symmetric), a frozen :class:`~lowbit.meta.QuantMeta`, and optionally a backend's device
layout (``kernel_data``) derived from them when the tensor lands on a device. Only the
canonical tensors are ever saved, sliced or moved; the device layout is re-derived.

Linear and embedding go through the ``lowbit::`` custom ops; the aten ops that users,
``state_dict``, ``.to()``, DTensor and torch.compile need are implemented below, and
every other op raises an error naming it. This module knows nothing about modules or
configs.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import return_and_correct_aliasing

from . import ops
from .backends import prepare_layout
from .meta import QuantMeta, QWeight
from .packing import CHUNK, pack, unpack
from .quant import dequantize as _dequantize
from .quant import quantize_weight

__all__ = ["LowBitTensor"]

aten = torch.ops.aten
_HANDLERS: dict = {}


def _implements(*funcs):
    def deco(fn: Callable):
        for f in funcs:
            _HANDLERS[f] = fn
        return fn

    return deco


def _traced(t: torch.Tensor) -> bool:
    # fake / functional tensors during torch.compile tracing are Tensor subclasses
    return type(t) is not torch.Tensor or torch.compiler.is_compiling()


class LowBitTensor(torch.Tensor):
    """A quantized 2-D weight. Build one with :meth:`from_float` or :func:`lowbit.quantize_`.

    qdata: [N, K/8*bits] uint8 canonical codes (see docs/format.md); scales, zeros:
    [N, K/group_size] in the logical dtype; meta: QuantMeta.
    """

    qdata: torch.Tensor
    scales: torch.Tensor
    zeros: Optional[torch.Tensor]
    meta: QuantMeta
    kernel_data: Optional[torch.Tensor]
    kernel_format: str

    @staticmethod
    def __new__(cls, qdata, scales, zeros, meta, dtype, kernel_data=None, kernel_format=""):
        n, k = qdata.shape[0], qdata.shape[1] * CHUNK // meta.bits
        shape, strides = ((k, n), (1, k)) if meta.transposed else ((n, k), (k, 1))
        return torch.Tensor._make_wrapper_subclass(
            cls, shape, strides=strides, dtype=dtype, device=qdata.device, requires_grad=False
        )

    def __init__(self, qdata, scales, zeros, meta, dtype, kernel_data=None, kernel_format=""):
        self.qdata, self.scales, self.zeros, self.meta = qdata, scales, zeros, meta
        self.kernel_data, self.kernel_format = kernel_data, kernel_format
        self._kernel_version = self._versions() if kernel_data is not None else None

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_float(
        cls,
        w: torch.Tensor,
        bits: int,
        group_size: Optional[int],
        symmetric: bool = False,
        method: str = "minmax",
        act: str = "none",
        usage: str = "linear",
    ) -> "LowBitTensor":
        """Quantize a float weight ``w: [N, K]`` (K a multiple of 8 and of group_size).
        ``usage="embedding"`` marks an embedding table (no linear kernel layout is derived)."""
        if not isinstance(w, torch.Tensor) or not w.dtype.is_floating_point:
            raise TypeError(f"from_float expects a float tensor, got {getattr(w, 'dtype', type(w))}")
        if w.dim() != 2:
            raise ValueError(f"from_float expects a 2-D weight, got shape {tuple(w.shape)}")
        if w.shape[1] % CHUNK:
            raise ValueError(f"K={w.shape[1]} must be a multiple of {CHUNK} to pack")
        codes, scales, zeros = quantize_weight(w.detach(), bits, group_size, symmetric, method)
        meta = QuantMeta(bits=bits, group_size=group_size, symmetric=symmetric, act=act, usage=usage)
        t = cls(pack(codes, bits), scales, zeros, meta, w.dtype)
        t.refresh_kernel_data()
        return t

    # ---- views of the inner data -------------------------------------------------------
    @property
    def n(self) -> int:
        return self.qdata.shape[0]

    @property
    def k(self) -> int:
        return self.qdata.shape[1] * CHUNK // self.meta.bits

    def qweight(self) -> QWeight:
        return QWeight(self.qdata, self.scales, self.zeros, self.meta, self.n, self.k, self.kernel_data, self.kernel_format)

    def codes(self) -> torch.Tensor:
        """Unpacked codes [N, K] uint8 (of the untransposed weight)."""
        return unpack(self.qdata, self.meta.bits, self.k)

    def dequantize(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The float weight this tensor stands for, in ``dtype`` (default its own)."""
        w = _dequantize(self.codes(), self.scales, self.zeros, self.meta.bits, dtype or self.dtype)
        return w.t() if self.meta.transposed else w

    @property
    def packed_nbytes(self) -> int:
        """Bytes of the canonical representation (codes + scales + zeros)."""
        parts = [self.qdata, self.scales] + ([self.zeros] if self.zeros is not None else [])
        return sum(p.numel() * p.element_size() for p in parts)

    def _versions(self):
        return tuple(t._version for t in (self.qdata, self.scales, self.zeros) if t is not None)

    def refresh_kernel_data(self) -> None:
        """(Re)derive the best backend's device layout if missing or stale (eager only)."""
        if _traced(self.qdata) or self.meta.usage == "embedding":
            return
        if self.kernel_data is not None and self._kernel_version == self._versions():
            return
        self.kernel_format, self.kernel_data = prepare_layout(
            QWeight(self.qdata, self.scales, self.zeros, self.meta.replace(transposed=False), self.n, self.k)
        )
        self._kernel_version = self._versions() if self.kernel_data is not None else None

    def _with(self, qdata=None, scales=None, zeros=..., meta=None, dtype=None, keep_kernel=False):
        """A new LowBitTensor with some parts replaced (the kernel layout only if asked)."""
        return LowBitTensor(
            self.qdata if qdata is None else qdata,
            self.scales if scales is None else scales,
            self.zeros if zeros is ... else zeros,
            self.meta if meta is None else meta,
            self.dtype if dtype is None else dtype,
            self.kernel_data if keep_kernel else None,
            self.kernel_format if keep_kernel else "",
        )

    def _map(self, fn, **kw):
        """Apply ``fn`` to every canonical inner tensor."""
        z = None if self.zeros is None else fn(self.zeros)
        return self._with(fn(self.qdata), fn(self.scales), z, **kw)

    # ---- subclass protocol -------------------------------------------------------------
    def __tensor_flatten__(self):
        names = ["qdata", "scales"]
        if self.zeros is not None:
            names.append("zeros")
        if self.kernel_data is not None:
            names.append("kernel_data")
        return names, (self.meta, self.dtype, self.kernel_format)

    @staticmethod
    def __tensor_unflatten__(inner, ctx, outer_size, outer_stride):
        meta, dtype, kernel_format = ctx
        return LowBitTensor(
            inner["qdata"], inner["scales"], inner.get("zeros"), meta, dtype,
            inner.get("kernel_data"), kernel_format if "kernel_data" in inner else "",
        )

    def _stable_hash_for_caching(self) -> str:
        # AOT-autograd cache key: everything but the tensor values
        parts = [(n, tuple(getattr(self, n).shape), str(getattr(self, n).dtype)) for n in self.__tensor_flatten__()[0]]
        key = repr((tuple(self.shape), self.meta, self.dtype, self.kernel_format, parts))
        return hashlib.sha256(key.encode()).hexdigest()

    def __reduce_ex__(self, protocol):
        # only the canonical format is saved; rebuilt by a function on the weights_only allow-list
        return (_rebuild, (self.qdata, self.scales, self.zeros, self.meta.to_dict(), self.dtype))

    def __repr__(self, *, tensor_contents=None):
        m = self.meta
        gs = "per-channel" if m.group_size is None else m.group_size
        kern = self.kernel_format or "canonical"
        t = ", transposed" if m.transposed else ""
        return (
            f"LowBitTensor(shape={list(self.shape)}, dtype={self.dtype}, device={self.device}, bits={m.bits}, "
            f"group_size={gs}, {'symmetric' if m.symmetric else 'asymmetric'}, act={m.act}, "
            f"{'usage=embedding, ' if m.usage == 'embedding' else ''}layout={kern}{t})"
        )

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, w = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if isinstance(w, LowBitTensor) and not isinstance(x, LowBitTensor):
                return _linear(x, w, bias)
        if func is F.embedding:
            return _embedding_fn(*args, **kwargs)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        if handler is None:
            raise NotImplementedError(
                f"LowBitTensor does not support {func}. Supported ops: "
                + ", ".join(sorted({str(f) for f in _HANDLERS}))
                + ". Call .dequantize() for a plain float tensor."
            )
        return handler(func, args, kwargs)


def _rebuild(qdata, scales, zeros, meta: dict, dtype):
    t = LowBitTensor(qdata, scales, zeros, QuantMeta.from_dict(meta), dtype)
    t.refresh_kernel_data()
    return t


# ---- linear / embedding ------------------------------------------------------------------
def _check_input(x: torch.Tensor, dtype: torch.dtype, device: torch.device, k: int, where: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: input must be a tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{where}: input must be floating point, got {x.dtype}")
    if x.dtype != dtype:
        raise TypeError(f"{where}: input dtype {x.dtype} does not match the weight's dtype {dtype}; cast one of them")
    if x.device != device:
        raise RuntimeError(f"{where}: input is on {x.device} but the weight is on {device}")
    if x.dim() == 0 or x.shape[-1] != k:
        raise ValueError(f"{where}: input's last dim must be K={k}, got shape {tuple(x.shape)}")


def _linear(x: torch.Tensor, w: LowBitTensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """y = x @ W.T + bias, where ``w`` is the (untransposed) [N, K] LowBitTensor."""
    w.refresh_kernel_data()
    return linear_parts(x, w.qdata, w.scales, w.zeros, w.kernel_data, w.kernel_format, bias, w.meta, w.dtype)


def linear_parts(x: torch.Tensor, qdata: torch.Tensor, scales: torch.Tensor, zeros: Optional[torch.Tensor],
                 kernel_data: Optional[torch.Tensor], kernel_format: str, bias: Optional[torch.Tensor],
                 meta: QuantMeta, dtype: torch.dtype) -> torch.Tensor:
    """``_linear`` on a LowBitTensor's parts (what an unwrapped Linear stores: lowbit.unwrap)."""
    n, k = qdata.shape[0], qdata.shape[1] * CHUNK // meta.bits
    _check_input(x, dtype, qdata.device, k, "lowbit linear")
    if bias is not None and (bias.shape != (n,) or bias.device != qdata.device):
        raise ValueError(f"lowbit linear: bias must be [{n}] on {qdata.device}, got {tuple(bias.shape)} on {bias.device}")
    # eager inference skips the op's dispatcher layers (same implementation); autograd,
    # torch.compile and dispatch modes go through the custom op
    op = ops.linear_impl if ops.eager_call_ok(x) and (bias is None or not bias.requires_grad) else ops.linear
    return op(x, qdata, scales, zeros, kernel_data, bias, meta.bits, meta.group(k), meta.symmetric, meta.act,
              kernel_format)


def _embedding(w: LowBitTensor, indices: torch.Tensor) -> torch.Tensor:
    if indices.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"lowbit embedding: indices must be int32/int64, got {indices.dtype}")
    if indices.device != w.device:
        raise RuntimeError(f"lowbit embedding: indices are on {indices.device} but the table is on {w.device}")
    if w.meta.transposed:
        raise ValueError("lowbit embedding: the table is transposed")
    w.refresh_kernel_data()
    m = w.meta
    return ops.embedding(
        indices, w.qdata, w.scales, w.zeros, w.kernel_data,
        m.bits, m.group(w.k), m.symmetric, w.dtype, w.kernel_format,
    )


def _embedding_fn(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False, sparse=False):
    if max_norm is not None:
        raise NotImplementedError("lowbit embedding: max_norm renormalizes the table in place; not supported")
    return _embedding(weight, input)


@_implements(aten.linear.default)
def _(func, args, kwargs):
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    return _linear(x, w, bias)


def _untransposed(w, where: str) -> LowBitTensor:
    if not isinstance(w, LowBitTensor) or not w.meta.transposed:
        raise NotImplementedError(f"{where}: only x @ W.t() with a LowBitTensor W is supported")
    return w._with(meta=w.meta.replace(transposed=False), keep_kernel=True)


@_implements(aten.mm.default)
def _(func, args, kwargs):
    x, wt = args
    if isinstance(x, LowBitTensor):
        raise NotImplementedError("aten.mm: a LowBitTensor as the left operand is not supported")
    return _linear(x, _untransposed(wt, "aten.mm"), None)


@_implements(aten.addmm.default)
def _(func, args, kwargs):
    bias, x, wt = args[:3]
    if kwargs.get("beta", 1) != 1 or kwargs.get("alpha", 1) != 1:
        raise NotImplementedError("aten.addmm: only beta=1, alpha=1 are supported")
    if isinstance(x, LowBitTensor):
        raise NotImplementedError("aten.addmm: a LowBitTensor as the left operand is not supported")
    w = _untransposed(wt, "aten.addmm")
    if bias.dim() != 1:  # a 2-D "bias" (e.g. residual) is added after the product
        return _linear(x, w, None) + bias
    return _linear(x, w, bias)


@_implements(aten.embedding.default)
def _(func, args, kwargs):
    return _embedding(args[0], args[1])


# ---- metadata-only ops -------------------------------------------------------------------
@_implements(aten.detach.default, aten.alias.default)
def _(func, args, kwargs):
    return return_and_correct_aliasing(func, args, kwargs, args[0]._with(keep_kernel=True))


@_implements(aten.clone.default)
def _(func, args, kwargs):
    return args[0]._map(torch.clone)


@_implements(aten.t.default)
def _(func, args, kwargs):
    w = args[0]
    w.refresh_kernel_data()  # derive once on the persistent tensor, not on each t() view
    out = w._with(meta=w.meta.replace(transposed=not w.meta.transposed), keep_kernel=True)
    return return_and_correct_aliasing(func, args, kwargs, out)


@_implements(aten.transpose.int)
def _(func, args, kwargs):
    w, d0, d1 = args
    if {d0 % 2, d1 % 2} != {0, 1}:
        return w._with(keep_kernel=True)
    return _HANDLERS[aten.t.default](aten.t.default, (w,), {})


@_implements(aten.view.default, aten._unsafe_view.default, aten.reshape.default)
def _(func, args, kwargs):
    w, size = args[0], list(args[1])
    if -1 in size:
        known = 1
        for s in size:
            known *= s if s != -1 else 1
        size[size.index(-1)] = w.numel() // max(known, 1)
    if list(size) != list(w.shape):
        raise NotImplementedError(f"{func}: LowBitTensor can only be viewed as its own shape {list(w.shape)}, not {size}")
    return w._with(keep_kernel=True)


@_implements(aten._to_copy.default)
def _(func, args, kwargs):
    w = args[0]
    if kwargs.get("layout") not in (None, torch.strided):
        raise NotImplementedError(f"LowBitTensor.to(layout={kwargs['layout']}) is not supported")
    dtype = kwargs.get("dtype") or w.dtype
    if not dtype.is_floating_point:
        raise TypeError(f"LowBitTensor can only be cast to a float dtype, not {dtype}")
    device = kwargs.get("device") or w.device
    nb = kwargs.get("non_blocking", False)
    out = w._with(
        w.qdata.to(device, non_blocking=nb),
        w.scales.to(device, dtype, non_blocking=nb),
        None if w.zeros is None else w.zeros.to(device, dtype, non_blocking=nb),
        dtype=dtype,
    )
    out.refresh_kernel_data()  # the tensor landed on a device: derive that device's layout
    return out


# ---- slicing (views of the canonical data) -----------------------------------------------
def _slice(w: LowBitTensor, dim: int, start: Optional[int], end: Optional[int], step: int = 1) -> LowBitTensor:
    if w.meta.transposed:
        raise NotImplementedError("slicing a transposed LowBitTensor is not supported; slice before t()")
    dim = dim % 2
    size = w.shape[dim]
    start, end, step = slice(start, end, step).indices(size)
    end = max(end, start)
    if step != 1:
        raise NotImplementedError(f"LowBitTensor slice: step must be 1, got {step}")
    if dim == 0:
        return w._map(lambda t: t[start:end])
    gs = w.meta.group(w.k)
    if start % gs or end % gs:
        raise ValueError(
            f"LowBitTensor slice along K must start and end on group boundaries (group size {gs}, "
            f"K={w.k}); got [{start}:{end}]" + (" (per-channel groups cannot be split along K)" if w.meta.group_size is None else "")
        )
    b = w.meta.bits
    q = w.qdata[:, start * b // CHUNK : end * b // CHUNK]
    s, z = slice(start // gs, end // gs), w.zeros
    return w._with(q, w.scales[:, s], None if z is None else z[:, s])


@_implements(aten.slice.Tensor)
def _(func, args, kwargs):
    w = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    start = args[2] if len(args) > 2 else kwargs.get("start")
    end = args[3] if len(args) > 3 else kwargs.get("end")
    step = args[4] if len(args) > 4 else kwargs.get("step", 1)
    return return_and_correct_aliasing(func, args, kwargs, _slice(w, dim, start, end, step))


def _split_sizes(total: int, split_size: int) -> list[int]:
    return [min(split_size, total - i) for i in range(0, total, split_size)] or [0]


@_implements(aten.split.Tensor, aten.split_with_sizes.default)
def _(func, args, kwargs):
    w, sizes = args[0], args[1]
    dim = (args[2] if len(args) > 2 else kwargs.get("dim", 0)) % 2
    if isinstance(sizes, int):
        sizes = _split_sizes(w.shape[dim], sizes)
    if sum(sizes) != w.shape[dim]:
        raise ValueError(f"split sizes {sizes} do not sum to dim {dim} of size {w.shape[dim]}")
    out, start = [], 0
    for s in sizes:
        out.append(_slice(w, dim, start, start + s))
        start += s
    return return_and_correct_aliasing(func, args, kwargs, out)


@_implements(aten.copy_.default)
def _(func, args, kwargs):
    dst, src = args[0], args[1]
    if not isinstance(dst, LowBitTensor):
        raise TypeError(
            "cannot copy a LowBitTensor into a plain tensor (e.g. load_state_dict of a quantized checkpoint "
            "into a float model): quantize the model with the same config first, load with "
            "load_state_dict(..., assign=True), or copy src.dequantize()"
        )
    if not isinstance(src, LowBitTensor):
        raise TypeError(
            "cannot copy a plain tensor into a LowBitTensor: quantize it first (LowBitTensor.from_float "
            "or lowbit.quantize_) so its metadata is known"
        )
    if dst.meta != src.meta or dst.shape != src.shape or dst.dtype != src.dtype:
        raise ValueError(
            f"copy_ into a LowBitTensor needs the same shape, dtype and quantization metadata: "
            f"dst {list(dst.shape)} {dst.dtype} {dst.meta} vs src {list(src.shape)} {src.dtype} {src.meta}"
        )
    nb = kwargs.get("non_blocking", False)
    for d, s in ((dst.qdata, src.qdata), (dst.scales, src.scales), (dst.zeros, src.zeros)):
        if d is not None:
            d.copy_(s, non_blocking=nb)
            # in-place ops inside __torch_dispatch__ skip the version bump; do it by hand so
            # every tensor sharing this storage (the root of a narrow() view too) re-derives
            # its kernel layout before the next call
            torch.autograd.graph.increment_version(d)
    return dst


@_implements(aten.is_same_size.default)
def _(func, args, kwargs):
    return args[0].shape == args[1].shape


# weights_only=True unpickling needs the rebuild function on the allow-list (cheap, no I/O)
torch.serialization.add_safe_globals([_rebuild])
