"""LowBitTensor: the aten ops users, state_dict, .to(), DTensor and compile rely on."""
import pytest
import torch
import torch.nn.functional as F

import lowbit
from lowbit import LowBitTensor
from lowbit.packing import pack
from lowbit.quant import dequantize, quantize_weight

from helpers import devices, rel_err


def make(n=48, k=256, bits=4, gs=64, sym=False, act="none", dtype=torch.float32, method="minmax"):
    w = torch.randn(n, k, dtype=dtype)
    return w, LowBitTensor.from_float(w, bits, gs, sym, method, act)


def test_outside_looks_like_the_float_weight():
    w, q = make(dtype=torch.bfloat16)
    assert q.shape == (48, 256) and q.dtype == torch.bfloat16 and q.device == w.device
    assert isinstance(q, torch.Tensor) and not q.requires_grad
    assert q.qdata.shape == (48, 128) and q.scales.shape == (48, 4) and q.zeros.shape == (48, 4)
    assert q.meta == lowbit.QuantMeta(bits=4, group_size=64, symmetric=False)
    r = repr(q)
    assert "LowBitTensor(shape=[48, 256]" in r and "bits=4" in r and "group_size=64" in r


def test_dequantize_matches_reference_math():
    w, q = make(bits=3, gs=32)
    codes, scales, zeros = quantize_weight(w, 3, 32)
    assert torch.equal(q.qdata, pack(codes, 3))
    assert torch.equal(q.dequantize(), dequantize(codes, scales, zeros, 3))
    assert torch.equal(q.t().dequantize(), q.dequantize().t())


@pytest.mark.parametrize("shape", [(5, 256), (2, 3, 256), (1, 256), (256,)])
def test_linear_all_entry_points(shape):
    w, q = make()
    x, b = torch.randn(shape), torch.randn(48)
    want = F.linear(x, q.dequantize(), b)
    for y in (F.linear(x, q, b), torch.ops.aten.linear(x, q, b), torch.nn.functional.linear(x, q, bias=b)):
        assert y.shape == want.shape and rel_err(y, want) < 1e-6
    x2 = x.reshape(-1, 256)
    assert rel_err(torch.mm(x2, q.t()), x2 @ q.dequantize().t()) < 1e-6
    assert rel_err(torch.addmm(b, x2, q.t()), F.linear(x2, q.dequantize(), b)) < 1e-6
    assert rel_err(x2 @ q.t(), x2 @ q.dequantize().t()) < 1e-6


def test_int8_act_linear_uses_integer_semantics():
    w, q = make(act="int8", sym=True, gs=32)
    x = torch.randn(7, 256)
    y = F.linear(x, q)
    want = lowbit.quant.int8_linear_reference(x, q.codes(), q.scales, None, 4)
    assert torch.equal(y, want)


def test_empty_batch_and_noncontiguous_input():
    _, q = make()
    assert F.linear(torch.randn(0, 256), q).shape == (0, 48)
    assert F.linear(torch.randn(2, 0, 256), q).shape == (2, 0, 48)
    xt = torch.randn(256, 6).t()  # non-contiguous
    assert not xt.is_contiguous()
    assert rel_err(F.linear(xt, q), F.linear(xt.contiguous(), q.dequantize())) < 1e-6


def test_detach_alias_clone():
    _, q = make()
    d = q.detach()
    assert isinstance(d, LowBitTensor) and d.qdata is q.qdata
    a = torch.ops.aten.alias(q)
    assert isinstance(a, LowBitTensor) and a.qdata is q.qdata
    c = q.clone()
    assert torch.equal(c.qdata, q.qdata) and c.qdata.data_ptr() != q.qdata.data_ptr()
    c.qdata.zero_()
    assert not torch.equal(c.qdata, q.qdata)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_to_dtype(dtype):
    _, q = make()
    h = q.to(dtype)
    assert isinstance(h, LowBitTensor) and h.dtype == dtype and h.scales.dtype == dtype
    assert torch.equal(h.qdata, q.qdata)
    assert rel_err(h.dequantize(), q.dequantize()) < 1e-2
    with pytest.raises(TypeError, match="float dtype"):
        q.to(torch.int32)


@pytest.mark.parametrize("device", devices())
def test_to_device_keeps_canonical_format(device):
    _, q = make(bits=5)
    d = q.to(device)
    assert d.device.type == device and torch.equal(d.qdata.cpu(), q.qdata)
    back = d.to("cpu")
    assert torch.equal(back.qdata, q.qdata) and torch.equal(back.scales, q.scales)
    x = torch.randn(3, 256)
    assert rel_err(F.linear(x.to(device), d).cpu(), F.linear(x, q)) < 1e-5


def test_slice_rows_anywhere_and_cols_on_groups():
    w, q = make(n=50, k=256, bits=3, gs=64)
    codes, *_ = quantize_weight(w, 3, 64)
    r = q[7:30]
    assert r.shape == (23, 256) and torch.equal(r.qdata, pack(codes[7:30], 3))
    c = q[:, 64:192]
    assert c.shape == (50, 128) and torch.equal(c.qdata, pack(codes[:, 64:192], 3))
    assert torch.equal(c.dequantize(), q.dequantize()[:, 64:192])
    assert torch.equal(q.narrow(1, 128, 128).dequantize(), q.dequantize()[:, 128:])
    with pytest.raises(ValueError, match="group boundaries"):
        q[:, 10:64]
    with pytest.raises(NotImplementedError, match="step"):
        q[::2]


def test_per_channel_cannot_split_k():
    _, q = make(gs=None)
    assert q[:, :].shape == q.shape
    with pytest.raises(ValueError, match="per-channel"):
        q[:, :128]


def test_split_chunk_view():
    _, q = make(n=48)
    parts = torch.split(q, 20)
    assert [p.shape[0] for p in parts] == [20, 20, 8]
    assert torch.equal(torch.cat([p.dequantize() for p in parts]), q.dequantize())
    cols = torch.chunk(q, 4, dim=1)
    assert torch.equal(torch.cat([c.dequantize() for c in cols], 1), q.dequantize())
    assert torch.equal(q.view(48, 256).qdata, q.qdata) and q.view(-1, 256).shape == q.shape
    with pytest.raises(NotImplementedError, match="own shape"):
        q.view(96, 128)


def test_narrow_copy_loads_shards_in_place():
    """vLLM-style loading: param.narrow(dim, start, len).copy_(shard)."""
    w, full = make(n=64, k=256, gs=64)
    target = LowBitTensor.from_float(torch.randn(64, 256), 4, 64)
    for start in (0, 32):
        target.narrow(0, start, 32).copy_(full[start : start + 32])
    assert torch.equal(target.qdata, full.qdata) and torch.equal(target.scales, full.scales)
    target2 = LowBitTensor.from_float(torch.randn(64, 256), 4, 64)
    for start in (0, 128):
        target2.narrow(1, start, 128).copy_(full.narrow(1, start, 128))
    assert torch.equal(target2.dequantize(), full.dequantize())


def test_copy_errors():
    _, q = make()
    _, other = make(bits=3)
    with pytest.raises(ValueError, match="same shape, dtype and quantization metadata"):
        q.copy_(other)
    with pytest.raises(TypeError, match="quantize it first"):
        q.copy_(torch.randn(48, 256))
    with pytest.raises(TypeError, match="plain tensor"):
        torch.randn(48, 256).copy_(q)


def test_flatten_unflatten_round_trip():
    _, q = make(sym=True)
    names, ctx = q.__tensor_flatten__()
    assert names[:2] == ["qdata", "scales"] and "zeros" not in names  # + kernel_data if a backend made one
    r = LowBitTensor.__tensor_unflatten__({n: getattr(q, n) for n in names}, ctx, q.shape, q.stride())
    assert isinstance(r, LowBitTensor) and r.meta == q.meta and r.dtype == q.dtype
    assert torch.equal(r.dequantize(), q.dequantize())


def test_unsupported_ops_name_the_op():
    _, q = make()
    with pytest.raises(NotImplementedError, match="aten.add"):
        q + 1
    with pytest.raises(NotImplementedError, match="aten.sum"):
        q.sum()


def test_embedding():
    w = torch.randn(100, 64)
    q = LowBitTensor.from_float(w, 4, 32)
    idx = torch.tensor([[3, 99, 0], [5, 5, 7]])
    out = F.embedding(idx, q)
    assert out.shape == (2, 3, 64) and torch.equal(out, q.dequantize()[idx])
    assert torch.equal(torch.ops.aten.embedding(q, idx), out)
    assert F.embedding(torch.zeros(0, dtype=torch.long), q).shape == (0, 64)
    with pytest.raises(TypeError, match="int32/int64"):
        F.embedding(idx.float(), q)
