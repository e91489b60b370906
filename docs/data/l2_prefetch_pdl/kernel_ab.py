"""Record of a rejected experiment (docs/gpu_kernels.md, "L2 prefetch of the codes"): the L2
prefetch A/B for gemv_words (M=1), gemm_pairs (M=16) and gemm_swap (M=32, 64), after a
correctness check of the prefetch configs. Needs the patch beside it; from the repo root:

    git apply docs/data/l2_prefetch_pdl/l2_prefetch_and_pdl.patch
    PYTHONPATH=. python3 docs/data/l2_prefetch_pdl/kernel_ab.py   # writes $OUT/pf_ab.json
"""
import json, os, sys
import torch
sys.path.insert(0, "benchmarks")
import bench_gpu as bg
from bench_gpu import log
from lowbit.backends.triton import ensure_kernels
ensure_kernels()
from lowbit.kernels import dispatch, gemv_words, gemm_pairs, gemm_swap

bg.section_env()
out = {"env": bg.RESULTS["env"], "rows": []}
bad = 0
bad += bg.check_gemm(gemv_words.gemv_words, lambda m: [dict(l2_prefetch=True)], ms=(1, 3))
bad += bg.check_gemm(gemm_pairs.gemm_pairs, lambda m: [dict(l2_ahead=2), dict(l2_ahead=4, split_k=4)], ms=(1, 16, 33))
bad += bg.check_gemm(gemm_swap.gemm_swap, lambda m: [dict(l2_ahead=2, block_m=64), dict(l2_ahead=4, split_k=4, block_m=32)], ms=(16, 33, 64))
out["check_failures"] = bad
plan = [(1, "gemv_words", "l2_prefetch", [False, True]), (16, "gemm_pairs", "l2_ahead", [0, 2, 4, 8]),
        (32, "gemm_swap", "l2_ahead", [0, 2, 4, 8]), (64, "gemm_swap", "l2_ahead", [0, 2, 4])]
for s in os.environ.get("SHAPES", "28672x4096,14336x4096,4096x14336,4096x4096,6144x4096").split(","):
    n, k = map(int, s.split("x"))
    dws = bg.weight_copies(n, k)
    for m, fam, key, vals in plan:
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        base = dict(dispatch.config(fam, m, dws[0], x.device))
        grid = [dict(base, **{key: v}) for v in vals]
        if fam == "gemv_words":  # longer programs may gain more from the prefetch
            sp = base.get("split_k", 1)
            grid += [dict(base, split_k=max(1, sp // 2), **{key: v}) for v in vals]
        run = getattr(dispatch, "run_family")
        r = bg.time_configs(lambda d, **c: run(fam, x, d, None, **c), dws, grid)
        fl = bg.floor_us(n, k, m, 4, 128)[0]
        log(f"{n}x{k} M={m} {fam} floor {fl:.1f}: " + " | ".join(f"{c.get(key)}{'' if c.get('split_k') == base.get('split_k') else ' sp' + str(c.get('split_k'))} {u:.2f}" for u, c in r))
        out["rows"].append(dict(n=n, k=k, m=m, family=fam, floor=fl, base=base, res=r))
    del dws
    json.dump(out, open(os.path.join(os.environ.get("OUT", "/tmp"), "pf_ab.json"), "w"), indent=1, default=str)
log(f"check failures: {bad}")
