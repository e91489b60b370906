"""One test per class of bad input: each is a clear error naming the argument, or the right answer."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit
from lowbit import LowBitTensor, WeightOnlyConfig

from helpers import HAS_CUDA


def qlinear(**kw):
    m = nn.Linear(64, 32)
    lowbit.quantize_(m, WeightOnlyConfig(group_size=32, **kw))
    return m


@pytest.mark.parametrize("bits", [0, 9, 16, -3])
def test_bits_outside_1_to_8(bits):
    with pytest.raises(ValueError, match=f"bits must be in 1..8, got {bits}"):
        WeightOnlyConfig(bits=bits)
    with pytest.raises(ValueError, match="bits must be in 1..8"):
        lowbit.pack(torch.zeros(1, 8, dtype=torch.uint8), bits)


def test_group_size_not_dividing_k():
    r = lowbit.quantize_(nn.Linear(96, 8), WeightOnlyConfig(group_size=64))
    assert r.skipped[0].reason == "group_size 64 does not divide K=96"
    with pytest.raises(ValueError, match="does not divide K=96"):
        lowbit.quantize_(nn.Linear(96, 8), WeightOnlyConfig(group_size=64), strict=True)
    with pytest.raises(ValueError, match="does not divide K=96"):
        LowBitTensor.from_float(torch.randn(8, 96), 4, 64)


def test_non_float_weights():
    with pytest.raises(TypeError, match="float tensor"):
        LowBitTensor.from_float(torch.randint(0, 5, (8, 64)), 4, 32)
    m = nn.Embedding(10, 64)
    m.weight = nn.Parameter(torch.zeros(10, 64, dtype=torch.int32), requires_grad=False)
    r = lowbit.quantize_(m, lowbit.EmbeddingConfig())
    assert r.skipped[0].reason == "weight dtype torch.int32 is not floating point"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_inf_weights_name_the_layer(bad):
    m = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Sequential(nn.Linear(64, 32)))
    with torch.no_grad():
        m[2][0].weight[0, 0] = bad
    with pytest.raises(ValueError, match=r"layer '2\.0'.*NaN or Inf"):
        lowbit.quantize_(m, WeightOnlyConfig(group_size=32))


def test_wrong_activation_dtype():
    m = qlinear()
    with pytest.raises(TypeError, match="input dtype torch.bfloat16 does not match the weight's dtype torch.float32"):
        m(torch.randn(2, 64, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="must be floating point, got torch.int64"):
        m(torch.ones(2, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="last dim must be K=64"):
        m(torch.randn(2, 65))


@pytest.mark.skipif(not HAS_CUDA, reason="needs a second device (CUDA) for a device mismatch")
def test_wrong_activation_device():
    m = qlinear()
    with pytest.raises(RuntimeError, match="input is on cuda:0 but the weight is on cpu"):
        m(torch.randn(2, 64, device="cuda"))


def test_wrong_activation_device_meta():
    # runs everywhere: a meta-device input against a CPU weight
    m = qlinear()
    with pytest.raises(RuntimeError, match="input is on meta but the weight is on cpu"):
        m(torch.randn(2, 64, device="meta"))


def test_empty_batch():
    m = qlinear()
    assert m(torch.randn(0, 64)).shape == (0, 32)
    m8 = nn.Linear(64, 32)
    lowbit.quantize_(m8, lowbit.Int8DynamicActivationConfig(group_size=32))
    assert m8(torch.randn(0, 64)).shape == (0, 32)


def test_non_contiguous_input():
    m = qlinear()
    x = torch.randn(64, 6).t()
    assert torch.allclose(m(x), F.linear(x.contiguous(), m.weight.dequantize(), m.bias), atol=1e-5)
    x3 = torch.randn(4, 64, 3).transpose(1, 2)
    assert torch.allclose(m(x3), F.linear(x3.contiguous(), m.weight.dequantize(), m.bias), atol=1e-5)


def test_unknown_config_field():
    with pytest.raises(TypeError, match="bitz"):
        WeightOnlyConfig(bitz=4)
    with pytest.raises(TypeError, match=r"unknown field\(s\) \['groupsize'\]"):
        WeightOnlyConfig.from_dict({"bits": 4, "groupsize": 32})


def test_mismatched_checkpoint_metadata(tmp_path):
    src = qlinear()
    torch.save(src.state_dict(), tmp_path / "a.pt")
    dst = qlinear(bits=3)
    with pytest.raises(RuntimeError, match=r"same shape, dtype and quantization metadata.*bits=3.*bits=4"):
        dst.load_state_dict(torch.load(tmp_path / "a.pt", weights_only=True))
    with pytest.raises(ValueError, match="unknown QuantMeta field"):
        lowbit.QuantMeta.from_dict({"bits": 4, "group_size": 32, "symmetric": False, "extra": 1})
