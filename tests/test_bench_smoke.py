"""Smoke runs of the benchmark code on tiny shapes, so it cannot rot (numbers are not checked:
speed targets live in the benchmarks, not in tests)."""
import json
import os
import sys

import pytest

import lowbit

BENCH = os.path.join(os.path.dirname(__file__), "..", "benchmarks")


@pytest.mark.skipif(not next(b for b in lowbit.registered_backends() if b.name == "cpu").available(),
                    reason="the C++ CPU backend is not built")
def test_bench_cpu_runs_end_to_end(tmp_path, capsys):
    sys.path.insert(0, BENCH)
    try:
        import bench_cpu
    finally:
        sys.path.remove(BENCH)
    out = tmp_path / "cpu.json"
    bench_cpu.main(["--shapes", "64x256", "--ms", "1,3", "--bits", "2,4", "--reps", "2", "--json", str(out)])
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 2 and all(b > 0 for b in data["bandwidths"])
    assert "| 64x256 | 1 |" in capsys.readouterr().out
