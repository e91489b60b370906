"""torch.compile: fullgraph, matches eager, no recompiles across batch sizes."""
import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

import lowbit
from lowbit.models import build_model

from helpers import devices, rel_err, requires_cuda

CONFIGS = [
    lowbit.WeightOnlyConfig(bits=4, group_size=32),
    lowbit.WeightOnlyConfig(bits=3, group_size=None, method="hqq"),
    lowbit.Int8DynamicActivationConfig(bits=4, group_size=32),
]


def mlp():
    return nn.Sequential(nn.Linear(128, 256), nn.SiLU(), nn.Linear(256, 128, bias=False)).eval()


@pytest.fixture(autouse=True)
def _reset():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_fullgraph_matches_eager(config, device):
    m = mlp()
    lowbit.quantize_(m, config)
    m = m.to(device)
    x = torch.randn(4, 128, device=device)
    with torch.no_grad():
        eager = m(x)
        compiled = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    assert torch.equal(compiled, eager)


def test_no_recompile_when_batch_size_changes():
    m = mlp()
    lowbit.quantize_(m, lowbit.WeightOnlyConfig(bits=4, group_size=64))
    cnt = CompileCounterWithBackend("aot_eager")
    cm = torch.compile(m, fullgraph=True, backend=cnt, dynamic=True)
    with torch.no_grad():
        for b in (2, 3, 5, 8, 17, 64):
            x = torch.randn(b, 128)
            assert torch.equal(cm(x), m(x))
    assert cnt.frame_count == 1


def test_no_recompile_including_batch_one_with_unbacked_batch():
    m = mlp()
    lowbit.quantize_(m, lowbit.Int8DynamicActivationConfig(bits=4, group_size=32))
    cnt = CompileCounterWithBackend("aot_eager")
    cm = torch.compile(m, fullgraph=True, backend=cnt)
    with torch.no_grad():
        for b in (1, 2, 7, 33):
            x = torch.randn(b, 128)
            torch._dynamo.decorators.mark_unbacked(x, 0)
            assert torch.equal(cm(x), m(x))
    assert cnt.frame_count == 1


def test_demo_model_inductor_fullgraph():
    model = build_model("tiny", seed=0)
    lowbit.quantize_(model, lowbit.WeightOnlyConfig(bits=4, group_size=64))
    lowbit.quantize_(model, lowbit.EmbeddingConfig(bits=4, group_size=32))
    tok = torch.randint(0, model.config.vocab, (2, 9))
    with torch.no_grad():
        eager = model(tok)
        compiled = torch.compile(model, fullgraph=True)(tok)
    assert rel_err(compiled, eager) < 1e-5


@requires_cuda
def test_demo_model_inductor_cuda():
    model = build_model("tiny", seed=0, dtype=torch.bfloat16, device="cuda")
    lowbit.quantize_(model, lowbit.WeightOnlyConfig(bits=4, group_size=64))
    tok = torch.randint(0, model.config.vocab, (3, 9), device="cuda")
    with torch.no_grad():
        eager = model(tok)
        compiled = torch.compile(model, fullgraph=True)(tok)
    assert rel_err(compiled, eager) < 1e-2
