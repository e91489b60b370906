#!/usr/bin/env python3
"""Kernel microbenchmarks against the peers (issue 6): the same code and flags as
``lowbit bench kernels`` (lowbit/bench/kernels.py), runnable from a checkout.

    python benchmarks/bench_kernels.py --device cpu --shapes 4096x14336 --ms 1,4,16,64
    python benchmarks/bench_kernels.py --device cuda --out $OUT/kernels
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lowbit.bench.kernels import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli())
