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


def _quantized_tiny(device="cpu", dtype=torch.float32):
    model = build_model("tiny", seed=0, dtype=dtype, device=device)
    lowbit.quantize_(model, lowbit.WeightOnlyConfig(bits=4, group_size=64))
    lowbit.quantize_(model, lowbit.EmbeddingConfig(bits=4, group_size=32))
    return model


def test_unwrap_for_compile_roundtrip(tmp_path):
    model = _quantized_tiny()
    before = model.state_dict()
    tok = torch.randint(0, model.config.vocab, (2, 9))
    with torch.no_grad():
        eager = model(tok)
        assert lowbit.unwrap_for_compile(model) is model and lowbit.is_unwrapped(model)
        lowbit.unwrap_for_compile(model)  # a second call finds nothing left to unwrap
        assert not any(isinstance(p, lowbit.LowBitTensor) for p in model.parameters())
        assert isinstance(model.layers[0].mlp.w1.weight, lowbit.LowBitTensor)  # rebuilt on access
        assert isinstance(model.layers[0].mlp.w1, lowbit.unwrap.UnwrappedLinear)
        sd = model.state_dict()  # a plain Linear stores its parts; the embedding goes through parametrize
        assert "layers.0.mlp.w1.weight_qdata" in sd and "layers.0.mlp.w1.weight" not in sd
        assert any(".parametrizations.weight.original0" in k for k in sd)
        assert torch.equal(model(tok), eager)
        compiled = torch.compile(model, fullgraph=True)
        assert rel_err(compiled(tok), eager) < 1e-5
        assert rel_err(compiled(tok[:1]), eager[:1]) < 1e-5
    with pytest.raises(ValueError, match="rewrap"):
        lowbit.save_file(model, str(tmp_path / "m.safetensors"))
    lowbit.rewrap(model)
    assert not lowbit.is_unwrapped(model)
    after = model.state_dict()
    assert after.keys() == before.keys()
    w0, w1 = before["layers.0.mlp.w1.weight"], after["layers.0.mlp.w1.weight"]
    assert isinstance(w1, lowbit.LowBitTensor) and torch.equal(w0.qdata, w1.qdata) and torch.equal(w0.scales, w1.scales)
    lowbit.save_file(model, str(tmp_path / "m.safetensors"))


def test_unwrap_for_compile_bad_input():
    with pytest.raises(TypeError, match="nn.Module"):
        lowbit.unwrap_for_compile(torch.zeros(3))


def test_unwrapped_model_moved_is_a_clear_error():
    model = _quantized_tiny()
    lowbit.unwrap_for_compile(model)
    model.to("meta")
    with pytest.raises(RuntimeError, match="rewrap"):
        model.layers[0].mlp.w1.weight


@requires_cuda
def test_unwrapped_decode_cuda_graphs():
    model = _quantized_tiny("cuda", torch.bfloat16)
    model.setup_cache(2, 16)
    tok = torch.randint(0, model.config.vocab, (2, 1), device="cuda")
    with torch.no_grad():
        ref = [model(tok, torch.tensor([i], device="cuda")) for i in range(3)]
        lowbit.unwrap_for_compile(model)
        step = torch.compile(model, fullgraph=True, mode="reduce-overhead")
        for _ in range(2):  # warm-up and record, then replays
            outs = [step(tok, torch.tensor([i], device="cuda")).clone() for i in range(3)]
    assert all(rel_err(o, r) < 1e-2 for o, r in zip(outs, ref))


def test_unwrap_derives_the_shards_layout_first():
    """Shards get their device layout lazily, on the first eager call. Unwrapping before any
    call must still store one as a leaf: the rebuilt weight is traced and cannot cache one, so
    every compiled call repacked the weight (2x slower TP=2 decode on 2xH200)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from lowbit.backends import prepare_layout
    from lowbit.meta import QWeight
    from lowbit.tp import apply_tp

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = apply_tp(_quantized_tiny(), init_device_mesh("cpu", (1,)))
        shard = model.layers[0].attn.wq.weight.to_local()
        assert shard.kernel_data is None  # not derived yet: no call has run
        fmt, want = prepare_layout(QWeight(shard.qdata, shard.scales, shard.zeros, shard.meta.replace(transposed=False),
                                           shard.n, shard.k))
        lowbit.unwrap_for_compile(model)
        got = model.layers[0].attn.wq.weight.to_local()
        assert (got.kernel_data is None) == (want is None) and got.kernel_format == fmt
        if want is not None:
            assert torch.equal(got.kernel_data, want)
    finally:
        dist.destroy_process_group()


def test_unwrap_tensor_parallel_shards():
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    from lowbit.tp import apply_tp

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = apply_tp(_quantized_tiny(), init_device_mesh("cpu", (1,)))
        tok = torch.randint(0, model.config.vocab, (2, 5))
        with torch.no_grad():
            eager = model(tok)
            lowbit.unwrap_for_compile(model)
            w = model.layers[0].attn.wq.weight  # rebuilt with DTensor.from_local (dynamo traces that)
            assert isinstance(w, DTensor) and isinstance(w.to_local(), lowbit.LowBitTensor)
            assert torch.equal(model(tok), eager)
            assert rel_err(torch.compile(model, fullgraph=True)(tok), eager) < 1e-5
        lowbit.rewrap(model)
        w = model.layers[0].attn.wq.weight
        assert isinstance(w, DTensor) and isinstance(w.to_local(), lowbit.LowBitTensor) and not lowbit.is_unwrapped(model)
    finally:
        dist.destroy_process_group()
