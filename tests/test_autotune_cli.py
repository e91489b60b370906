"""`lowbit autotune`: argument parsing and errors, and an end-to-end run on a tiny shape under
the Triton interpreter (the same code path the GPU takes, on CPU tensors)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from lowbit.autotune import derive_thresholds, parse_batches, parse_shapes, search_space, TuneResult


def test_parse_batches():
    assert parse_batches("1,2,4") == [1, 2, 4]
    assert parse_batches("1-64") == [1, 2, 4, 8, 16, 32, 64]
    assert parse_batches("3-20") == [3, 4, 8, 16, 20]
    for bad in ("0", "8-2", "", "a"):
        with pytest.raises(ValueError):
            parse_batches(bad)


def test_parse_shapes():
    assert parse_shapes("4096x4096,14336x4096") == [(4096, 4096), (14336, 4096)]
    for bad in ("4096", "4096x4095", "ax4", "0x64"):
        with pytest.raises(ValueError, match="bad shape"):
            parse_shapes(bad)


def test_every_config_fits_its_launcher():
    """The search space, the heuristic defaults and the shipped tuning files only use launch
    arguments the kernels take; a config that does not is refused when registered."""
    from lowbit import tuning
    from lowbit.backends.triton import ensure_kernels

    ensure_kernels()
    from lowbit.kernels import dispatch

    for fam in dispatch.FAMILIES:
        for m in (1, 16, 64, 256):
            for quick in (False, True):
                for cfg in search_space(fam, m, quick=quick):
                    dispatch.check_config(fam, cfg)
    for _, data in tuning._shipped():
        for dev in data["devices"].values():
            for tkey, ent in dev["configs"].items():
                dispatch.check_config(tuning.TuneKey.decode(tkey).family, ent["config"])
    with pytest.raises(ValueError, match=r"gemm_int8 has unknown launch arguments \['join_tiles'\]"):
        dispatch.set_config("gemm_int8", dict(block_m=16, join_tiles=True), device_name="test-device")


def test_stale_tuned_config_is_skipped_with_a_warning(monkeypatch):
    """A cached config from an older kernel version falls back to the defaults with a
    warning; the other entries still install."""
    from lowbit import autotune, tuning
    from lowbit.backends.triton import ensure_kernels

    ensure_kernels()
    from lowbit.kernels import dispatch

    dev = tuning.DeviceId("test-device", "9.0", "3.6.0", "0.1.0")
    stale = tuning.TuneKey("gemm_int8", 4096, 4096, 4, 32, "int8", 16)
    good = tuning.TuneKey("gemm_int8", 4096, 4096, 4, 32, "int8", 32)
    found = tuning.DeviceTuning(configs={stale.encode(): {"config": {"block_m": 16, "join_tiles": True}, "us": 1.0},
                                         good.encode(): {"config": {"block_m": 32, "block_n": 16}, "us": 1.0}})
    monkeypatch.setattr(tuning.DeviceId, "current", classmethod(lambda cls, device=None: dev))
    monkeypatch.setattr(tuning, "lookup", lambda did: found)
    monkeypatch.setattr(tuning, "_warned", set())
    monkeypatch.setattr(dispatch, "_configs", {})
    with pytest.warns(UserWarning, match="ignoring the tuned config .*join_tiles"):
        autotune.install(torch.device("cpu"), dispatch)
    assert list(dispatch._configs.values()) == [{"block_m": 32, "block_n": 16}]


def test_search_space_nonempty_for_every_family():
    from lowbit.backends.triton import ensure_kernels

    ensure_kernels()
    from lowbit.kernels import dispatch

    for fam in dispatch.FAMILIES:
        for m in (1, 16, 256):
            assert search_space(fam, m), (fam, m)
    with pytest.raises(ValueError, match="unknown family"):
        search_space("nope", 1)


def test_thresholds_from_winners():
    def r(m, fam):
        return TuneResult(4096, 4096, 4, 128, "float16", m, fam, {}, 1.0, 1.0, 1)

    rs = [r(1, "gemv_revsplitk"), r(4, "gemm_splitk"), r(64, "gemm_splitk"), r(256, "gemm"), r(1024, "dequant_cublas")]
    assert derive_thresholds(rs) == {"bits=4|g=128|float16": {"gemv_max_m": 1, "words_max_m": 0, "pairs_max_m": 0,
                                                              "swap_max_m": 0, "splitk_max_m": 64, "dequant_min_m": 1024}}
    rs = [r(1, "gemv_words"), r(2, "gemv_words"), r(4, "gemm_splitk"), r(1024, "dequant_cublas")]
    assert derive_thresholds(rs)["bits=4|g=128|float16"]["words_max_m"] == 2
    rs = [r(1, "gemv_words"), r(4, "gemm_pairs"), r(16, "gemm_pairs"), r(64, "gemm"), r(1024, "dequant_cublas")]
    assert derive_thresholds(rs)["bits=4|g=128|float16"]["pairs_max_m"] == 16
    rs = [r(4, "gemm_pairs"), r(16, "gemm_pairs"), r(32, "gemm_swap"), r(64, "gemm_swap"), r(1024, "dequant_cublas")]
    t = derive_thresholds(rs)["bits=4|g=128|float16"]
    assert (t["pairs_max_m"], t["swap_max_m"]) == (16, 64)


def test_opt_in_families_only_when_asked():
    from lowbit.autotune import tuned_families
    from lowbit.kernels import dispatch

    assert "gemv_dp4a" in dispatch.OPT_IN and "gemv_dp4a" not in tuned_families()
    assert "gemv_words" in tuned_families()
    assert tuned_families(["gemv_dp4a"]) == {"gemv_dp4a"}
    with pytest.raises(ValueError, match="unknown families"):
        tuned_families(["gemv_nope"])


def test_families_for_rows():
    from lowbit.autotune import families_for
    from lowbit.kernels import dispatch

    assert "gemv_words" in families_for(2, "none", dispatch.FAMILIES)
    assert "gemv_revsplitk" not in families_for(2, "none", dispatch.FAMILIES)
    every_m = ["gemm_swap", "gemm_splitk", "gemm", "dequant_cublas"]
    assert families_for(16, "none", dispatch.FAMILIES) == ["gemm_pairs"] + every_m
    assert families_for(64, "none", dispatch.FAMILIES) == ["gemm_pairs"] + every_m
    assert families_for(65, "none", dispatch.FAMILIES) == every_m
    assert "gemm_pairs" in families_for(1, "none", dispatch.FAMILIES)  # a GEMM that also serves one row
    assert families_for(1, "int8", dispatch.FAMILIES) == ["gemv_int8"]


def _cli(args, tmp_path, **env):
    # no GPU: the interpreter on CPU tensors; with a GPU: a real (tiny) tuning run
    e = {**os.environ, "LOWBIT_AUTOTUNE_CACHE": str(tmp_path / "autotune.json"), **env}
    if not torch.cuda.is_available():
        e["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, "-m", "lowbit.cli", "autotune", *args], capture_output=True, text=True, env=e, timeout=600)


@pytest.mark.parametrize("args,err", [
    ([], "say what to tune"),
    (["--shapes", "4096x100"], "bad shape"),
    (["--shapes", "64x128", "--bits", "9"], "--bits must be in 1..8"),
    (["--shapes", "64x128", "--group-size", "48"], "does not divide K=128"),
    (["--shapes", "64x128", "--batch", "0"], "batch sizes must be >= 1"),
    (["--shapes", "64x128", "--dtype", "fp8"], "--dtype must be one of"),
    (["--model", "nofile.py:build"], "no such file"),
    (["--preset", "llama-3.1-8b", "--shapes", "64x128"], "not allowed with"),
])
def test_cli_argument_errors(tmp_path, args, err):
    out = _cli(args, tmp_path)
    assert out.returncode != 0 and err in out.stderr, out.stderr


def test_cli_end_to_end_in_the_interpreter(tmp_path):
    model_file = tmp_path / "m.py"
    model_file.write_text("import torch\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.Linear(64, 32))\n")
    out = _cli(["--model", f"{model_file}:build", "--bits", "4", "--group-size", "32", "--batch", "1,2", "--quick",
                "--no-progress", "--families", "gemv_revsplitk,gemm_splitk"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "gemv_revsplitk" in out.stdout and "gemm_splitk" in out.stdout and "dispatch thresholds" in out.stdout
    data = json.loads((tmp_path / "autotune.json").read_text())
    (dev,) = data["devices"].values()
    assert len(dev["winners"]) == 4  # 2 shapes x 2 batch sizes
    assert {k.split("|")[0] for k in dev["configs"]} == {"gemv_revsplitk", "gemm_splitk"}
    show = _cli(["--show"], tmp_path)
    assert show.returncode == 0 and "4 winners" in show.stdout
    clear = _cli(["--clear"], tmp_path)
    assert clear.returncode == 0 and not (tmp_path / "autotune.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="an interpreter run on CPU tensors (the GPU path is the CLI test)")
def test_tune_always_times_the_untuned_dispatch_config(monkeypatch):
    """A tuned config can only be at least as fast as the untuned one: the dispatch config is
    the first candidate even when the search space has nothing else (or omits it)."""
    from lowbit import autotune
    from lowbit.kernels import dispatch

    monkeypatch.setattr(autotune, "search_space", lambda fam, m, quick=False: [])
    (res,) = autotune.tune([(64, 128)], [4], [32], ["none"], [2], quick=True, progress=False, write=False,
                           families=["gemm_splitk"], log=lambda *a: None)
    _, dw = autotune._problem(64, 128, 4, 32, "none", torch.device("cpu"), torch.float32)
    assert res.family == "gemm_splitk" and res.config == dict(dispatch.config("gemm_splitk", 2, dw, torch.device("cpu")))
    assert res.tried == 1
