"""quantize_, configs, the report, filters, strict mode, tied weights."""
import pytest
import torch
from torch import nn

import lowbit
from lowbit import EmbeddingConfig, Int8DynamicActivationConfig, LowBitTensor, WeightOnlyConfig

from helpers import rel_err


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(64, 128)
        self.fc1 = nn.Linear(128, 256)
        self.fc2 = nn.Linear(256, 128, bias=False)
        self.odd = nn.Linear(100, 24)  # K=100: not a multiple of 8 (nor of any group size)
        self.head = nn.Linear(128, 64, bias=False)

    def forward(self, tok):
        h = self.emb(tok)
        h = self.fc2(torch.relu(self.fc1(h)))
        return self.head(h)


def test_weight_only_quantizes_linears_and_reports_skips():
    torch.manual_seed(0)
    m = Net()
    tok = torch.randint(0, 64, (2, 5))
    ref = m(tok)
    report = lowbit.quantize_(m, WeightOnlyConfig(bits=8, group_size=32))
    assert [r.name for r in report.quantized] == ["fc1", "fc2", "head"]
    assert [(r.name, r.reason) for r in report.skipped] == [("odd", "K=100 is not a multiple of 8 (needed to pack)")]
    assert isinstance(m.fc1.weight, LowBitTensor) and isinstance(m.fc1.weight, nn.Parameter)
    assert not isinstance(m.odd.weight, LowBitTensor) and not isinstance(m.emb.weight, LowBitTensor)
    assert report.bytes_after < report.bytes_before
    text = str(report)
    assert "SKIPPED" in text and "odd" in text and "3 quantized, 1 skipped" in text
    assert rel_err(m(tok), ref) < 0.02


@pytest.mark.parametrize(
    "config",
    [
        WeightOnlyConfig(bits=4, group_size=64),
        WeightOnlyConfig(bits=3, group_size=None, method="hqq"),
        WeightOnlyConfig(bits=2, group_size=32, symmetric=True),
        Int8DynamicActivationConfig(bits=4, group_size=32),
        Int8DynamicActivationConfig(bits=6, group_size=128, symmetric=False),
    ],
    ids=lambda c: c.name,
)
def test_configs_end_to_end(config):
    m = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 64))
    x = torch.randn(3, 128)
    ref = m(x)
    lowbit.quantize_(m, config)
    w = m[0].weight
    assert w.meta.bits == config.bits and w.meta.act == config.act and w.meta.symmetric == config.symmetric
    # the quantized model computes the model with dequantized weights (int8: up to activation rounding)
    deq = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 64))
    deq.load_state_dict({"0.weight": m[0].weight.dequantize(), "0.bias": m[0].bias,
                         "2.weight": m[2].weight.dequantize(), "2.bias": m[2].bias})
    assert rel_err(m(x), deq(x)) < (2e-2 if config.act == "int8" else 1e-5)
    assert rel_err(m(x), ref) < {2: 1.0, 3: 0.4, 4: 0.2, 6: 0.05}[config.bits]


def test_embedding_config_and_default_filter():
    m = Net()
    tok = torch.randint(0, 64, (3, 4))
    ref = m.emb(tok)
    report = lowbit.quantize_(m, EmbeddingConfig(bits=4, group_size=32))
    assert [r.name for r in report.layers] == ["emb"]
    assert isinstance(m.emb.weight, LowBitTensor)
    assert rel_err(m.emb(tok), ref) < 0.15


def test_filter_fn_one_or_two_args():
    m = Net()
    r = lowbit.quantize_(m, WeightOnlyConfig(group_size=32), filter_fn=lambda mod, fqn: fqn == "fc1")
    assert [x.name for x in r.layers] == ["fc1"]
    r = lowbit.quantize_(m, WeightOnlyConfig(bits=8, group_size=32), filter_fn=lambda mod: isinstance(mod, nn.Linear))
    assert [x.name for x in r.quantized] == ["fc2", "head"]
    assert {x.name: x.reason for x in r.skipped} == {
        "fc1": "already quantized",
        "odd": "K=100 is not a multiple of 8 (needed to pack)",
    }
    # a filter that selects a non-linear layer gets a reason, not silence
    r = lowbit.quantize_(Net(), WeightOnlyConfig(), filter_fn=lambda mod, fqn: fqn == "emb")
    assert r.skipped[0].reason == "WeightOnlyConfig applies to nn.Linear, not Embedding"


def test_group_size_not_dividing_k_is_reported_and_strict_raises():
    m = nn.Sequential(nn.Linear(96, 32), nn.Linear(32, 16))
    r = lowbit.quantize_(m, WeightOnlyConfig(group_size=64))
    assert [(x.name, x.reason) for x in r.skipped] == [
        ("0", "group_size 64 does not divide K=96"),
        ("1", "group_size 64 does not divide K=32"),
    ]
    with pytest.raises(ValueError, match=r"strict=True.*0: group_size 64 does not divide K=96"):
        lowbit.quantize_(nn.Sequential(nn.Linear(96, 32)), WeightOnlyConfig(group_size=64), strict=True)


def test_non_float_weight_is_reported():
    m = nn.Sequential(nn.Linear(64, 32))
    m[0].weight = nn.Parameter(torch.randint(0, 3, (32, 64)).to(torch.int8), requires_grad=False)
    r = lowbit.quantize_(m, WeightOnlyConfig(group_size=32))
    assert r.skipped[0].reason == "weight dtype torch.int8 is not floating point"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_inf_weight_names_the_layer(bad):
    m = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 32))
    with torch.no_grad():
        m[1].weight[3, 7] = bad
    with pytest.raises(ValueError, match=r"layer '1' \(Linear \[32, 64\]\): weight contains NaN or Inf"):
        lowbit.quantize_(m, WeightOnlyConfig(group_size=32))


def test_tied_weights_stay_tied():
    emb = nn.Embedding(64, 128)
    head = nn.Linear(128, 64, bias=False)
    head.weight = emb.weight
    m = nn.ModuleDict({"emb": emb, "head": head})
    r = lowbit.quantize_(m, WeightOnlyConfig(bits=4, group_size=32), filter_fn=lambda mod, fqn: fqn in ("head", "emb"))
    # emb is not a Linear for WeightOnlyConfig: reported; head quantized
    assert [x.name for x in r.quantized] == ["head"]
    m2 = nn.ModuleDict({"a": nn.Linear(128, 64), "b": nn.Linear(128, 64)})
    m2.b.weight = m2.a.weight
    r2 = lowbit.quantize_(m2, WeightOnlyConfig(group_size=32))
    assert m2.a.weight is m2.b.weight and r2.layers[1].reason == "tied to a"


@pytest.mark.parametrize(
    "kwargs,err",
    [
        (dict(bits=0), "bits must be in 1..8"),
        (dict(bits=9), "bits must be in 1..8"),
        (dict(bits=4.0), "bits must be an int"),
        (dict(group_size=0), "positive multiple of 8"),
        (dict(group_size=12), "positive multiple of 8"),
        (dict(method="gptq"), "method must be one of"),
        (dict(bits=1, symmetric=True), "symmetric quantization needs bits >= 2"),
        (dict(method="hqq", symmetric=True), "needs symmetric=False"),
    ],
)
def test_config_validation(kwargs, err):
    with pytest.raises((ValueError, TypeError), match=err):
        WeightOnlyConfig(**kwargs)


def test_config_unknown_field_and_frozen():
    with pytest.raises(TypeError, match="unexpected keyword argument 'bitz'"):
        WeightOnlyConfig(bitz=4)
    with pytest.raises(TypeError, match=r"unknown field\(s\) \['bitz'\]"):
        WeightOnlyConfig.from_dict({"bitz": 4})
    cfg = WeightOnlyConfig.from_dict({"bits": 3, "group_size": 64})
    assert cfg == WeightOnlyConfig(bits=3, group_size=64)
    with pytest.raises(Exception):
        cfg.bits = 5
    with pytest.raises(ValueError, match="integer zero points"):
        Int8DynamicActivationConfig(method="hqq", symmetric=False)


def test_quantize_rejects_non_config():
    with pytest.raises(TypeError, match="config must be one of"):
        lowbit.quantize_(nn.Linear(64, 64), {"bits": 4})


def test_embedding_tables_carry_no_linear_layout():
    m = Net()
    lowbit.quantize_(m, lowbit.EmbeddingConfig(bits=4, group_size=32))
    lowbit.quantize_(m, WeightOnlyConfig(bits=4, group_size=32))
    emb, fc = m.emb.weight, m.fc1.weight
    assert emb.meta.usage == "embedding" and emb.kernel_data is None and "usage=embedding" in repr(emb)
    assert fc.meta.usage == "linear"
    tok = torch.randint(0, 64, (2, 3))
    assert torch.equal(m.emb(tok), emb.dequantize()[tok])
    assert emb.to(torch.float32).kernel_data is None  # .to() re-derives layouts, but not for a table
