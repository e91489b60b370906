"""The built-in decoder: KV-cache decoding equals the full forward; the e2e bench runs."""
import pytest
import torch

import lowbit
from lowbit.bench.e2e import run_config
from lowbit.models import build_model

from helpers import rel_err


def test_cached_decode_equals_full_forward():
    m = build_model("tiny", seed=3)
    lowbit.quantize_(m, lowbit.WeightOnlyConfig(bits=4, group_size=64))
    tok = torch.randint(0, m.config.vocab, (2, 11))
    with torch.no_grad():
        full = m(tok)
        m.setup_cache(2, 16)
        outs = [m(tok[:, :7], torch.arange(7))]
        for i in range(7, 11):
            outs.append(m(tok[:, i : i + 1], torch.tensor([i])))
    assert rel_err(torch.cat(outs, 1), full) < 1e-5


@pytest.mark.parametrize("config", [None, lowbit.WeightOnlyConfig(bits=4, group_size=64)], ids=["float", "w4"])
def test_fused_projections_equal_unfused(config):
    a, b = build_model("tiny", seed=5), build_model("tiny", seed=5, fused=True)
    assert b.fused and not a.fused and hasattr(b.layers[0].attn, "wqkv") and not hasattr(b.layers[0].attn, "wq")
    assert tuple(b.layers[0].mlp.w13.weight.shape) == (2 * a.config.hidden, a.config.dim)
    if config is not None:  # per-row quantization: the fused weight's rows quantize as the parts' rows
        lowbit.quantize_(a, config)
        lowbit.quantize_(b, config)
    tok = torch.randint(0, a.config.vocab, (2, 7))
    with torch.no_grad():
        assert rel_err(b(tok), a(tok)) < 1e-6
        a.setup_cache(2, 8)
        b.setup_cache(2, 8)
        assert rel_err(b(tok[:, :3], torch.arange(3)), a(tok[:, :3], torch.arange(3))) < 1e-6


def test_fuse_refuses_quantized_and_tp():
    m = build_model("tiny", seed=0)
    lowbit.quantize_(m, lowbit.WeightOnlyConfig(bits=4, group_size=64))
    with pytest.raises(TypeError, match="before quantizing"):
        m.fuse_projections()
    from lowbit.tp import tp_plan

    with pytest.raises(ValueError, match="unfused"):
        tp_plan(build_model("tiny", fused=True))


def test_build_model_is_deterministic_and_scaled():
    a, b = build_model("tiny", seed=1), build_model("tiny", seed=1)
    assert torch.equal(a.layers[0].mlp.w1.weight, b.layers[0].mlp.w1.weight)
    w = a.layers[0].mlp.w2.weight.detach()
    assert abs(float(w.std()) * w.shape[1] ** 0.5 - 1) < 0.1


def test_e2e_bench_smoke():
    r = run_config("tiny", "w4g128", batch=2, device="cpu", dtype=torch.float32, prompt=4, tokens=2, compile=False)
    assert r.tokens_per_s > 0 and r.weight_gib > 0 and r.batch == 2
    assert 0 < r.host_ms_per_step <= r.ms_per_step * 1.01  # no device: the host is the whole step
    # the CPU backend's tile layouts stay resident beside the canonical weights
    assert r.resident_gib > r.weight_gib


def test_e2e_profile_lists_the_step_ops():
    r = run_config("tiny", "w4g128", batch=1, device="cpu", dtype=torch.float32, prompt=4, tokens=2, compile=False,
                   profile=2)
    calls = {name: n for name, _, n in r.profile}
    assert calls.get("aten::scaled_dot_product_attention") == 2, list(calls)[:10]  # one per layer and step
    assert all(us > 0 and calls > 0 for _, us, calls in r.profile)
    assert [row[1] for row in r.profile] == sorted((row[1] for row in r.profile), reverse=True)


def test_e2e_main_writes_json_after_every_row(tmp_path):
    import argparse
    import json

    from lowbit.bench.e2e import main

    out = tmp_path / "e2e.json"
    args = argparse.Namespace(preset="tiny", device="cpu", dtype="float32", batch=[1], configs=["bf16", "w4g128"],
                              prompt=4, tokens=2, no_compile=True, json=str(out))
    assert main(args) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["config"] for r in rows] == ["bf16", "w4g128"] and all(r["tokens_per_s"] > 0 for r in rows)
