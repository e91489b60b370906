"""``torch.library`` custom ops: the only door between PyTorch and a backend.

``lowbit::linear`` and ``lowbit::embedding`` take plain tensors and ints (so torch.compile
sees one opaque node with a fake implementation and never specializes on the batch size);
the real implementation picks a backend at run time by device and support. This module
knows nothing about the tensor subclass or modules.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode as _current_dispatch_mode

from . import backends
from .meta import QuantMeta, QWeight
from .packing import unpack
from .quant import dequantize

__all__ = ["linear", "linear_impl", "eager_call_ok", "embedding", "decode_attention"]


@functools.lru_cache(maxsize=256)
def _meta(bits: int, group_size: int, symmetric: bool, act: str) -> QuantMeta:
    # validated once per distinct layer kind, not on every call
    return QuantMeta(bits=bits, group_size=group_size, symmetric=symmetric, act=act)


def _qweight(qdata, scales, zeros, layout, bits, group_size, symmetric, act, layout_name) -> QWeight:
    k = qdata.shape[1] * 8 // bits
    return QWeight(qdata, scales, zeros, _meta(bits, group_size, symmetric, act), qdata.shape[0], k, layout,
                   layout_name)


def linear_impl(
    x: Tensor,
    qdata: Tensor,
    scales: Tensor,
    zeros: Optional[Tensor],
    layout: Optional[Tensor],
    bias: Optional[Tensor],
    bits: int,
    group_size: int,
    symmetric: bool,
    act: str,
    layout_name: str,
) -> Tensor:
    """y = x @ W.T (+ bias) for a quantized W. x: [..., K] float -> [..., N] x.dtype.

    qdata: [N, K/8*bits] uint8 canonical codes; scales/zeros: [N, K/group_size];
    layout: an optional backend device layout derived from them (named ``layout_name``).
    """
    w = _qweight(qdata, scales, zeros, layout, bits, group_size, symmetric, act, layout_name)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, w.k)
    if x2.shape[0] == 0:
        return x.new_empty(*lead, w.n)
    b = backends.select("linear", x.device.type, w, x.dtype)
    return b.linear(x2.contiguous(), w, bias).reshape(*lead, w.n)


linear = torch.library.custom_op("lowbit::linear", mutates_args=())(linear_impl)


def eager_call_ok(x: Tensor) -> bool:
    """Whether a call may skip the custom op and run ``linear_impl`` directly: a plain
    tensor, no autograd needed, not being traced by torch.compile, no dispatch mode (fake
    tensors, counters) active. Same implementation, minus ~15 us of dispatcher layers per
    call; everything else keeps going through the op."""
    return (type(x) is Tensor and not torch.compiler.is_compiling() and x.device.type != "meta"
            and not (x.requires_grad and torch.is_grad_enabled()) and _current_dispatch_mode() is None)


@linear.register_fake
def _(x, qdata, scales, zeros, layout, bias, bits, group_size, symmetric, act, layout_name):
    return x.new_empty(*x.shape[:-1], qdata.shape[0])


def _linear_setup_context(ctx, inputs, output):
    x, qdata, scales, zeros, _, bias, bits, *_ = inputs
    ctx.save_for_backward(qdata, scales, zeros)
    ctx.bits, ctx.k, ctx.has_bias = bits, x.shape[-1], bias is not None


def _linear_backward(ctx, grad):
    # gradient w.r.t. the activations (and bias) only: the quantized weight is frozen;
    # the int8 path is treated as straight-through (its rounding has no useful gradient)
    qdata, scales, zeros = ctx.saved_tensors
    w = dequantize(unpack(qdata, ctx.bits, ctx.k), scales, zeros, ctx.bits, grad.dtype)
    gx = grad @ w
    gb = grad.reshape(-1, grad.shape[-1]).sum(0) if ctx.has_bias else None
    return gx, None, None, None, None, gb, None, None, None, None, None


linear.register_autograd(_linear_backward, setup_context=_linear_setup_context)


@torch.library.custom_op("lowbit::embedding", mutates_args=())
def embedding(
    indices: Tensor,
    qdata: Tensor,
    scales: Tensor,
    zeros: Optional[Tensor],
    layout: Optional[Tensor],
    bits: int,
    group_size: int,
    symmetric: bool,
    dtype: torch.dtype,
    layout_name: str,
) -> Tensor:
    """Rows of a quantized table. indices: any integer shape -> [*indices.shape, K] ``dtype``."""
    w = _qweight(qdata, scales, zeros, layout, bits, group_size, symmetric, "none", layout_name)
    if indices.numel() == 0:
        return torch.empty(*indices.shape, w.k, dtype=dtype, device=qdata.device)
    b = backends.select("embedding", qdata.device.type, w, dtype)
    return b.embedding(indices, w, dtype)


@embedding.register_fake
def _(indices, qdata, scales, zeros, layout, bits, group_size, symmetric, dtype, layout_name):
    k = qdata.shape[1] * 8 // bits
    return qdata.new_empty(*indices.shape, k, dtype=dtype)


def _attention_module():
    try:
        from .backends.triton import ensure_kernels

        ensure_kernels()
        from lowbit.kernels import attention
    except ImportError as e:
        raise RuntimeError(f"lowbit::decode_attention needs triton (pip install 'lowbit[triton]'): {e}") from e
    return attention


@functools.lru_cache(maxsize=None)
def decode_attention_available() -> bool:
    """Whether the cache-attention op can run here (triton importable)."""
    try:
        _attention_module()
    except RuntimeError:
        return False
    return True


@torch.library.custom_op("lowbit::decode_attention", mutates_args=())
def decode_attention(q: Tensor, k: Tensor, v: Tensor, input_pos: Tensor) -> Tensor:
    """Grouped-query attention over a static KV cache: token ``i`` of q [B, H, T, D] attends to
    slots ``<= input_pos[i]`` of k, v [B, KV, S, D] -> [B, H, T, D]. A Triton kernel on CUDA
    (kernels/attention.py; what the built-in decoders' cached steps use there), the pure-torch
    reference elsewhere. An op of its own so torch.compile and CUDA graphs see one node."""
    attention = _attention_module()
    if q.is_cuda:
        return attention.decode_attention(q, k, v, input_pos)
    return attention.decode_attention_ref(q, k, v, input_pos)


@decode_attention.register_fake
def _(q, k, v, input_pos):
    return q.new_empty(q.shape)
