#!/usr/bin/env python3
"""The decoder's cached-step attention on a GPU: lowbit's cache-attention kernel
(kernels/attention.py; a few launch configs) against PyTorch's SDPA with the slot mask and
grouped queries (what TinyLlama ran before), at Llama-3.1-8B decode shapes. Each case is
checked against the fp32 reference first, then timed as one CUDA graph over as many layers'
caches as fill 4x L2 (median), like bench_gpu. Floor: the cache bytes up to the position.

Usage: PYTHONPATH=. python3 benchmarks/gpu_attention_probe.py [--batch 1,16,32] [--seq 101] [--pos 100]
"""
import argparse
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, "benchmarks")
import bench_gpu as bg  # noqa: E402

from lowbit.backends.triton import ensure_kernels  # noqa: E402

ensure_kernels()
from lowbit.kernels.attention import decode_attention, decode_attention_ref  # noqa: E402


def sdpa_model_path(q, k, v, mask):
    """TinyLlama's SDPA path: the rep query heads of a KV head as rows, mask rows repeated."""
    b, h, t, d = q.shape
    rep = h // k.shape[1]
    o = F.scaled_dot_product_attention(q.reshape(b, k.shape[1], rep * t, d), k, v, attn_mask=mask.repeat(rep, 1))
    return o.reshape(b, h, t, d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="1,16,32")
    ap.add_argument("--seq", type=int, default=101, help="cache slots (the e2e run's max_seq)")
    ap.add_argument("--pos", type=int, default=100, help="the decoded token's position")
    a = ap.parse_args()
    bg.section_env()
    h, kv, d, dt = 32, 8, 128, torch.bfloat16
    for b in map(int, a.batch.split(",")):
        cache_bytes = 2 * b * kv * a.seq * d * 2
        n = bg.copies_for(cache_bytes)
        qs = [torch.randn(b, 1, h, d, device="cuda", dtype=dt).transpose(1, 2) for _ in range(n)]
        ks = [torch.randn(b, kv, a.seq, d, device="cuda", dtype=dt) for _ in range(n)]
        vs = [torch.randn(b, kv, a.seq, d, device="cuda", dtype=dt) for _ in range(n)]
        pos = torch.tensor([a.pos], device="cuda")
        mask = torch.arange(a.seq, device="cuda")[None, :] <= pos[:, None]
        ref = decode_attention_ref(qs[0].float(), ks[0].float(), vs[0].float(), pos)
        sd = bg.graph_us([lambda i=i: sdpa_model_path(qs[i], ks[i], vs[i], mask) for i in range(n)])
        e_sd = bg.rel(sdpa_model_path(qs[0], ks[0], vs[0], mask), ref)
        floor = 2 * b * kv * (a.pos + 1) * d * 2 / bg.RESULTS["env"]["copy_bw"] * 1e6
        bg.log(f"batch {b}: SDPA (model path) {sd:.2f} us (rel err {e_sd:.1e}); floor {floor:.2f} us")
        for bs in (32, 64, 128):
            for nw in (2, 4):
                e = bg.rel(decode_attention(qs[0], ks[0], vs[0], pos, block_s=bs, num_warps=nw), ref)
                us = bg.graph_us([lambda i=i: decode_attention(qs[i], ks[i], vs[i], pos, block_s=bs, num_warps=nw)
                                  for i in range(n)])
                bg.log(f"  kernel block_s={bs} warps={nw}: {us:.2f} us ({sd / us:.1f}x SDPA, {floor / us:.0%} of floor) "
                       f"rel err {e:.1e}")
        del qs, ks, vs


if __name__ == "__main__":
    main()
