"""Triton GPU kernels, importable as ``lowbit.kernels`` (one kernel family per file).

Nothing here is imported by ``import lowbit``; the Triton backend loads these lazily.
The kernel families are specified in docs/kernels.md and arrive with issue 4; until then
CUDA tensors run on the reference backend.
"""
