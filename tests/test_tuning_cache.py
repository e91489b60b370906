"""The autotune cache: key completeness, atomic concurrent writes, corrupt files, precedence."""
import dataclasses
import json
import multiprocessing as mp
import warnings

import pytest

from lowbit import tuning
from lowbit.tuning import DeviceId, TuneKey

DEV = DeviceId("NVIDIA H100 80GB HBM3", "9.0", "3.6.0", "0.1.0")
KEY = TuneKey("gemm_splitk", 14336, 4096, 4, 128, "float16", 16)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = str(tmp_path / "sub" / "autotune.json")
    monkeypatch.setenv("LOWBIT_AUTOTUNE_CACHE", path)
    monkeypatch.setattr(tuning, "_warned", set())
    monkeypatch.setattr(tuning, "_shipped", lambda: [])  # the H100/H200 files that ship must not leak in
    return path


def test_keys_hold_every_field_that_changes_the_answer():
    assert TuneKey.decode(KEY.encode()) == KEY
    for f in dataclasses.fields(TuneKey):
        other = dataclasses.replace(KEY, **{f.name: "x" if f.type == "str" else 7})
        assert other.encode() != KEY.encode(), f.name
    for f in dataclasses.fields(DeviceId):
        assert dataclasses.replace(DEV, **{f.name: "other"}).key != DEV.key, f.name
    assert [tuning.m_bucket(m) for m in (1, 2, 3, 4, 5, 16, 17, 1000)] == [1, 2, 4, 4, 8, 16, 32, 1024]


def test_write_read_round_trip(cache):
    tuning.update_cache(DEV, configs={KEY: {"config": {"block_m": 16, "split_k": 4}, "us": 21.5}},
                        winners={tuning.shape_key(14336, 4096, 4, 128, "float16", 16): {"family": "gemm_splitk", "us": 21.5}},
                        thresholds={tuning.width_key(4, 128, "float16"): {"gemv_max_m": 1, "splitk_max_m": 64, "dequant_min_m": 512}})
    got = tuning.lookup(DEV)
    assert got.configs[KEY.encode()]["config"] == {"block_m": 16, "split_k": 4}
    assert got.winners["n=14336|k=4096|bits=4|g=128|float16|m=16"]["family"] == "gemm_splitk"
    assert got.thresholds["bits=4|g=128|float16"]["splitk_max_m"] == 64
    assert got.sources == ["user:" + cache]
    # merging keeps earlier entries
    k2 = dataclasses.replace(KEY, m_bucket=32)
    tuning.update_cache(DEV, configs={k2: {"config": {"block_m": 32}, "us": 30.0}})
    assert set(tuning.lookup(DEV).configs) == {KEY.encode(), k2.encode()}


def _writer(path, i, barrier):
    barrier.wait()
    for j in range(5):
        key = TuneKey("gemv", 4096 + i, 4096, 4, 128, "float16", 1 << j)
        tuning.update_cache(DEV, configs={key: {"config": {"writer": i, "j": j}, "us": 1.0}}, path=path)


def test_concurrent_writers_leave_valid_json_with_all_entries(tmp_path):
    path = str(tmp_path / "autotune.json")
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_writer, args=(path, i, barrier)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    with open(path) as f:
        data = json.load(f)
    configs = data["devices"][DEV.key]["configs"]
    assert len(configs) == 40
    assert {c["config"]["writer"] for c in configs.values()} == set(range(8))


@pytest.mark.parametrize("garbage", ["{not json", '{"schema": 99, "devices": {}}', '{"schema": 1, "devices": {"x": 3}}',
                                     '{"schema": 1, "devices": {"d": {"device": {}, "configs": {"bad key": {}}}}}', ""])
def test_corrupt_file_is_a_warning_not_a_crash(cache, garbage):
    import os

    os.makedirs(os.path.dirname(cache), exist_ok=True)
    with open(cache, "w") as f:
        f.write(garbage)
    with pytest.warns(UserWarning, match="ignoring corrupt autotune cache"):
        assert not tuning.lookup(DEV)
    # writing over a corrupt file replaces it with a valid one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuning.update_cache(DEV, configs={KEY: {"config": {"a": 1}, "us": 1.0}})
    assert tuning.lookup(DEV).configs[KEY.encode()]["config"] == {"a": 1}


def test_stale_versions_are_ignored_with_a_warning(cache):
    old = dataclasses.replace(DEV, triton="3.4.0")
    tuning.update_cache(old, configs={KEY: {"config": {"a": 1}, "us": 1.0}})
    with pytest.warns(UserWarning, match="from triton 3.4.0"):
        assert not tuning.lookup(DEV)


def test_precedence_user_over_shipped_over_nothing(cache, monkeypatch):
    shipped = {"schema": 1, "devices": {"x": {"device": {**dataclasses.asdict(DEV), "triton": "3.5.0"},
                                              "configs": {KEY.encode(): {"config": {"from": "shipped"}, "us": 9.0},
                                                          dataclasses.replace(KEY, m_bucket=1).encode(): {"config": {"from": "shipped"}, "us": 9.0}},
                                              "thresholds": {"bits=4|g=128|float16": {"gemv_max_m": 2}}}}}
    assert not tuning.lookup(DEV)  # nothing anywhere: heuristics
    monkeypatch.setattr(tuning, "_shipped", lambda: [("shipped:h100.json", shipped)])
    got = tuning.lookup(DEV)
    assert got.configs[KEY.encode()]["config"] == {"from": "shipped"} and got.sources == ["shipped:h100.json"]
    tuning.update_cache(DEV, configs={KEY: {"config": {"from": "user"}, "us": 5.0}})
    got = tuning.lookup(DEV)
    assert got.configs[KEY.encode()]["config"] == {"from": "user"}
    assert got.configs[dataclasses.replace(KEY, m_bucket=1).encode()]["config"] == {"from": "shipped"}
    assert got.thresholds["bits=4|g=128|float16"]["gemv_max_m"] == 2
    assert got.sources == ["user:" + cache, "shipped:h100.json"]
    # another GPU gets nothing from the H100 files
    assert not tuning.lookup(dataclasses.replace(DEV, name="NVIDIA H200"))


def test_clear(cache):
    tuning.update_cache(DEV, configs={KEY: {"config": {}, "us": 1.0}})
    assert tuning.clear_cache() is True and tuning.clear_cache() is False
    assert not tuning.lookup(DEV)


def test_shipped_files_are_valid():
    for name, data in tuning._shipped():
        assert data["schema"] == tuning.SCHEMA, name
