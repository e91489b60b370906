"""`lowbit autotune`: time every Triton kernel family and config on this GPU for the given
shapes and batch sizes, and store the winners in the per-device cache (lowbit/tuning.py).

    lowbit autotune --preset llama-3.1-8b --bits 4 --group-size 128 --batch 1,2,4,8,16,32,64,128,256,1024
    lowbit autotune --model my_model.py:build --batch 1-64
    lowbit autotune --shapes 4096x4096,14336x4096 --dtype bf16
    lowbit autotune --show | --clear

At run time the Triton backend installs what the cache holds into the kernel dispatch table
(``install``); nothing is ever tuned inside a forward pass. Under ``TRITON_INTERPRET=1`` on a
machine without a GPU the same code runs on CPU tensors (tiny shapes; used by the tests).
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch

from . import tuning

__all__ = ["PRESETS", "parse_batches", "parse_shapes", "search_space", "tune", "install", "add_parser"]

PRESETS = {
    # Llama-3.1-8B linears (N x K): q/o, fused qkv, gate/up, down, fused gate+up
    "llama-3.1-8b": [(4096, 4096), (6144, 4096), (14336, 4096), (4096, 14336), (28672, 4096)],
}
_ACTS = {"fp16": "float16", "float16": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16", "int8": "int8"}


def parse_batches(spec: str) -> list[int]:
    """'1,2,4' or '1-64' (every power of two in the range, and the ends) -> sorted M values."""
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = (int(v) for v in part.split("-", 1))
            if lo < 1 or hi < lo:
                raise ValueError(f"bad batch range {part!r}: need 1 <= lo <= hi")
            out.update(m for m in (1 << i for i in range(hi.bit_length() + 1)) if lo <= m <= hi)
            out.update((lo, hi))
        else:
            m = int(part)
            if m < 1:
                raise ValueError(f"batch sizes must be >= 1, got {m}")
            out.add(m)
    if not out:
        raise ValueError(f"no batch sizes in {spec!r}")
    return sorted(out)


def parse_shapes(spec: str) -> list[tuple[int, int]]:
    """'4096x4096,14336x4096' -> [(N, K), ...]."""
    shapes = []
    for part in spec.split(","):
        try:
            n, k = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise ValueError(f"bad shape {part!r}: expected NxK, e.g. 14336x4096") from None
        if n < 1 or k < 8 or k % 8:
            raise ValueError(f"bad shape {part!r}: N >= 1 and K a multiple of 8")
        shapes.append((n, k))
    return shapes


def shapes_from_model(spec: str) -> list[tuple[int, int]]:
    """'path/to/file.py:fn' -> the distinct (N, K) of the nn.Linear layers of fn()'s model."""
    path, _, fn = spec.rpartition(":")
    if not path or not fn:
        raise ValueError(f"--model takes FILE.py:FUNCTION, got {spec!r}")
    if not os.path.isfile(path):
        raise ValueError(f"--model: no such file {path!r}")
    mod_spec = importlib.util.spec_from_file_location("_lowbit_autotune_model", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    if not hasattr(mod, fn):
        raise ValueError(f"--model: {path} has no function {fn!r}")
    with torch.device("meta"):  # only shapes are needed: never materialize the weights
        model = getattr(mod, fn)()
    shapes = sorted({(m.out_features, m.in_features) for m in model.modules() if isinstance(m, torch.nn.Linear)})
    if not shapes:
        raise ValueError(f"--model: {spec} has no nn.Linear layers")
    return shapes


def search_space(family: str, m: int, quick: bool = False) -> list[dict]:
    """Candidate launch configs per family (``quick``: about 4-8 each). Configs a launcher
    rejects for a shape (e.g. a K tile larger than the group) are skipped by the tuner."""
    warps = (4,) if quick else (2, 4, 8)
    if family == "gemv_words":
        if m == 1:  # words staged through shared memory (the M = 1 winners on the H200)
            return [dict(block_n=bn, rows=r, split_k=s, num_warps=1, stages=st)
                    for bn in ((128,) if quick else (128, 256)) for r in ((32,) if quick else (16, 32))
                    for st in ((3,) if quick else (3, 4)) for s in ((16, 32, 64) if quick else (8, 16, 32, 64, 128))]
        return [dict(block_n=bn, rows=r, split_k=s, num_warps=1, prefetch=True)
                for bn in ((128,) if quick else (128, 256)) for r in ((16,) if quick else (8, 16))
                for s in ((16, 64) if quick else (8, 16, 32, 64, 128))]
    if family == "gemv_dp4a":
        return [dict(block_n=bn, rows=r, split_k=s, num_warps=1, stages=3)
                for bn in ((256,) if quick else (256, 512)) for r in ((16,) if quick else (16, 32))
                for s in ((16, 32) if quick else (8, 16, 32, 64))]
    if family == "gemv_revsplitk":
        bns, bks = ((64, 128, 256), (16, 32)) if quick else ((64, 128, 256), (16, 32, 64))
        return [dict(block_n=bn, block_k=bk, num_warps=w) for bn in bns for bk in bks for w in warps]
    if family in ("gemv", "gemv_splitk", "gemv_pipelined"):
        splits = (1, 4) if quick else (1, 2, 4, 8)
        bns = (64, 128) if quick else (32, 64, 128)
        return [dict(block_n=bn, block_k=bk, split_k=s, num_warps=w)
                for bn in bns for bk in ((128,) if quick else (64, 128)) for s in splits for w in warps]
    if family == "gemm_pairs":
        bms = (16,) if m <= 16 else (16, 32)  # H100: 64-row tiles and 8 warps were never the best
        return [dict(block_m=bm, block_n=bn, block_k=128, split_k=s, num_warps=4, stages=st)
                for bm in bms for bn in ((256,) if quick else (128, 256))
                for s in ((4, 16) if quick else (1, 2, 4, 8, 16, 32)) for st in ((3,) if quick else (3, 4))]
    if family == "gemm_swap" and m > 64:  # 64-128-token tiles; 8 warps put 64 weight rows on each warpgroup
        return [dict(block_m=bm, block_n=bn, block_k=128, split_k=s, num_warps=nw, stages=3)
                for bm in ((128,) if quick else (64, 128)) for bn, nw in ((64, 4), (128, 8), (256, 8))
                for s in ((1, 4) if quick else (1, 2, 4))]
    if family == "gemm_swap":
        top = max(16, min(64, 1 << (m - 1).bit_length()))
        return [dict(block_m=bm, block_n=bn, block_k=128, split_k=s, num_warps=4, stages=3)
                for bm in sorted({16, top}) for bn in ((128,) if quick else (64, 128))
                for s in ((2, 8) if quick else (1, 2, 4, 8, 16))]
    if family == "gemm_splitk":
        top = max(16, min(64, 1 << (m - 1).bit_length()))
        bms = [b for b in (16, 32, 64) if b <= top][-2:]
        return [dict(block_m=bm, block_n=bn, block_k=64, split_k=s, num_warps=4, num_stages=st)
                for bm in bms for bn in ((64,) if quick else (64, 128)) for s in ((1, 4) if quick else (1, 2, 4, 8, 16))
                for st in ((3,) if quick else (2, 3, 4))]
    if family == "gemm":
        return [dict(block_m=bm, block_n=bn, block_k=bk, group_m=8, num_warps=w, num_stages=st)
                for bm in ((64, 128) if not quick else (64, 128)) for bn in ((128,) if quick else (64, 128, 256))
                for bk in ((64,) if quick else (32, 64)) for w in ((8,) if quick else (4, 8)) for st in ((3,) if quick else (3, 4))]
    if family == "dequant_cublas":
        return [dict()]
    if family == "gemv_int8":  # groups_per_program is a launch argument: no extra compiles
        return [dict(block_n=bn, block_k=128, groups_per_program=g, num_warps=1, num_stages=st)
                for bn in ((64,) if quick else (32, 64, 128)) for g in ((2, 4) if quick else (1, 2, 4, 8))
                for st in ((2,) if quick else (2, 3))]
    if family == "gemm_int8":  # K is never split, so the tile sizes set the grid
        top = max(16, min(64, 1 << (m - 1).bit_length()))
        # group_dot only on 16-row tiles (it lost on taller ones); the launcher ignores it
        # where it does not apply (asymmetric weights, one group a step)
        return [dict(block_m=bm, block_n=bn, block_k=128, num_warps=w, num_stages=st, group_dot=gd)
                for bm in sorted({16, top}) for bn in ((32, 64) if quick else (16, 32, 64))
                for w in ((4,) if quick else (2, 4)) for st in ((3,) if quick else (3, 4))
                for gd in ((False, True) if bm == 16 else (False,))]
    raise ValueError(f"unknown family {family!r}")


def tuned_families(families: Optional[Iterable[str]] = None) -> set[str]:
    """The families a tuning run times: those asked for, else every family except the opt-in
    ones (measured faster per call but not end to end: docs/gpu_kernels.md)."""
    from lowbit.kernels import dispatch

    known = set(dispatch.FAMILIES)
    chosen = set(families) if families else known - set(dispatch.OPT_IN)
    bad = chosen - known
    if bad:
        raise ValueError(f"unknown families {sorted(bad)}; known: {sorted(known)}")
    return chosen


def families_for(m: int, act: str, available: Iterable[str]) -> list[str]:
    """GEMV families (names starting 'gemv') serve M = 1 (the word GEMV a few rows), the
    others M > 1; '*_int8' ones serve int8 activations."""
    from lowbit.kernels.dispatch import serves

    return [f for f in available if f.endswith("_int8") == (act == "int8") and serves(f, m)]


def _timer(device: torch.device) -> Callable[[list], float]:
    """Median microseconds per call of a list of callables (one per weight copy). On CUDA: the
    benchmarks' method, all copies in one CUDA graph (device time; a host-timed loop measured
    the launchers' Python overhead on small problems and picked the wrong families)."""
    if device.type == "cuda":
        from lowbit.bench.cases import time_cuda_graph

        return lambda fns: statistics.median(time_cuda_graph(fns, reps=10)[0])

    def cpu_time(fns):  # the interpreter: correctness of the machinery, not meaningful speed
        ts = []
        for _ in range(2):
            t0 = time.perf_counter()
            fns[0]()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e6

    return cpu_time


def _copies(device: torch.device, *tensors) -> int:
    """Weight copies a timing rotates over: > 4x L2 on CUDA, so weights come from memory as
    in a model; one in the interpreter."""
    if device.type != "cuda":
        return 1
    from lowbit.bench.cases import copies_for, l2_bytes, tensor_bytes

    return copies_for(sum(tensor_bytes(t) for t in tensors if t is not None), l2_bytes())


@dataclass
class TuneResult:
    n: int
    k: int
    bits: int
    group_size: int
    act: str
    m: int
    family: str
    config: dict
    us: float
    dense_us: float
    tried: int


def _problem(n, k, bits, group_size, act, device, dtype):
    from lowbit import LowBitTensor
    from lowbit.backends.triton import ensure_kernels

    ensure_kernels()
    from lowbit.kernels.layout import device_weight, make_layout

    w = torch.randn(n, k, device=device, dtype=dtype) / k**0.5
    q = LowBitTensor.from_float(w, bits, group_size, act == "int8", "minmax", "int8" if act == "int8" else "none")
    layout = make_layout(q.qdata, q.scales, q.zeros, bits)
    return w, device_weight(layout, n, k, bits, group_size, q.scales.dtype, q.zeros is not None)


def tune(shapes, bits_list, group_sizes, acts, batches, *, device=None, quick=False, progress=True,
         write=True, families: Optional[list[str]] = None, log=print) -> list[TuneResult]:
    """Time every family x config for every problem and M; write the winners to the cache."""
    from lowbit.backends.triton import ensure_kernels

    ensure_kernels()
    from lowbit.kernels import dispatch

    interpret = os.environ.get("TRITON_INTERPRET") == "1"  # the interpreter runs on CPU tensors
    device = torch.device(device or ("cuda" if torch.cuda.is_available() and not interpret else "cpu"))
    if device.type != "cuda" and not interpret:
        raise RuntimeError("lowbit autotune needs a CUDA GPU (or TRITON_INTERPRET=1 for a CPU dry run)")
    known = list(dispatch.FAMILIES)
    fam_filter = tuned_families(families)
    timer = _timer(device)
    jobs = list(itertools.product(shapes, bits_list, group_sizes, acts, batches))
    bar = _progress(len(jobs), progress)
    results: list[TuneResult] = []
    did = tuning.DeviceId.current(device) if device.type == "cuda" else tuning.DeviceId("interpreter", "0.0", "-", _version())
    configs, winners = {}, {}
    cache_key = None
    for (n, k), bits, gs, act, m in jobs:
        gsz = gs or k
        key = (n, k, bits, gsz, act)
        if key != cache_key:
            dtype = torch.bfloat16 if act == "bfloat16" else torch.float16
            if device.type != "cuda":
                dtype = torch.float32  # the interpreter's half-precision dot is not trustworthy
            w_dense, dw = _problem(n, k, bits, gsz, act, device, dtype)
            dws = [dw] + [_problem(n, k, bits, gsz, act, device, dtype)[1]
                          for _ in range(_copies(device, dw.codes, dw.scales, dw.zeros) - 1)]
            dense = [w_dense] + [torch.randn_like(w_dense) for _ in range(_copies(device, w_dense) - 1)]
            cache_key = key
        x = torch.randn(m, k, device=device, dtype=w_dense.dtype)
        dense_us = timer([lambda w=w: torch.nn.functional.linear(x, w) for w in dense])
        best: Optional[tuple[float, str, dict]] = None
        tried = 0
        for fam in families_for(m, act, [f for f in known if f in fam_filter]):
            fam_best, failed = None, []
            # what dispatch would run untuned comes first, so tuning never picks a slower config
            current = dict(dispatch.config(fam, m, dw, device))
            for cfg in [current] + [c for c in search_space(fam, m, quick) if c != current]:
                runs = [lambda d=d, cfg=cfg: dispatch.run_family(fam, x, d, None, **cfg) for d in dws]
                try:
                    runs[0]()
                except Exception as e:  # invalid for this shape/group (ValueError), or out of resources
                    failed.append(f"{cfg}: {type(e).__name__}: {str(e)[:120]}")
                    continue
                tried += 1
                us = timer(runs)
                if fam_best is None or us < fam_best[0]:
                    fam_best = (us, cfg)
            if fam_best is None:
                log(f"note: {fam} could not run N={n} K={k} bits={bits} group={gsz} M={m} with any config; "
                    f"first error: {failed[0] if failed else 'no configs'}")
                continue
            configs[tuning.TuneKey(fam, n, k, bits, gsz, act, tuning.m_bucket(m))] = {"config": fam_best[1], "us": fam_best[0]}
            if best is None or fam_best[0] < best[0]:
                best = (fam_best[0], fam, fam_best[1])
        if best is None:
            raise RuntimeError(f"no kernel family could run N={n} K={k} bits={bits} group={gsz} {act} M={m}")
        winners[tuning.shape_key(n, k, bits, gsz, act, m)] = {"family": best[1], "us": best[0], "dense_us": dense_us}
        results.append(TuneResult(n, k, bits, gsz, act, m, best[1], best[2], best[0], dense_us, tried))
        bar.update(1)
    bar.close()
    thresholds = derive_thresholds(results)
    if write:
        path = tuning.update_cache(did, configs=configs, winners=winners, thresholds=thresholds)
        log(f"wrote {len(configs)} configs, {len(winners)} winners to {path}")
    return results


def derive_thresholds(results: list[TuneResult]) -> dict:
    """Per (bits, group, act): the M ranges each family class won, as dispatch thresholds."""
    out = {}
    groups: dict[str, list[TuneResult]] = {}
    for r in results:
        groups.setdefault(tuning.width_key(r.bits, r.group_size, r.act), []).append(r)
    for wk, rs in groups.items():
        ms = sorted({r.m for r in rs})
        def wins(m, fams):  # majority over shapes at this M
            votes = [r.family in fams for r in rs if r.m == m]
            return sum(votes) * 2 > len(votes)
        gemv_max = max([m for m in ms if m == 1] or [1])
        words = [m for m in ms if wins(m, ("gemv_words",))]
        pairs = [m for m in ms if wins(m, ("gemm_pairs",))]
        swap = [m for m in ms if wins(m, ("gemm_swap",))]
        splitk_max = max([m for m in ms if m > 1 and wins(m, ("gemm_splitk",))] or [gemv_max])
        deq = [m for m in ms if wins(m, ("dequant_cublas",))]
        out[wk] = {"gemv_max_m": gemv_max, "words_max_m": max(words) if words else 0,
                   "pairs_max_m": max(pairs) if pairs else 0, "swap_max_m": max(swap) if swap else 0,
                   "splitk_max_m": splitk_max,
                   "dequant_min_m": min(deq) if deq else 1 << 30}
    return out


def install(device: torch.device, dispatch) -> tuning.DeviceTuning:
    """Load this device's tuned configs (user cache > shipped) into the kernel dispatch table.
    Called once per device by the Triton backend; reads files only, never times anything."""
    did = tuning.DeviceId.current(device)
    found = tuning.lookup(did)
    for tkey, ent in found.configs.items():
        k = tuning.TuneKey.decode(tkey)
        try:
            dispatch.set_config(k.family, ent["config"], device_name=did.name, m=k.m_bucket, n=k.n, k=k.k,
                                bits=k.bits, group_size=k.group_size)
        except ValueError as e:  # tuned for an older kernel: that entry falls back to the defaults
            tuning._warn_once(f"lowbit: ignoring the tuned config {tkey}: {e}. Re-run `lowbit autotune` for this GPU")
    for skey, ent in found.winners.items():
        dispatch.set_winner(did.name, skey, ent["family"])
    for wkey, ent in found.thresholds.items():
        fields = {f: ent[f] for f in ("gemv_max_m", "words_max_m", "pairs_max_m", "swap_max_m", "splitk_max_m",
                                           "dequant_min_m") if f in ent}
        dispatch.set_thresholds(did.name, width=wkey, **fields)
    if not found:
        tuning._warn_once(
            f"lowbit: no tuned Triton configs for {did.name} (sm {did.capability}); using heuristic defaults. "
            "Run `lowbit autotune --preset llama-3.1-8b` (or --model/--shapes) once to tune this GPU; see docs/autotune.md")
    return found


def _version() -> str:
    from . import __version__

    return __version__


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc="autotune", unit="problem", file=sys.stderr)


def _summary(results: list[TuneResult]) -> str:
    rows = [("N x K", "bits", "group", "act", "M", "family", "config", "us", "x dense", "tried")]
    for r in results:
        cfg = ",".join(f"{k}={v}" for k, v in r.config.items())
        rows.append((f"{r.n}x{r.k}", r.bits, r.group_size, r.act, r.m, r.family, cfg, f"{r.us:.1f}",
                     f"{r.dense_us / r.us:.2f}", r.tried))
    rows = [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows)


def _show() -> int:
    path = tuning.cache_path()
    data = tuning.read_cache(path)
    print(f"autotune cache: {path}" + ("" if os.path.exists(path) else " (does not exist)"))
    for dkey, dev in data["devices"].items():
        stamps = [e.get("updated", "") for e in dev.get("configs", {}).values()]
        newest = max(stamps) if stamps else "-"
        print(f"  {dkey}: {len(dev.get('configs', {}))} configs, {len(dev.get('winners', {}))} winners, "
              f"thresholds for {len(dev.get('thresholds', {}))} widths; newest {newest}")
        for wk, t in dev.get("thresholds", {}).items():
            print(f"    {wk}: " + ", ".join(f"{k}={v}" for k, v in t.items() if k != "updated"))
    if torch.cuda.is_available():
        found = tuning.lookup(tuning.DeviceId.current())
        print(f"this device ({torch.cuda.get_device_name()}): {len(found.configs)} configs from {found.sources or 'nowhere (heuristics)'}")
    shipped = [name for name, _ in tuning._shipped()]
    print(f"shipped with lowbit: {', '.join(shipped) or 'none'}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("autotune", help="tune Triton kernel configs for this GPU and cache them",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=sorted(PRESETS), help="a model's linear shapes")
    src.add_argument("--model", help="FILE.py:FUNCTION returning an nn.Module (built on the meta device)")
    src.add_argument("--shapes", help="NxK[,NxK...], e.g. 4096x4096,14336x4096")
    src.add_argument("--show", action="store_true", help="what is cached for this device, where, how old")
    src.add_argument("--clear", action="store_true", help="delete the cache file")
    p.add_argument("--bits", default="4", help="code widths, e.g. 4 or 2,3,4")
    p.add_argument("--group-size", default="128", help="group sizes, e.g. 128 or 64,128; 'none' = per-channel")
    p.add_argument("--batch", default="1,2,4,8,16,32,64", help="M values '1,2,4' or a range '1-64'")
    p.add_argument("--dtype", default="fp16", help="activations: fp16, bf16, int8 (comma list)")
    p.add_argument("--families", default=None, help="only these kernel families (comma list; opt-in ones, e.g. "
                   "gemv_dp4a, are tuned only when listed)")
    p.add_argument("--quick", action="store_true", help="a smaller search space")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=_run)


def _ints(spec: str, what: str, allow_none: bool = False) -> list:
    out = []
    for part in spec.split(","):
        part = part.strip().lower()
        if allow_none and part in ("none", "per-channel"):
            out.append(None)
            continue
        try:
            v = int(part)
        except ValueError:
            raise SystemExit(f"lowbit autotune: --{what} takes integers, got {part!r}") from None
        out.append(v)
    return out


def _run(args) -> int:
    if args.show:
        return _show()
    if args.clear:
        removed = tuning.clear_cache()
        print(f"{'removed' if removed else 'no cache at'} {tuning.cache_path()}")
        return 0
    try:
        if args.preset:
            shapes = PRESETS[args.preset]
        elif args.model:
            shapes = shapes_from_model(args.model)
        elif args.shapes:
            shapes = parse_shapes(args.shapes)
        else:
            raise ValueError("say what to tune: --preset, --model or --shapes (or --show / --clear)")
        batches = parse_batches(args.batch)
        bits = _ints(args.bits, "bits")
        for b in bits:
            if not 1 <= b <= 8:
                raise ValueError(f"--bits must be in 1..8, got {b}")
        groups = _ints(args.group_size, "group-size", allow_none=True)
        for g in groups:
            if g is not None and (g <= 0 or g % 8):
                raise ValueError(f"--group-size must be a positive multiple of 8 or 'none', got {g}")
            for n, k in shapes:
                if g is not None and k % g:
                    raise ValueError(f"--group-size {g} does not divide K={k} of shape {n}x{k}")
        acts = []
        for a in args.dtype.split(","):
            if a.strip() not in _ACTS:
                raise ValueError(f"--dtype must be one of fp16, bf16, int8, got {a!r}")
            acts.append(_ACTS[a.strip()])
        families = args.families.split(",") if args.families else None
    except ValueError as e:
        raise SystemExit(f"lowbit autotune: {e}") from None
    t0 = time.perf_counter()
    results = tune(shapes, bits, groups, acts, batches, quick=args.quick, progress=not args.no_progress, families=families)
    print(_summary(results))
    for wk, t in derive_thresholds(results).items():
        print(f"dispatch thresholds {wk}: " + ", ".join(f"{k}={v}" for k, v in t.items()))
    print(f"tuned {len(results)} problems in {time.perf_counter() - t0:.1f} s")
    return 0
