"""Run by tests/test_dtensor.py under torchrun (2 processes, gloo): quantize an MLP, shard it
with ColwiseParallel/RowwiseParallel, compare with the unsharded quantized model, and check
each shard's bytes equal the packing of the sharded float weight's codes."""
import copy
import os
import sys
from collections import OrderedDict

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

import lowbit
from lowbit.packing import pack
from lowbit.quant import quantize_weight


def styles(rowwise: bool):
    if rowwise:
        return {"up": ColwiseParallel(), "down": RowwiseParallel()}
    return {"up": ColwiseParallel(output_layouts=Replicate())}  # all-gather before the float down


def check(cfg, rowwise: bool, mesh, rank, world):
    torch.manual_seed(0)
    mlp = nn.Sequential(OrderedDict(up=nn.Linear(256, 512), act=nn.SiLU(), down=nn.Linear(512, 256)))
    floats = {n: m.weight.detach().clone() for n, m in mlp.named_children() if isinstance(m, nn.Linear)}
    lowbit.quantize_(mlp, cfg, strict=True)
    x = torch.randn(5, 256)
    with torch.no_grad():
        want = mlp(x)
        # every rank quantized the same weights deterministically (as every rank would load the
        # same quantized checkpoint): src_data_rank=None shards locally, with no scatter
        tp = parallelize_module(copy.deepcopy(mlp), mesh, styles(rowwise), src_data_rank=None)
        got = tp(x)
        if isinstance(got, DTensor):
            got = got.full_tensor()
    err = float((got - want).norm() / want.norm())
    # row-parallel sums partial products across ranks: equal up to float reassociation
    assert err < (1e-5 if rowwise else 1e-7), f"{cfg.name} rowwise={rowwise}: rel err {err}"
    # shards are byte-exact slices of the canonical format
    for name, dim in (("up", 0), ("down", 1)) if rowwise else (("up", 0),):
        p = getattr(tp, name).weight
        assert isinstance(p, DTensor) and p.placements == (Shard(dim),), (name, p.placements)
        local = p.to_local()
        assert isinstance(local, lowbit.LowBitTensor)
        codes, scales, zeros = quantize_weight(floats[name], cfg.bits, cfg.group_size, cfg.symmetric, cfg.method)
        codes_shard = torch.chunk(codes, world, dim=dim)[rank]
        assert torch.equal(local.qdata, pack(codes_shard, cfg.bits)), name
        assert torch.equal(local.scales, torch.chunk(scales, world, dim=dim)[rank]), name
    return err


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    results = []
    for cfg in (lowbit.WeightOnlyConfig(bits=4, group_size=32), lowbit.WeightOnlyConfig(bits=3, group_size=64, method="hqq")):
        results.append((cfg.name, "col+row", check(cfg, True, mesh, rank, world)))
    # int8 activations are quantized per token over the local K, so row-parallel changes the
    # numerics by design; column-parallel must match exactly
    cfg = lowbit.Int8DynamicActivationConfig(bits=4, group_size=32)
    results.append((cfg.name, "col", check(cfg, False, mesh, rank, world)))
    # one file per rank: the ranks share stdout, where lines interleave
    with open(os.path.join(os.environ["LOWBIT_TP_OUT"], f"rank{rank}.txt"), "w") as f:
        for r in results:
            f.write(" ".join(map(str, ("TP-OK", *r))) + "\n")
    dist.barrier()
    dist.destroy_process_group()
    # every check on every rank has passed and been reported; skip interpreter teardown, where
    # gloo occasionally aborts ("terminate called without an active exception") on exit
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
