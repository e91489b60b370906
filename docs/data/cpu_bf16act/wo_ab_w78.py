# W7 / W8 weight-only on bf16 activations: the nibble-split bf16 kernels (isa "" = avx512bf16)
# against the fp32 kernels (isa "avx512vnni") and dense bf16, weights from DRAM, 2 threads.
# Run from the repo root: flock -x /tmp/lowbit-cpu.lock .venv/bin/python docs/data/cpu_bf16act/wo_ab_w78.py
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, "tests")
import test_cpu_kernels as T  # noqa: E402  (make_weight / run: the test suite's helpers)

torch.manual_seed(0)


def bench(f, n=10):
    f(), f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2] * 1e6


for N, K in [(14336, 4096), (4096, 14336)]:
    wd = torch.randn(N, K, dtype=torch.bfloat16)
    for bits in (8, 7):
        codes, qw = T.make_weight(N, K, bits, 128, False, torch.bfloat16, act="none")
        for m in (1, 4, 16, 64):
            x = torch.randn(m, K, dtype=torch.bfloat16)
            tb = bench(lambda: T.run(x, qw, None, ""))
            tv = bench(lambda: T.run(x, qw, None, "avx512vnni"))
            td = bench(lambda: F.linear(x, wd))
            print(f"{N}x{K} W{bits} g128 M={m:3d}: bf16act {tb:8.0f}  fp32act {tv:8.0f}  dense bf16 {td:8.0f} us"
                  f"   x{tv / tb:.2f} fp32act, x{td / tb:.2f} dense", flush=True)
