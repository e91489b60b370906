"""The Triton backend: CUDA LowBitTensors run the kernels in ``lowbit.kernels`` by default.

Registered with a priority above the reference, for device type "cuda". ``triton`` is
imported lazily (in :meth:`TritonBackend.available` and on first call), never at
``import lowbit``. ``prepare`` derives the device layout (``kernels/layout.py``) once per
weight; LowBitTensor caches it and hands it back as ``QWeight.layout`` with
``layout_name == "triton"``; a call without it derives the layout on the fly (correct,
slower). Family choice by M / bits / device lives in ``lowbit.kernels.dispatch``.
"""
from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path
from typing import Optional

import torch

from ..meta import QWeight
from . import Backend, register_backend

_FLOAT_ACTS = (torch.float16, torch.bfloat16)
_SCALE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def ensure_kernels() -> None:
    """Make ``lowbit.kernels`` importable. An install maps it to the top-level ``kernels/``
    folder (pyproject's package-dir); a source checkout on ``PYTHONPATH`` has no such
    mapping, so the folder next to the package is loaded under that name instead."""
    try:
        import lowbit.kernels  # noqa: F401

        return
    except ImportError:
        pass
    root = Path(__file__).resolve().parents[2] / "kernels"
    if not (root / "__init__.py").is_file():
        raise ImportError(f"lowbit.kernels is not installed and {root} does not exist")
    spec = importlib.util.spec_from_file_location("lowbit.kernels", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["lowbit.kernels"] = mod
    spec.loader.exec_module(mod)
    import lowbit

    lowbit.kernels = mod


class TritonBackend(Backend):
    name = "triton"
    priority = 50
    device_types = ("cuda",)

    def __init__(self):
        self._reason = ""
        self._tuned: set = set()

    def _install_tuning(self, device: torch.device) -> None:
        """Once per device: load tuned configs/winners (``lowbit.autotune.install``) into the
        dispatch table. Reads files only; a failure leaves the defaults and warns once."""
        idx = device.index if device.index is not None else torch.cuda.current_device()
        if idx in self._tuned:
            return
        self._tuned.add(idx)
        try:
            from lowbit import autotune
            from lowbit.kernels import dispatch

            autotune.install(torch.device("cuda", idx), dispatch)
        except Exception as e:  # a missing optional dependency or an unreadable cache
            warnings.warn(f"lowbit: tuned Triton configs not loaded ({type(e).__name__}: {e}); using defaults",
                          stacklevel=2)

    def available(self) -> bool:
        try:
            import triton  # noqa: F401

            ensure_kernels()
            from lowbit.kernels import dispatch  # noqa: F401
        except Exception as e:  # ImportError, or a broken triton install
            self._reason = f"triton kernels unavailable: {type(e).__name__}: {e}"
            return False
        if not torch.cuda.is_available():
            self._reason = "no CUDA device"
            return False
        return True

    def unavailable_reason(self) -> str:
        return self._reason

    def supports(self, op: str, w: QWeight, x_dtype: Optional[torch.dtype]) -> bool:
        """linear only; fp16/bf16 activations (x_dtype None = asked for prepare); a K tile
        of whole slices must fit the group size."""
        if op != "linear" or w.meta.transposed:
            return False
        if x_dtype is not None and x_dtype not in _FLOAT_ACTS:
            return False
        if w.scales.dtype not in _SCALE_DTYPES or w.k % 8:
            return False
        from lowbit.kernels.layout import plane_config

        return w.group_size % plane_config(w.meta.bits).E == 0

    def prepare(self, w: QWeight) -> Optional[torch.Tensor]:
        from lowbit.kernels.splitk_workspace import workspace
        from lowbit.kernels.layout import make_layout

        if w.qdata.is_cuda:
            self._install_tuning(w.qdata.device)
            workspace(w.qdata.device)  # now, eagerly: never from a CUDA-graph pool later
        return make_layout(w.qdata, w.scales, w.zeros, w.meta.bits)

    def device_weight(self, w: QWeight):
        """The kernels' view of ``w``: the cached layout if it is ours, else derived now."""
        from lowbit.kernels.layout import device_weight, make_layout

        layout = w.layout if (w.layout is not None and w.layout_name == self.name) else None
        if layout is None:
            layout = make_layout(w.qdata, w.scales, w.zeros, w.meta.bits)
        return device_weight(layout, w.n, w.k, w.meta.bits, w.group_size, w.scales.dtype, w.zeros is not None)

    def linear(self, x: torch.Tensor, w: QWeight, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """x: [M, K] fp16/bf16 contiguous, M >= 1 -> [M, N] x.dtype."""
        from lowbit.kernels import dispatch

        if x.is_cuda:
            self._install_tuning(x.device)
        return dispatch.linear(x, self.device_weight(w), bias, w.meta.act)

    def describe(self) -> list[str]:
        from lowbit.kernels import dispatch

        t = dispatch.thresholds()
        return [
            f"families: {', '.join(dispatch.FAMILIES)}",
            f"default dispatch: M<={t.gemv_max_m} GEMV, M<={t.splitk_max_m} split-K GEMM, "
            f"M<{t.dequant_min_m} GEMM, else dequantize+cuBLAS; int8 act: GEMV (M=1) / int8 GEMM",
        ]


register_backend(TritonBackend())
