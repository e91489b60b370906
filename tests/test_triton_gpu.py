"""Triton kernels on a real GPU (skipped without CUDA): realistic shapes against an fp32
reference, int8 bit-exactness, torch.compile(fullgraph) and CUDA-graph replays of split-K.

The same checks, plus timings, run in one process via ``bash scripts/gpu_check.sh``
(benchmarks/bench_gpu.py); this file lets a GPU CI run them under pytest.
"""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from helpers import HAS_CUDA, requires_cuda

pytestmark = [requires_cuda, pytest.mark.cuda]

if HAS_CUDA:
    from lowbit import packing, quant
    from lowbit.backends.triton import ensure_kernels

    ensure_kernels()
    from lowbit.kernels import dispatch
    from lowbit.kernels.layout import device_weight, make_layout


def rel(out, ref):
    out, ref = out.float(), ref.float()
    assert not torch.isnan(out).any()
    return float((out - ref).norm() / ref.norm())


def weight(n, k, bits, gs, dtype, sym=False):
    w = torch.randn(n, k, device="cuda", dtype=dtype) * 0.02
    codes, s, z = quant.quantize_weight(w, bits, gs, symmetric=sym)
    dw = device_weight(make_layout(packing.pack(codes, bits), s, z, bits), n, k, bits, gs or k, s.dtype, z is not None)
    return codes, s, z, dw


_FAMILIES = [("gemv_dp4a", 1), ("gemv_words", 1), ("gemv_words", 2), ("gemv_revsplitk", 1), ("gemv_splitk", 1), ("gemm_splitk", 16),
             ("gemm_pairs", 1), ("gemm_pairs", 5), ("gemm_pairs", 16), ("gemm_pairs", 33), ("gemm_pairs", 64),
             ("gemm_swap", 3), ("gemm_swap", 17), ("gemm_swap", 33), ("gemm_swap", 64), ("gemm_swap", 100), ("gemm_swap", 128), ("gemm", 200), ("dequant_cublas", 300)]


# reverse split-K serves packed widths only (8-bit goes through gemv_splitk), the word GEMV
# single-plane widths only: not cases here
@pytest.mark.parametrize("family,m,bits", [(f, m, b) for f, m in _FAMILIES for b in (1, 2, 3, 4, 8)
                                           if not (f == "gemv_revsplitk" and b == 8)
                                           and (f in ("gemv_words", "gemv_dp4a", "gemm_pairs", "gemm_swap") or b in (3, 4, 8))
                                           and not (f in ("gemv_words", "gemm_pairs", "gemm_swap") and b == 3)
                                           and (f != "gemv_dp4a" or b == 4)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_float_families_realistic(family, m, bits, dtype):
    n, k = 2048, 4096
    codes, s, z, dw = weight(n, k, bits, 128, dtype, sym=bits == 8)
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    bias = torch.randn(n, device="cuda", dtype=dtype)
    wh = quant.dequantize(codes, s, z, bits, torch.float32)
    ref = torch.addmm(bias.float(), x.float(), wh.t())
    torch_err = rel(F.linear(x, wh.to(dtype), bias), ref)
    err = rel(dispatch.run_family(family, x, dw, bias, **dispatch.config(family, m, dw, x.device)), ref)
    assert err <= 2 * torch_err
    if dtype == torch.float16:
        assert err <= 1e-3


@pytest.mark.parametrize("family,m,bits,dtype,cfg", [
    ("gemm_pairs", 64, 8, torch.float16, dict(block_m=16, block_n=256, block_k=128, split_k=8, num_warps=4, stages=3)),
    ("gemm_pairs", 64, 1, torch.bfloat16, dict(block_m=16, block_n=256, block_k=128, split_k=8, num_warps=4, stages=3)),
    ("gemm_pairs", 16, 2, torch.float16, dict(block_m=16, block_n=256, block_k=128, split_k=16, num_warps=8, stages=3)),
    ("gemm_pairs", 64, 4, torch.float16, dict(block_m=64, block_n=256, block_k=128, split_k=8, num_warps=4, stages=3)),
    ("gemm_pairs", 64, 4, torch.bfloat16, dict(block_m=16, block_n=256, block_k=128, split_k=8, num_warps=4, stages=3,
                                               maxnreg=168)),
    ("gemm_pairs", 33, 2, torch.float16, dict(block_m=32, block_n=256, block_k=128, split_k=8, num_warps=4, stages=3,
                                              maxnreg=224)),
    ("gemm_swap", 64, 4, torch.float16, dict(block_m=64, block_n=128, block_k=128, split_k=8, num_warps=4, stages=3)),
    ("gemm_swap", 33, 2, torch.bfloat16, dict(block_m=16, block_n=64, block_k=128, split_k=16, num_warps=4, stages=3)),
    ("gemm_swap", 128, 4, torch.bfloat16, dict(block_m=128, block_n=128, block_k=128, split_k=8, num_warps=8, stages=3)),
    ("gemv_words", 1, 4, torch.float16, None), ("gemv_words", 4, 4, torch.bfloat16, None)])
def test_splitk_finish_repeated(family, m, bits, dtype, cfg):
    """Every one of 20 calls through the split-K workspace is right. Before the barrier in
    ``finish_tile`` the last program could zero a sum (one thread layout) before reading it
    (another): 8-13 of 20 gemm_pairs calls were wrong in these cases on an H100."""
    n, k = 2048, 4096
    codes, s, z, dw = weight(n, k, bits, 128, dtype, sym=bits == 8)
    cfg = cfg or dispatch.config(family, m, dw, torch.device("cuda"))
    assert cfg["split_k"] > 1
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    wh = quant.dequantize(codes, s, z, bits, torch.float32)
    ref = x.float() @ wh.t()
    tol = 1e-3 if dtype == torch.float16 else 2 * rel(F.linear(x, wh.to(dtype)), ref)
    errs = [rel(dispatch.run_family(family, x, dw, None, **cfg), ref) for _ in range(20)]
    assert max(errs) <= tol, errs


@pytest.mark.parametrize("m", [1, 16, 100])
@pytest.mark.parametrize("bits,gs", [(4, 128), (4, 32), (3, 128), (8, 128), (4, None)])
def test_int8_exact_realistic(m, bits, gs):
    n, k = 2048, 4096
    codes, s, z, dw = weight(n, k, bits, gs, torch.float16, sym=bits == 8)
    x = torch.randn(m, k, device="cuda", dtype=torch.float16) * 3
    bias = torch.randn(n, device="cuda", dtype=torch.float16)
    ref = quant.int8_linear_reference(x, codes, s, z, bits, bias, x.dtype)
    fam = dispatch.choose(m, dw, "int8", x.device, x.dtype)
    assert torch.equal(dispatch.run_family(fam, x, dw, bias, **dispatch.config(fam, m, dw, x.device)), ref)


@pytest.mark.parametrize("int8,dp4a", [(False, False), (True, False), (False, True)])
def test_compile_and_cuda_graphs(int8, dp4a):
    """fullgraph compile and reduce-overhead (CUDA graphs) across M, fresh inputs per replay:
    the split-K workspaces are zeroed inside the op, so replays stay correct. ``dp4a``: M = 1
    through the dp4a GEMV (threshold lowered to these small layers)."""
    from torch import nn

    import lowbit

    dev = torch.device("cuda")

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 2048), nn.GELU(), nn.Linear(2048, 1024)).to("cuda", torch.float16).eval()
    cfg = (lowbit.Int8DynamicActivationConfig(bits=4, group_size=128) if int8
           else lowbit.WeightOnlyConfig(bits=4, group_size=128))
    lowbit.quantize_(model, cfg)
    assert model[0].weight.kernel_format == "triton"
    torch._dynamo.reset()
    saved = dict(dispatch._thresholds)  # after quantize_: the shipped tuning data is installed by now
    if dp4a:  # every entry of this device, including per-width ones from the tuning data
        name = torch.cuda.get_device_name()
        dispatch.set_thresholds(name, dp4a_min_nk=0)
        for key, t in list(dispatch._thresholds.items()):
            if key[0] == name:
                dispatch._thresholds[key] = dataclasses.replace(t, dp4a_min_nk=0)
    try:
        with torch.no_grad():
            cm = torch.compile(model, fullgraph=True)
            for m in (1, 4, 33):
                x = torch.randn(m, 1024, device="cuda", dtype=torch.float16)
                assert rel(cm(x), model(x)) <= 1e-3
            torch._dynamo.reset()
            cg = torch.compile(model, mode="reduce-overhead", fullgraph=True)
            for _ in range(3):
                for m in (1, 4, 33):
                    x = torch.randn(m, 1024, device="cuda", dtype=torch.float16)
                    y = cg(x).clone()
                    r = model(x)
                    if int8:
                        assert torch.equal(y, r)
                    else:
                        assert rel(y, r) <= 1e-3
        dw = weight(2048, 1024, 4, 128, torch.float16)[3]  # the first layer's problem
        assert (dispatch.choose(1, dw, "int8" if int8 else "none", dev) == "gemv_dp4a") == dp4a
    finally:
        torch._dynamo.reset()
        dispatch._thresholds.clear()
        dispatch._thresholds.update(saved)
