"""pytest-benchmark cases for the C++ CPU kernels (issue 3), next to their peers.

    pytest benchmarks/test_bench_cpu.py --benchmark-only

A few headline cases of benchmarks/bench_cpu.py (which prints the full table with the
bandwidth floor): Llama-3.1-8B down projection (N=4096, K=14336), lowbit int8-activation
x W{2,4} and W4 weight-only on bf16 activations (symmetric, group 32, bf16) vs dense bf16 and
torch's int4 weight-only kernel.
Weights rotate over enough copies to exceed 4x L3, so each call reads them from DRAM.
"""
import itertools
import os
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import bench_cpu  # noqa: E402

import lowbit  # noqa: E402

N, K = 4096, 14336
BACKEND = next(b for b in lowbit.registered_backends() if b.name == "cpu")
pytestmark = pytest.mark.skipif(not BACKEND.available(), reason=f"C++ CPU backend unavailable: {BACKEND.unavailable_reason()}")


def _cycle(fns):
    it = itertools.cycle(fns)
    return lambda: next(it)()


@pytest.mark.parametrize("m", [1, 4, 64])
@pytest.mark.parametrize("bits", [2, 4])
def test_lowbit_int8act(benchmark, bits, m):
    x = torch.randn(m, K, dtype=torch.bfloat16)
    ws = bench_cpu.lowbit_weights(N, K, bits, BACKEND, bench_cpu.copies_for(bench_cpu.lowbit_bytes(N, K, bits, 1)))
    benchmark.extra_info.update(bits=bits, m=m, n=N, k=K, kernel=BACKEND.ext.kernel_name("", m))
    benchmark.pedantic(_cycle([lambda w=w: BACKEND.linear(x, w, None) for w in ws]), rounds=30, warmup_rounds=3)


@pytest.mark.parametrize("m", [1, 4, 64])
def test_lowbit_weight_only_bf16(benchmark, m):
    """W4 weight-only on bf16 activations: linear_bf16act_* where the CPU has AVX-512 BF16."""
    x = torch.randn(m, K, dtype=torch.bfloat16)
    ws = bench_cpu.lowbit_weights(N, K, 4, BACKEND, bench_cpu.copies_for(bench_cpu.lowbit_bytes(N, K, 4, 1)), act="none")
    benchmark.extra_info.update(bits=4, m=m, n=N, k=K, kernel=BACKEND.kernel_name(m, True, torch.bfloat16, 4))
    benchmark.pedantic(_cycle([lambda w=w: BACKEND.linear(x, w, None) for w in ws]), rounds=30, warmup_rounds=3)


@pytest.mark.parametrize("m", [1, 4, 64])
def test_dense_bf16(benchmark, m):
    x = torch.randn(m, K, dtype=torch.bfloat16)
    ws = [torch.randn(N, K, dtype=torch.bfloat16) for _ in range(bench_cpu.copies_for(N * K * 2))]
    benchmark.pedantic(_cycle([lambda w=w: F.linear(x, w) for w in ws]), rounds=30, warmup_rounds=3)


@pytest.mark.parametrize("m", [1, 4])
def test_torch_int4_woq(benchmark, m):
    x = torch.randn(m, K, dtype=torch.bfloat16)
    packs = []
    for _ in range(bench_cpu.copies_for(N * K // 2)):
        wp = torch.ops.aten._convert_weight_to_int4pack_for_cpu(torch.randint(0, 16, (N, K), dtype=torch.int32), 1)
        packs.append((wp, torch.rand(K // bench_cpu.GROUP, N, 2, dtype=torch.bfloat16)))
    fns = [lambda p=p: torch.ops.aten._weight_int4pack_mm_for_cpu(x, p[0], bench_cpu.GROUP, p[1]) for p in packs]
    benchmark.pedantic(_cycle(fns), rounds=30, warmup_rounds=3)
