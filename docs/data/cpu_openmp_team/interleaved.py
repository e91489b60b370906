"""One lowbit linear right after a torch op, as in a model: W4 g32 14336x4096, M = 1. Each pair
is an int64 sum over a cold chunk of a 1 GiB huge-page buffer (the op's size), then one call;
prints, per block of 20 pairs, the median read rate of each and the median of their ratios.
Run from the repository root, with and without LOWBIT_CPU_POOL=own (or OMP_WAIT_POLICY=PASSIVE):
    python docs/data/cpu_openmp_team/interleaved.py [PAIRS]
"""
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "benchmarks"))
from cpu_phase_ratio import survey  # noqa: E402

import lowbit  # noqa: E402
from lowbit.backends.cpu import _layout_buffer  # noqa: E402

torch.manual_seed(0)
n, k = 14336, 4096
backend = next(b for b in lowbit.registered_backends() if b.name == "cpu")
print("threads:", backend.ext.parallel_pool())
big = _layout_buffer(1 << 30).view(torch.int64)
big.fill_(1)
# the pairs are benchmarks/cpu_phase_ratio.py's (it warms up on two calls first)
pairs = survey(backend, n, k, 1, 4, int(sys.argv[1]) if len(sys.argv) > 1 else 120, big)
for j in range(0, len(pairs), 20):
    blk = pairs[j:j + 20]
    print(f"sum {statistics.median(a for a, _ in blk):.1f} GB/s  linear {statistics.median(b for _, b in blk):.1f} GB/s  "
          f"ratio {statistics.median(b / a for a, b in blk):.2f}")
