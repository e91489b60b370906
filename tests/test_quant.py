"""Quantization math: min-max (sym/asym), HQQ, dequantize, int8 per-token activations."""
import pytest
import torch

from lowbit.quant import (
    dequantize,
    int8_linear_reference,
    quantize_per_token_int8,
    quantize_weight,
    reconstruction_error,
)

GROUPS = [32, 64, 128, 256, None]


# symmetric 1-bit has no zero level and is rejected by the configs (test_api.py)
WIDTHS = [(b, s) for b in range(1, 9) for s in (False, True) if not (s and b == 1)]


@pytest.mark.parametrize("group_size", GROUPS)
@pytest.mark.parametrize("bits,symmetric", WIDTHS)
def test_minmax_properties(bits, group_size, symmetric):
    w = torch.randn(24, 512)
    codes, scales, zeros = quantize_weight(w, bits, group_size, symmetric)
    g = 512 // (group_size or 512)
    assert codes.dtype == torch.uint8 and int(codes.max()) < (1 << bits)
    assert scales.shape == (24, g) and (zeros is None) == symmetric
    if zeros is not None:  # min-max zeros are integers in range
        assert torch.equal(zeros, zeros.round()) and zeros.min() >= 0 and zeros.max() <= (1 << bits) - 1
    w_hat = dequantize(codes, scales, zeros, bits)
    # every element is within half a step of its group's grid, except where clamped at the range ends
    step = scales.float().repeat_interleave(512 // g, dim=1)
    assert ((w - w_hat).abs() <= step * 0.5 + 1e-6).float().mean() > 0.99
    # error falls as bits grow: a coarse sanity bound, tight enough to catch a broken grid
    assert reconstruction_error(w, w_hat) < 1.6 / (2**bits - 1) * 2.2


def test_error_decreases_with_bits_and_group_size():
    w = torch.randn(64, 1024)
    err = {b: reconstruction_error(w, dequantize(*quantize_weight(w, b, 64), b)) for b in range(1, 9)}
    assert all(err[b + 1] < err[b] for b in range(1, 8)), err
    e32 = reconstruction_error(w, dequantize(*quantize_weight(w, 4, 32), 4))
    e256 = reconstruction_error(w, dequantize(*quantize_weight(w, 4, 256), 4))
    assert e32 < e256


@pytest.mark.parametrize("bits,group_size,min_gain", [(2, 32, 0.05), (3, 32, 0.05), (4, 32, 0.05), (4, 128, 0.02), (8, 32, 0.05)])
def test_hqq_lowers_error(bits, group_size, min_gain):
    """HQQ vs min-max on Gaussian weights; docs/quantization.md tabulates these numbers."""
    w = torch.randn(256, 1024)
    e_mm = reconstruction_error(w, dequantize(*quantize_weight(w, bits, group_size), bits))
    e_hqq = reconstruction_error(w, dequantize(*quantize_weight(w, bits, group_size, method="hqq"), bits))
    assert e_hqq < e_mm * (1 - min_gain), (e_mm, e_hqq)


def test_hqq_never_worse_per_group():
    w = torch.distributions.StudentT(3.0).sample((64, 512))
    c0, s0, z0 = quantize_weight(w, 3, 64)
    c1, s1, z1 = quantize_weight(w, 3, 64, method="hqq")
    e0 = (dequantize(c0, s0, z0, 3) - w).pow(2).reshape(64, 8, 64).sum(-1)
    e1 = (dequantize(c1, s1, z1, 3) - w).pow(2).reshape(64, 8, 64).sum(-1)
    assert (e1 <= e0 * (1 + 1e-5) + 1e-7).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_scales_in_model_dtype_are_the_ones_used(dtype):
    w = torch.randn(16, 256).to(dtype)
    codes, scales, zeros = quantize_weight(w, 4, 64)
    assert scales.dtype == dtype and zeros.dtype == dtype
    # re-quantizing with the stored scale gives the same codes: codes were chosen with it
    s = scales.float().repeat_interleave(64, 1)
    z = zeros.float().repeat_interleave(64, 1)
    assert torch.equal(torch.clamp(torch.round(w.float() / s + z), 0, 15).to(torch.uint8), codes)


def test_constant_and_zero_groups():
    w = torch.zeros(4, 64)
    w[1] = 3.0
    w[2, :32] = -1.0
    codes, scales, zeros = quantize_weight(w, 4, 32)
    assert torch.allclose(dequantize(codes, scales, zeros, 4), w, atol=1e-6)


def test_nan_weight_rejected():
    w = torch.randn(4, 64)
    w[2, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_weight(w, 4, 32)


def test_group_size_must_divide():
    with pytest.raises(ValueError, match="does not divide"):
        quantize_weight(torch.randn(4, 96), 4, 64)


def test_per_token_int8():
    x = torch.randn(5, 300) * torch.tensor([1, 10, 0.01, 100, 1]).unsqueeze(1)
    x[4] = 0
    xq, sx = quantize_per_token_int8(x)
    assert xq.dtype == torch.int8 and sx.shape == (5,)
    assert xq.abs().amax(1)[:4].eq(127).all() and sx[4] == 1 and xq[4].eq(0).all()
    assert ((xq.float() * sx[:, None] - x).abs() <= sx[:, None] * 0.5 + 1e-7).all()


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("group_size", [32, None])
def test_int8_reference_matches_integer_math(symmetric, group_size):
    """The reference's float64 group sums equal exact int64 arithmetic."""
    torch.manual_seed(1)
    x, w, bias = torch.randn(7, 128), torch.randn(33, 128), torch.randn(33)
    codes, scales, zeros = quantize_weight(w, 4, group_size, symmetric)
    y = int8_linear_reference(x, codes, scales, zeros, 4, bias)
    xq, sx = quantize_per_token_int8(x)
    g = scales.shape[1]
    z = (torch.full_like(scales, 8.0) if zeros is None else zeros).long()
    acc = torch.einsum("mgk,ngk->mng", xq.long().reshape(7, g, -1), codes.long().reshape(33, g, -1))
    acc = acc - xq.long().reshape(7, g, -1).sum(-1)[:, None, :] * z[None]
    want = torch.zeros(7, 33)
    for j in range(g):
        want = want + scales[:, j] * acc[:, :, j].float()
    want = want * sx[:, None] + bias
    assert torch.equal(y, want)
    # and it approximates the float product
    ref = x @ dequantize(codes, scales, zeros, 4).T + bias
    assert (y - ref).norm() / ref.norm() < 0.02
