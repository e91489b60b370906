"""Triton GPU kernels, importable as ``lowbit.kernels`` (one kernel family per file).

Nothing here is imported by ``import lowbit`` and this file imports nothing: the Triton
backend (``lowbit.backends.triton``) loads the modules lazily. Map (docs/gpu_kernels.md):

* ``layout``         device layout derived from the canonical format (pure torch)
* ``unpack``         shared ``@triton.jit`` unpack / dequant / tile helpers
* ``gemv``           GEMV (M=1, CUDA cores), its split-K form (8-bit), the prefetching
                     GEMV for single-plane widths; int8-act GEMV
* ``gemv_revsplitk`` reverse split-K GEMV for packed widths (two tiles per program)
* ``gemm_splitk``    split-K GEMM on tensor cores (M ~ 2-64)
* ``gemm``           GEMM for large M; int8-activation GEMM (int8 ``tl.dot``)
* ``gemv_words``     word GEMV (M=1 default); ``gemv_dp4a`` its opt-in dp4a twin
* ``gemm_pairs``     column-pair tensor-core GEMM (M = 2-16 default; 2-64 without warpgroup MMA)
* ``gemm_swap``      weights-left warpgroup-MMA GEMM (M = 17-128 default on sm_90+)
* ``splitk_workspace`` the self-cleaning split-K workspace those four share
* ``attention``      attention over a static KV cache for the built-in decoders (not quantized)
* ``act_quant``      per-token int8 activation quantization (the int8 families' first step)
* ``dequant``        dequantize-then-cuBLAS path, and the torch reference
* ``dispatch``       family choice by M / bits / device, overridable config tables
"""
