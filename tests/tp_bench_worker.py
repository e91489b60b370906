"""Run by tests/test_tp_bench.py under torchrun (2 processes, gloo): for a float, a W4 and an
int8-dynamic tiny Llama, ``lowbit.tp.apply_tp`` (shard a loaded model) and
``lowbit.tp.load_sharded`` (read each rank's slices of a saved checkpoint) must give the same
compact shards, byte for byte, and the unsharded model's logits, with and without the KV cache."""
import copy
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

import lowbit
from lowbit.models import TinyLlama, build_model, preset_config
from lowbit.tp import apply_tp, load_sharded, shard_bytes


def parts(t):
    t = t.to_local() if isinstance(t, DTensor) else t
    if isinstance(t, lowbit.LowBitTensor):
        return [x for x in (t.qdata, t.scales, t.zeros) if x is not None]
    return [t]


def rel(a, b):
    return float((a - b).norm() / b.norm())


def check(cfg, mesh, rank, world, out_dir):
    model = build_model("tiny", dtype=torch.float32)
    if cfg is not None:
        lowbit.quantize_(model, cfg)
    name = cfg.name if cfg is not None else "dense"
    path = os.path.join(out_dir, f"{name}.safetensors")
    if rank == 0:
        lowbit.save_file(model, path)
    dist.barrier()
    tok = torch.randint(0, model.config.vocab, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.device("meta"):
        meta_model = TinyLlama(preset_config("tiny"))
    with torch.no_grad():
        ref = model(tok)
        a = apply_tp(copy.deepcopy(model), mesh)
        b = load_sharded(path, meta_model, mesh)
        got_a, got_b = a(tok), b(tok)
        for m in (model, a, b):
            m.setup_cache(2, 16)
        cached = [m(tok, torch.arange(8)) for m in (model, a, b)]
        step = [m(tok[:, :1], torch.tensor([8])) for m in (model, a, b)]
    # int8 activations are quantized per token over the local K of a row-parallel layer
    tol = 5e-2 if cfg is not None and cfg.act != "none" else 1e-5
    errs = [rel(got_a, ref), rel(got_b, ref), rel(cached[1], cached[0]), rel(cached[2], cached[0]),
            rel(step[1], step[0]), rel(step[2], step[0])]
    assert max(errs) < tol, (name, errs)
    assert a.layers[0].attn.h == 4 // world and a.layers[0].attn.cache.k.shape[1] == 2 // world
    sharded = 0
    for (n, pa), (n2, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert n == n2 and isinstance(pa, DTensor) == isinstance(pb, DTensor), n
        if isinstance(pa, DTensor):
            sharded += 1
            assert pa.placements == pb.placements, n
            assert all(torch.equal(x, y) for x, y in zip(parts(pa), parts(pb))), n
    assert sharded == 7 * model.config.n_layers
    for m in (a, b):
        sb = shard_bytes(m)
        assert sb["sharded"] == sb["sharded_storage"], sb  # compact: no view of a full weight
    return f"TP-OK {name} max_rel_err={max(errs):.2e}"


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    out_dir = os.environ["LOWBIT_TP_OUT"]
    lines = [check(cfg, mesh, rank, world, out_dir) for cfg in (
        None, lowbit.WeightOnlyConfig(bits=4, group_size=64), lowbit.Int8DynamicActivationConfig(bits=4, group_size=32))]
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:  # one file per rank
        f.write("\n".join(lines) + "\n")
    dist.barrier()
    dist.destroy_process_group()
    # all checks passed and are on disk: skip interpreter teardown, where gloo occasionally
    # aborts on exit (as tests/dist_tp_worker.py)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
