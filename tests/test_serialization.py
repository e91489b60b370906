"""state_dict, torch.save/load(weights_only=True), safetensors; CPU checkpoints on CUDA."""
import json
import struct

import pytest
import torch
from torch import nn

import lowbit
from lowbit import LowBitTensor
from lowbit.models import build_model

from helpers import HAS_CUDA, rel_err, requires_cuda

CFG = lowbit.WeightOnlyConfig(bits=4, group_size=32)
ICFG = lowbit.Int8DynamicActivationConfig(bits=3, group_size=64, symmetric=False)


def quantized_model(seed=0, cfg=CFG):
    m = build_model("tiny", seed=seed)
    lowbit.quantize_(m, cfg)
    lowbit.quantize_(m, lowbit.EmbeddingConfig(bits=4, group_size=32))
    return m


def tokens(m):
    return torch.randint(0, m.config.vocab, (2, 7), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("cfg", [CFG, ICFG], ids=lambda c: c.name)
def test_state_dict_round_trip_torch_save_weights_only(tmp_path, cfg):
    src = quantized_model(0, cfg)
    torch.save(src.state_dict(), tmp_path / "q.pt")
    sd = torch.load(tmp_path / "q.pt", weights_only=True)
    w = sd["layers.0.mlp.w1.weight"]
    assert isinstance(w, LowBitTensor) and w.meta == src.layers[0].mlp.w1.weight.meta
    # into a fresh model quantized the same way (copy_ path)
    dst = quantized_model(1, cfg)
    dst.load_state_dict(sd)
    tok = tokens(src)
    with torch.no_grad():
        assert torch.equal(dst(tok), src(tok))


def test_meta_device_assign_load(tmp_path):
    src = quantized_model()
    torch.save(src.state_dict(), tmp_path / "q.pt")
    with torch.device("meta"):
        from lowbit.models import PRESETS, TinyLlama

        dst = TinyLlama(PRESETS["tiny"])
    sd = torch.load(tmp_path / "q.pt", weights_only=True)
    dst.load_state_dict(sd, assign=True)
    dst.inv_freq = src.inv_freq  # non-persistent buffer: rebuilt by the model, not the checkpoint
    assert isinstance(dst.layers[1].attn.wq.weight, LowBitTensor)
    tok = tokens(src)
    with torch.no_grad():
        assert torch.equal(dst(tok), src(tok))


def test_safetensors_round_trip(tmp_path):
    src = quantized_model()
    path = str(tmp_path / "q.safetensors")
    lowbit.save_file(src, path)
    with open(path, "rb") as f:  # no pickle: plain safetensors header + our JSON
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    meta = json.loads(header["__metadata__"]["lowbit"])
    assert meta["tensors"]["layers.0.mlp.w1.weight"]["meta"]["bits"] == 4
    assert "layers.0.mlp.w1.weight::qdata" in header
    sd = lowbit.load_file(path)
    assert torch.equal(sd["layers.0.mlp.w1.weight"].qdata, src.layers[0].mlp.w1.weight.qdata)
    with torch.device("meta"):
        from lowbit.models import PRESETS, TinyLlama

        dst = TinyLlama(PRESETS["tiny"])
    lowbit.load_file(path, model=dst)
    dst.inv_freq = src.inv_freq
    tok = tokens(src)
    with torch.no_grad():
        assert torch.equal(dst(tok), src(tok))


def test_safetensors_tied_weights(tmp_path):
    m = nn.ModuleDict({"a": nn.Linear(64, 32), "b": nn.Linear(64, 32)})
    m.b.weight = m.a.weight
    lowbit.quantize_(m, CFG)
    lowbit.save_file(m, str(tmp_path / "t.safetensors"))
    sd = lowbit.load_file(str(tmp_path / "t.safetensors"))
    assert sd["a.weight"] is sd["b.weight"]


def test_mismatched_metadata_is_a_clear_error(tmp_path):
    src = quantized_model()
    sd = src.state_dict()
    other = build_model("tiny", seed=0)
    lowbit.quantize_(other, lowbit.WeightOnlyConfig(bits=3, group_size=32))
    lowbit.quantize_(other, lowbit.EmbeddingConfig(bits=4, group_size=32))
    with pytest.raises(RuntimeError, match="same shape, dtype and quantization metadata"):
        other.load_state_dict(sd)
    with pytest.raises(RuntimeError, match="cannot copy a LowBitTensor into a plain tensor"):
        build_model("tiny").load_state_dict(sd)


def test_corrupt_safetensors_metadata(tmp_path):
    from safetensors.torch import save_file as st_save

    path = str(tmp_path / "bad.safetensors")
    q = LowBitTensor.from_float(torch.randn(16, 64), 4, 32)
    st_save({"w::qdata": q.qdata, "w::scales": q.scales, "w::zeros": q.zeros}, path, metadata={"lowbit": "{not json"})
    with pytest.raises(ValueError, match="corrupt lowbit metadata"):
        lowbit.load_file(path)
    good = {"format": "lowbit", "version": 1, "aliases": {},
            "tensors": {"w": {"meta": {"bits": 3, "group_size": 32, "symmetric": False, "act": "none", "transposed": False},
                              "dtype": "float32", "shape": [16, 64]}}}
    st_save({"w::qdata": q.qdata, "w::scales": q.scales, "w::zeros": q.zeros}, path, metadata={"lowbit": json.dumps(good)})
    with pytest.raises(ValueError, match="qdata must be uint8 \\(16, 24\\)"):
        lowbit.load_file(path)
    st_save({"w::qdata": q.qdata}, path, metadata={"lowbit": json.dumps(good)})
    with pytest.raises(ValueError, match="corrupt or incomplete"):
        lowbit.load_file(path)


@requires_cuda
def test_cpu_checkpoint_runs_on_cuda(tmp_path):
    src = quantized_model()
    torch.save(src.state_dict(), tmp_path / "q.pt")
    lowbit.save_file(src, str(tmp_path / "q.safetensors"))
    tok = tokens(src)
    with torch.no_grad():
        want = src(tok)
        for sd in (
            torch.load(tmp_path / "q.pt", weights_only=True, map_location="cuda"),
            lowbit.load_file(str(tmp_path / "q.safetensors"), device="cuda"),
        ):
            with torch.device("meta"):
                from lowbit.models import PRESETS, TinyLlama

                dst = TinyLlama(PRESETS["tiny"])
            dst.load_state_dict(sd, assign=True)
            dst.inv_freq = src.inv_freq.cuda()
            w = dst.layers[0].mlp.w1.weight
            assert w.device.type == "cuda" and torch.equal(w.qdata.cpu(), src.layers[0].mlp.w1.weight.qdata)
            assert rel_err(dst(tok.cuda()).cpu(), want) < 1e-4
