"""Smoke runs of the benchmark code on tiny shapes, so it cannot rot (numbers are not checked:
speed targets live in the benchmarks, not in tests)."""
import importlib
import json
import os
import sys

import pytest
import torch

import lowbit

BENCH = os.path.join(os.path.dirname(__file__), "..", "benchmarks")


needs_cpu_ext = pytest.mark.skipif(not next(b for b in lowbit.registered_backends() if b.name == "cpu").available(),
                                   reason="the C++ CPU backend is not built")


def run_bench_script(name: str, args: list, tmp_path) -> dict:
    """Run benchmarks/<name>.py's main(args + --json) (the folder is not a package); its JSON."""
    sys.path.insert(0, BENCH)
    try:
        module = importlib.import_module(name)
    finally:
        sys.path.remove(BENCH)
    out = tmp_path / f"{name}.json"
    module.main([*args, "--json", str(out)])
    return json.loads(out.read_text())


@needs_cpu_ext
def test_bench_cpu_runs_end_to_end(tmp_path, capsys):
    data = run_bench_script("bench_cpu", ["--shapes", "64x256", "--ms", "1,3", "--bits", "2,4", "--reps", "2"], tmp_path)
    assert len(data["rows"]) == 2 and all(b > 0 for b in data["bandwidths"])
    assert "| 64x256 | 1 |" in capsys.readouterr().out


@needs_cpu_ext
def test_cpu_phase_ratio_bins_every_pair(tmp_path, capsys):
    args = ["--shape", "64x256", "--ms", "1,3", "--pairs", "12", "--buffer-mib", "8"]
    data = run_bench_script("cpu_phase_ratio", args, tmp_path)
    for m in ("1", "3"):
        rec = data["ms"][m]
        assert len(rec["pairs"]) == 12 and all(r > 0 and c > 0 for r, c in rec["pairs"])
        assert sum(b["pairs"] for b in rec["bins"]) == 12  # the bins cover every rate
    assert "M=3" in capsys.readouterr().out


# ---- lowbit bench kernels (issue 6) ------------------------------------------------------
KERNELS_TINY = ["--device", "cpu", "--shapes", "256x256", "--ms", "1,4", "--bits", "4", "--reps", "3",
                "--bw-mib", "64"]


def test_bench_kernels_cpu_writes_json_csv_png(tmp_path, capsys):
    import csv

    from lowbit.cli import main

    assert main(["bench", "kernels", *KERNELS_TINY, "--direct", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "256x256 (N x K)" in out and "| 1 |" in out and "| 4 |" in out
    data = json.loads((tmp_path / "kernels-cpu.json").read_text())
    assert data["device_type"] == "cpu" and data["baseline"] == "bf16" and data["machine"]["device"]
    assert {"python", "torch", "lowbit"} <= set(data["versions"]) and "bench kernels" in data["command"]
    assert all(v > 0 for v in data["bandwidth"]["gbs_by_shape"].values())
    rows = data["rows"]
    got = {(r["impl"], r["act"]) for r in rows}
    assert {("bf16", "bf16"), ("fp32", "fp32"), ("torch-int4", "bf16"), ("torch-int8", "bf16"),
            ("lowbit", "int8"), ("lowbit", "bf16"), ("lowbit-direct", "int8")} <= got
    assert len(rows) == 2 * len(got) and not data["unavailable"]
    for r in rows:
        assert set(r) >= {"n", "k", "m", "impl", "label", "bits", "us", "x_base", "floor_us", "pct_floor", "kernel"}
        assert r["status"] == "ok" and r["us"] > 0 and r["floor_us"] > 0 and r["x_base"] > 0, r
        assert (r["n"], r["k"], r["bits"] if "lowbit" in r["impl"] else 4) == (256, 256, 4) and r["m"] in (1, 4)
        assert bool(r["kernel"]) == r["impl"].startswith("lowbit")
    assert all(r["x_base"] == 1.0 for r in rows if r["impl"] == "bf16")
    with open(tmp_path / "kernels-cpu.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows) and all(float(r["us"]) > 0 and r["command"] for r in csv_rows)
    for name in ("speedup", "bandwidth"):
        png = tmp_path / f"kernels-cpu-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_kernels_script_cpu_path_uses_no_triton_kernels(tmp_path):
    """benchmarks/bench_kernels.py takes the same flags. The CPU path never loads lowbit's
    Triton kernels; the bench modules import no triton or matplotlib themselves (torch does
    import the triton package on the first call of any custom op, via torch._dynamo, so the
    check on ``triton`` itself is made before the run)."""
    import subprocess

    argv = [os.path.join(BENCH, "bench_kernels.py"), *KERNELS_TINY, "--peers", "bf16", "--act", "int8",
            "--no-plots", "--out", str(tmp_path)]
    code = ("import runpy, sys\n"
            "import lowbit.bench.kernels as k\n"
            "k.build_parser().parse_args(sys.argv[1:] or ['--device', 'cpu'])\n"
            "assert 'triton' not in sys.modules and 'matplotlib' not in sys.modules, 'heavy import at module level'\n"
            f"sys.argv = {argv!r}\n"
            "try:\n"
            "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "assert 'lowbit.kernels' not in sys.modules, 'the CPU bench loaded the Triton kernels'\n"
            "assert 'matplotlib' not in sys.modules, '--no-plots imported matplotlib'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = json.loads((tmp_path / "kernels-cpu.json").read_text())["rows"]
    assert sorted({r["impl"] for r in rows}) == ["bf16", "lowbit"] and all(r["us"] > 0 for r in rows)


_BAD_ARGS = [
    (["--shapes", "4096by4096"], "--shapes"),
    (["--shapes", "256x260"], "--shapes"),  # K not a multiple of 8
    (["--bits", "9"], "--bits"),
    (["--bits", "0"], "--bits"),
    (["--ms", "0"], "--ms"),
    (["--group-size", "12"], "--group-size"),
    (["--shapes", "256x384", "--group-size", "256"], "--group-size"),  # does not divide K
    (["--act", "int4"], "--act"),
    (["--peers", "cublas"], "--peers"),  # not a CPU peer
]


@pytest.mark.parametrize("argv,name", _BAD_ARGS + ([] if torch.cuda.is_available() else [([], "--device")]))
def test_bench_kernels_bad_input_names_the_argument(argv, name, capsys):
    from lowbit.bench import kernels

    device = ["--device", "cuda"] if name == "--device" else ["--device", "cpu"]
    with pytest.raises(SystemExit) as e:
        kernels.cli([*device, *argv])
    assert e.value.code == 2
    assert f"argument {name}" in capsys.readouterr().err


def test_bench_kernels_retimes_only_disturbed_blocks():
    from lowbit.bench.cases import retime_disturbed

    steady = [[100.0, 101.0, 99.0], [102.0, 100.0, 98.0], [8000.0, 8100.0, 7990.0]]  # last block: a core was taken
    fresh = iter([[9000.0] * 3, [101.0] * 3])
    assert retime_disturbed(steady, lambda: next(fresh), retries=3) == 2
    assert max(max(b) for b in steady) < 200
    quiet = [[100.0] * 3, [150.0] * 3]  # within 2x: left alone
    assert retime_disturbed(quiet, lambda: pytest.fail("retimed a quiet cell")) == 0
    stuck = [[100.0] * 3, [500.0] * 3]
    assert retime_disturbed(stuck, lambda: [500.0] * 3, retries=3) == 3  # gives up after `retries`


def test_compile_guards_runs(tmp_path):
    """The guard-cost benchmark (benchmarks/compile_guards.py) on a one-layer decoder: every
    storage compiles and its guards accept the timed call (timings are the benchmark's job)."""
    data = run_bench_script("compile_guards", ["--layers", "1", "--reps", "3"], tmp_path)
    kinds = {r["kind"]: r for r in data["rows"]}
    assert set(kinds) == {"bf16", "w4-linear", "w4-parametrize"} and all(r["guard_us"] > 0 for r in data["rows"])
    # both W4 storages hold the same parts (qdata, scales, zeros, layout a weight)
    assert kinds["w4-linear"]["parameters"] == kinds["w4-parametrize"]["parameters"] > kinds["bf16"]["parameters"]
