"""The reference backend: dequantize + matmul, and the int8 integer semantics, in pure torch.

Always available on every device, so every feature works before a fast kernel exists,
and every kernel is tested against it.
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import quant
from ..meta import QWeight
from ..packing import unpack
from . import Backend, register_backend


def _codes(w: QWeight, rows=None) -> torch.Tensor:
    q = w.qdata if rows is None else w.qdata[rows]
    return unpack(q, w.meta.bits, w.k)


class ReferenceBackend(Backend):
    name = "reference"
    priority = -100  # the fallback: any other backend that supports a call wins
    device_types = ("cpu", "cuda", "meta", "xpu", "mps")

    def supports(self, op, w, x_dtype):
        return op in ("linear", "embedding")

    def linear(self, x: torch.Tensor, w: QWeight, bias: Optional[torch.Tensor]) -> torch.Tensor:
        codes = _codes(w)
        if w.meta.act == "int8":
            return quant.int8_linear_reference(x, codes, w.scales, w.zeros, w.meta.bits, bias, x.dtype)
        return quant.weight_only_linear_reference(x, codes, w.scales, w.zeros, w.meta.bits, bias)

    def embedding(self, indices: torch.Tensor, w: QWeight, dtype: torch.dtype) -> torch.Tensor:
        flat = indices.reshape(-1)
        zeros = None if w.zeros is None else w.zeros[flat]
        rows = quant.dequantize(_codes(w, flat), w.scales[flat], zeros, w.meta.bits, dtype)
        return rows.reshape(*indices.shape, w.k)


register_backend(ReferenceBackend())
