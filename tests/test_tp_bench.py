"""`lowbit bench tp` on the CPU: 2 gloo processes, the tiny preset in fp32. A plain and a
W4-quantized model, each saved once as a (quantized) checkpoint and loaded sharded by every
rank, must give the TP=1 logits; the JSON must carry tokens/s."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lowbit
from lowbit.bench import tp as tp_bench
from lowbit.models import TinyLlama, build_model
from lowbit.tp import STYLE_DIM, _check_split, tp_plan


def _run_bench(argv):
    p = argparse.ArgumentParser()
    tp_bench.add_parser(p.add_subparsers(dest="cmd"))
    args = p.parse_args(["tp", *argv])
    return args.fn(args)


def test_tp_plan_resolves_every_projection():
    model = build_model("tiny")
    plan = tp_plan(model)
    want = {}
    for i in range(model.config.n_layers):
        for pattern, style in TinyLlama._tp_plan.items():
            want[pattern.replace("*", str(i))] = style
    assert plan == want and len(plan) == 7 * model.config.n_layers
    assert set(plan.values()) == set(STYLE_DIM)
    assert "lm_head" not in plan and "embed" not in plan  # replicated


def test_rowwise_split_off_group_boundary_is_a_clear_error():
    model = build_model("tiny")
    lowbit.quantize_(model, lowbit.WeightOnlyConfig(bits=4, group_size=128))
    w = model.layers[0].attn.wo.weight  # K = 128: one group, cannot be split in 2
    with pytest.raises(ValueError, match="not a multiple of the group size 128"):
        _check_split("layers.0.attn.wo.weight", tuple(w.shape), w.meta, 1, 2)


@pytest.mark.slow
def test_tp2_matches_tp1_dense_and_w4_from_checkpoint(tmp_path):
    out = tmp_path / "tp.json"
    rc = _run_bench(["--preset", "tiny", "--device", "cpu", "--dtype", "float32", "--configs", "dense,w4g64",
                     "--batch", "1,2", "--tp", "1,2", "--prompt", "8", "--tokens", "2", "--check-steps", "2",
                     "--timeout", "120", "--dist-timeout", "60", "--json", str(out)])
    data = json.loads(out.read_text())
    assert rc == 0 and not data["errors"], data["errors"]
    rows = data["results"]
    assert {(r["config"], r["tp"], r["batch"]) for r in rows} == {
        (c, t, b) for c in ("dense", "w4g64") for t in (1, 2) for b in (1, 2)}
    for r in rows:
        assert r["tokens_per_s"] > 0 and 0 < r["host_ms_per_step"] <= r["ms_per_step"], r
        if r["tp"] == 2:
            c = r["check"]
            # fp32: TP only reassociates the row-parallel sums
            assert c["pass"] and c["all_ranks_pass"] and c["rel_err"] < 1e-5 and c["argmax_agree"] == 1.0, r
            assert r["speedup_vs_tp1"] > 0
            # each rank holds half of the sharded layers, as compact tensors (not views of the whole)
            assert r["shards_compact"] and r["shard_bytes_ok"] and abs(r["shard_fraction"] - 0.5) < 1e-3, r
    # the W4 checkpoint really was quantized: its sharded layers are ~1/7 the fp32 bytes
    full = {c: data["prep"][c]["full_bytes"]["sharded"] for c in ("dense", "w4g64")}
    assert full["w4g64"] < full["dense"] / 5
    assert data["device"] == "cpu" and data["tp"] == [1, 2]


@pytest.mark.slow
def test_tp2_compiled_with_unwrapped_shards(tmp_path):
    """--compile --unwrap all stores the W4 weights and their DTensor shards unwrapped: the
    compiled step runs on every rank and gives the eager logits, and TP=2 still matches TP=1."""
    out = tmp_path / "tp.json"
    rc = _run_bench(["--preset", "tiny", "--device", "cpu", "--dtype", "float32", "--configs", "w4g64",
                     "--batch", "1", "--tp", "1,2", "--prompt", "8", "--tokens", "2", "--check-steps", "2",
                     "--compile", "--unwrap", "all", "--timeout", "300", "--dist-timeout", "60", "--json", str(out)])
    data = json.loads(out.read_text())
    assert rc == 0 and not data["errors"], data["errors"]
    rows = data["results"]
    assert {r["tp"] for r in rows} == {1, 2}
    for r in rows:
        assert r["compiled"] and r["unwrapped"] and r["compiled_check"]["pass"], r
        assert r["cudagraph_skips"] == 0, r  # counted on every torch this supports; no CUDA graphs on the CPU
        if r["tp"] == 2:
            assert r["check"]["pass"] and r["check"]["rel_err"] < 1e-5, r


@pytest.mark.slow
def test_tp2_localized_shards_compiled(tmp_path):
    """--local replaces the DTensor shards by local tensors and an all-reduce after each
    row-wise linear (lowbit.tp.localize): eager TP=2 still matches TP=1, and the compiled step
    (on unwrapped local W4 shards) gives the eager logits on every rank."""
    out = tmp_path / "tp.json"
    rc = _run_bench(["--preset", "tiny", "--device", "cpu", "--dtype", "float32", "--configs", "w4g64",
                     "--batch", "2", "--tp", "2", "--prompt", "8", "--tokens", "2", "--check-steps", "2",
                     "--compile", "--local", "--timeout", "300", "--dist-timeout", "60", "--json", str(out)])
    data = json.loads(out.read_text())
    assert rc == 0 and not data["errors"], data["errors"]
    (r,) = [r for r in data["results"] if r["tp"] == 2]
    assert r["localized"] and r["compiled"] and r["unwrapped"] and r["compiled_check"]["pass"], r
    assert r["check"]["pass"] and r["check"]["all_ranks_pass"] and r["check"]["rel_err"] < 1e-5, r


@pytest.mark.slow
def test_apply_tp_and_load_sharded_agree_two_processes(tmp_path):
    worker = Path(__file__).with_name("tp_bench_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "LOWBIT_TP_OUT": str(tmp_path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    for rank in (0, 1):
        lines = (tmp_path / f"rank{rank}.txt").read_text().splitlines()
        assert len(lines) == 3 and all(line.startswith("TP-OK") for line in lines), (rank, lines)
