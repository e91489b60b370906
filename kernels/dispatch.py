"""Pick a kernel family and its launch config for one call: by M, bits, group size, device.

The table is data, not code: :class:`Thresholds` (which family serves which M) and
per-family configs are looked up per device name, with a default measured on an H100
(docs/gpu_kernels.md has the numbers). ``set_thresholds`` / ``set_config`` override them;
issue 5's autotune cache fills them the same way. Nothing is autotuned at call time, so a
call is safe inside CUDA-graph capture and torch.compile (the op is opaque to it).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from typing import Optional

import torch

from .layout import DeviceWeight
from .gemv_revsplitk import revsplitk_block_k
from .gemm_pairs import MAX_M as PAIRS_MAX_M, pairs_supported
from .gemm_swap import swap_supported
from .gemv_dp4a import dp4a_supported
from .gemv_words import MAX_M as WORDS_MAX_M, words_supported

__all__ = ["serves", "Thresholds", "thresholds", "set_thresholds", "set_config", "set_winner", "choose", "config", "run_family",
           "linear", "FAMILIES"]

# measured faster per call but not end to end: only chosen where asked (thresholds, winners,
# ``lowbit autotune --families``)
OPT_IN = ("gemv_dp4a",)
FAMILIES = ("gemv_dp4a", "gemv_words", "gemm_pairs", "gemm_swap", "gemv", "gemv_splitk", "gemv_pipelined", "gemv_revsplitk", "gemm_splitk", "gemm", "dequant_cublas", "gemv_int8", "gemm_int8")


@dataclass(frozen=True)
class Thresholds:
    """Which family serves which batch size M (float activations).

    M = 1, 4-bit, N * K >= dp4a_min_nk (None, the default: never): the dp4a GEMV (integer dot
    products). On an H200 it beats the word GEMV per call from 14336x4096 up (28672x4096: 23.6
    vs 27.1 us) but lost end to end (Llama-3.1-8B decode at batch 1: 215 vs 233-245 tok/s in
    one process), so it is opt-in;
    M <= words_max_m and a single-plane width with N % 4 == 0: the word GEMV (CUDA cores,
    each decoded code reused by every row);
    M <= gemv_max_m: a GEMV (reverse split-K for packed widths, split-K for 8-bit);
    M <= pairs_max_m and a single-plane width (even N, a K tile inside one group): the
    column-pair tensor-core GEMM (H100, large Llama shapes: 2.0-2.4x fp16 cuBLAS at M = 2-16
    where split-K gave 1.05-1.39x);
    M <= swap_max_m, a single-plane width, a GPU with warpgroup MMA (sm_90+): the
    weights-left GEMM (H100, 5 Llama shapes: 1.21-1.83x cuBLAS at M = 32 where the pairs
    gave 0.92-1.51x, 0.93-1.64x at M = 64 (pairs 0.62-0.98x), 0.93-0.96x on the three large
    shapes at M = 128 with 128-token tiles); without it the pairs serve up to their own limit;
    M <= splitk_max_m: split-K GEMM; M < dequant_min_m: GEMM; else dequantize + cuBLAS.
    """

    gemv_max_m: int = 1
    words_max_m: int = 1
    pairs_max_m: int = 16
    swap_max_m: int = 128
    dp4a_min_nk: Optional[int] = None
    splitk_max_m: int = 127
    dequant_min_m: int = 128


_DEFAULT = "default"
# (device name, width key or None) -> thresholds; the width key is "bits=..|g=..|<act dtype>"
_thresholds: dict[tuple, Thresholds] = {(_DEFAULT, None): Thresholds()}
# (device name, family, M bucket, N, K, bits, group size) -> launch kwargs; None in a key = any
_configs: dict[tuple, dict] = {}
# (device name, shape key) -> family measured fastest for that exact problem and M bucket
_winners: dict[tuple, str] = {}


@functools.lru_cache(maxsize=None)
def _device_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


@functools.lru_cache(maxsize=None)
def _wgmma(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9


def has_wgmma(device: Optional[torch.device]) -> bool:
    """Whether the device has warpgroup MMA (Hopper and later); the CPU (the Triton
    interpreter) and an unknown device count as yes, so tests exercise the default table."""
    if device is None or device.type != "cuda":
        return True
    return _wgmma(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _dev(device: torch.device) -> tuple[str, int]:
    """(name, SM count) of a CUDA device; a CPU device (interpreter tests) maps to defaults."""
    if device.type != "cuda":
        return _DEFAULT, 132
    idx = device.index if device.index is not None else torch.cuda.current_device()
    return _device_name(idx), _sm_count(idx)


def _act_name(act: str, x_dtype: Optional[torch.dtype]) -> str:
    return "int8" if act == "int8" else str(x_dtype or torch.float16).replace("torch.", "")


def width_key(bits: int, group_size: int, act_dtype: str) -> str:
    """Same format as ``lowbit.tuning.width_key``."""
    return f"bits={bits}|g={group_size}|{act_dtype}"


def shape_key(n: int, k: int, bits: int, group_size: int, act_dtype: str, m: int) -> str:
    """Same format as ``lowbit.tuning.shape_key``."""
    return f"n={n}|k={k}|bits={bits}|g={group_size}|{act_dtype}|m={_bucket(m)}"


def thresholds(device: Optional[torch.device] = None, width: Optional[str] = None) -> Thresholds:
    """The M thresholds for a device (and optionally one width key), falling back to the
    device's general entry, then the default."""
    name = _dev(device)[0] if device is not None else _DEFAULT
    for key in ((name, width), (name, None), (_DEFAULT, width), (_DEFAULT, None)):
        if key in _thresholds:
            return _thresholds[key]
    return _thresholds[(_DEFAULT, None)]


def set_thresholds(device_name: str = _DEFAULT, *, width: Optional[str] = None, **kw) -> Thresholds:
    """Override the M thresholds for a device (by ``torch.cuda.get_device_name``), optionally
    only for one width key (``width_key(bits, group_size, act_dtype)``)."""
    base = _thresholds.get((device_name, width)) or _thresholds.get((device_name, None)) or _thresholds[(_DEFAULT, None)]
    t = dataclasses.replace(base, **kw)
    _thresholds[(device_name, width)] = t
    return t


def set_winner(device_name: str, key: str, family: str) -> None:
    """Record the family measured fastest for one problem (``shape_key(...)``) on a device;
    ``choose`` prefers it over the thresholds."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")
    _winners[(device_name, key)] = family


def _bucket(m: int) -> int:
    return 1 << (m - 1).bit_length()  # next power of two


def set_config(family: str, config: dict, *, device_name: str = _DEFAULT, m: Optional[int] = None,
               n: Optional[int] = None, k: Optional[int] = None, bits: Optional[int] = None,
               group_size: Optional[int] = None) -> None:
    """Register launch kwargs for a family (optionally only for one M bucket / shape / width)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")
    check_config(family, config)
    _configs[(device_name, family, None if m is None else _bucket(m), n, k, bits, group_size)] = dict(config)


def _lookup(name: str, family: str, m: int, w: DeviceWeight) -> dict:
    b = _bucket(m)
    for dev in (name, _DEFAULT):
        for key in ((dev, family, b, w.n, w.k, w.bits, w.group_size), (dev, family, b, None, None, w.bits, None),
                    (dev, family, b, None, None, None, None), (dev, family, None, None, None, w.bits, None),
                    (dev, family, None, None, None, None, None)):
            if key in _configs:
                return _configs[key]
    return {}


def _default_config(family: str, m: int, w: DeviceWeight, sms: int) -> dict:
    """Defaults from the H200 sweep (docs/gpu_kernels.md: `bench_gpu.py --only sweep`)."""
    if family == "gemv_words":
        rows = w.k * w.bits // 8
        if m == 1:
            # H200 sweep (benchmarks/gpu_words_probe.py, 73 configs x 5 shapes): 1 warp, 128
            # columns, 32 byte rows a step staged through shared memory (3 stages), ~64 byte
            # rows per program but at most ~32 programs per SM: within 1% of the best at
            # 4096x4096, 6144x4096, 14336x4096, 4096x14336 and 28672x4096
            blocks = -(-w.n // 128)
            split = max(1, rows // 64)
            while blocks * split > 32 * sms and split > 1 and rows // split < 256:
                split //= 2
            return dict(block_n=128, rows=32, split_k=split, num_warps=1, stages=3)
        # M > 1 (earlier sweeps): 16 byte rows with the next step prefetched into registers,
        # ~256 byte rows per program but at least ~4 programs per SM
        bn = 128
        blocks = -(-w.n // bn)
        split = max(1, rows // 256)
        while blocks * split < 4 * sms and split < 128 and rows // (2 * split) >= 32:
            split *= 2
        return dict(block_n=bn, rows=16, split_k=split, num_warps=1, prefetch=True)
    if family == "gemm_pairs":
        # H100 sweeps (benchmarks/gpu_pairs_probe.py, 3 shapes, M 1-64): 256 columns, 4 warps,
        # 3 stages, K split for ~3 programs per SM: the best or within 11% of it everywhere;
        # 16-row tiles up to M = 16, then 32 (64-row tiles and 8 warps were never the best)
        bm = 16 if m <= 16 else 32
        tiles = -(-m // bm) * -(-w.n // 256)
        return dict(block_m=bm, block_n=256, block_k=128, split_k=max(1, min(32, 3 * sms // tiles)), num_warps=4,
                    stages=3)
    if family == "gemm_swap" and m > 64:
        # H100 sweep (benchmarks/gpu_swap_probe.py --ms 128, 5 Llama shapes): 128-token tiles;
        # 64 weight rows on 4 warps where those tiles alone fill the SMs, else 128 rows on 8
        # warps (64 a warpgroup: two fp32 accumulators fit) with K split to ~1 program per SM:
        # within 12% of the best config on every shape
        if -(-m // 128) * -(-w.n // 64) >= sms:
            return dict(block_m=128, block_n=64, block_k=128, split_k=1, num_warps=4, stages=3)
        tiles = -(-m // 128) * -(-w.n // 128)
        return dict(block_m=128, block_n=128, block_k=128, split_k=max(1, min(32, sms // tiles)), num_warps=8,
                    stages=3)
    if family == "gemm_swap":
        # H100 sweep (benchmarks/gpu_swap_probe.py, 5 Llama shapes, M 8-64): 128 weight rows,
        # 4 warps, 3 stages, the activation rows in one tile, K split for ~2 programs per SM
        # (~4 with 16-row tiles): the best or within 8% of it everywhere
        bm = max(16, min(64, 1 << (m - 1).bit_length()))
        tiles = -(-m // bm) * -(-w.n // 128)
        per_sm = 4 if bm == 16 else 2
        return dict(block_m=bm, block_n=128, block_k=128, split_k=max(1, min(32, per_sm * sms // tiles)), num_warps=4,
                    stages=3)
    if family == "gemv_dp4a":
        # H200 sweep (benchmarks/gpu_words_probe.py --dp4a, 24 configs x 5 shapes): 256
        # columns, 16 byte rows a step, 3 stages, ~128 byte rows per program: the best at
        # 14336x4096, 4096x14336 and 6144x4096, within 5% at 28672x4096 and 4096x4096
        rows = w.k // 2
        blocks = -(-w.n // 256)
        split = max(1, rows // 128)
        while blocks * split < 4 * sms and rows // (2 * split) >= 32:
            split *= 2
        return dict(block_n=256, rows=16, split_k=split, num_warps=1, stages=3)
    if family == "gemv_revsplitk":
        # one warp per program, 64 columns x 2 tiles of 64 codes: best of 24 configs at
        # 4096x4096 and 14336x4096 (bigger programs lose to the per-program tail)
        return dict(block_n=64, block_k=64, num_warps=1, words=False)
    if family == "gemv_pipelined":
        return dict(block_n=32, block_k=128, split_k=8, num_warps=1)
    if family == "gemv_splitk":
        # 8-bit M=1 at 14336x4096: 32 columns, 1 warp, 8 K splits (32 us vs 47 for 64/2/auto)
        return dict(block_n=32, block_k=64, split_k=8, num_warps=1)
    if family == "gemv":
        return dict(block_n=64, block_k=128, num_warps=2)
    if family == "gemm_splitk":
        # M<=16: 16x128 tiles, ~6 programs per SM (split 8 best at 14336x4096);
        # M<=32: 32x128, ~2 per SM (split 2 best); M<=127: 64x64, ~2 per SM (split 1 at
        # 14336x4096, 4 at 4096x14336 were best)
        bm, bn, per_sm = (16, 128, 6) if m <= 16 else ((32, 128, 2) if m <= 32 else (64, 64, 2))
        tiles = -(-m // bm) * -(-w.n // bn)
        return dict(block_m=bm, block_n=bn, block_k=64, split_k=max(1, min(16, (per_sm * sms) // max(tiles, 1))),
                    num_warps=4, num_stages=2)
    if family == "gemm":
        if m <= 128:
            return dict(block_m=64, block_n=64, block_k=64, group_m=8, num_warps=4, num_stages=3)
        return dict(block_m=128, block_n=128, block_k=64, group_m=8, num_warps=4, num_stages=2)
    if family == "dequant_cublas":
        return dict(block_k=32, block_n=256, num_warps=4)  # best of 18 at M=1024
    if family == "gemv_int8":
        # H100 sweep (benchmarks/gpu_int8_probe.py, W4 g32 and W8 g128 at the fused 8B
        # shapes): 64 columns and 1 warp a program, 4 groups (8 from 256 groups up: K = 14336
        # in groups of 32); 8-bit codes like one more stage
        gpp = 8 if w.k // w.group_size >= 256 else 4
        return dict(block_n=64, block_k=128, groups_per_program=gpp, num_warps=1, num_stages=3 if w.bits == 8 else 2)
    if family == "gemm_int8":
        # same sweep and the 8B decode: K is never split (exact group order), so the tiles set
        # the grid. M <= 32: 32 columns a program below N = 16384 (64 above), 16-row tiles
        # unless the column blocks alone give 2 programs per SM (the decode at batch 32 ran
        # 4124 tok/s so against 3426 with 32-row tiles of 16 columns). M > 32: all rows in one
        # 64-row tile with 16 columns (64 from N = 16384): up to 1.9x faster than 16-row tiles
        if m <= 32:
            bn = 64 if w.n >= 16384 else 32
            bm = 16 if m <= 16 or -(-w.n // bn) < 2 * sms else 32
        else:
            bm, bn = 64, (64 if w.n >= 16384 else 16)
        # groups of 32 in one block-diagonal dot a step: 19-25% faster on 16x32 tiles, slower
        # on larger ones (the dot's tile grows with the groups; H100, group_dot_ab_h100.json)
        group_dot = bm == 16 and bn <= 32 and w.group_size <= 32
        return dict(block_m=bm, block_n=bn, block_k=128, num_warps=4, num_stages=3, group_dot=group_dot)
    return {}


def serves(family: str, m: int) -> bool:
    """Whether a family is meant for M rows: the word GEMV up to its row limit, the other
    GEMVs only M = 1, the GEMMs M > 1."""
    if family == "gemv_words":
        return m <= WORDS_MAX_M
    if family == "gemm_pairs":
        return m <= PAIRS_MAX_M  # a GEMM that also serves M = 1
    return family.startswith("gemv") == (m == 1)


def choose(m: int, w: DeviceWeight, act: str = "none", device: Optional[torch.device] = None,
           x_dtype: Optional[torch.dtype] = None) -> str:
    """The family for M rows of activations against ``w``: a measured winner for this exact
    problem if one was registered (``set_winner``), else the thresholds."""
    act_name = _act_name(act, x_dtype)
    if _winners:
        name = _dev(device)[0] if device is not None else _DEFAULT
        fam = _winners.get((name, shape_key(w.n, w.k, w.bits, w.group_size, act_name, m)))
        if fam is not None and fam.endswith("_int8") == (act == "int8") and serves(fam, m):
            return fam
    if act == "int8":
        return "gemv_int8" if m == 1 else "gemm_int8"
    t = thresholds(device, width_key(w.bits, w.group_size, act_name))
    if m == 1 and t.dp4a_min_nk is not None and w.n * w.k >= t.dp4a_min_nk and dp4a_supported(w):
        return "gemv_dp4a"
    if m <= min(t.words_max_m, WORDS_MAX_M) and words_supported(w):
        return "gemv_words"
    if m <= t.gemv_max_m:
        if w.bits < 8 and revsplitk_block_k(32, w.group_size, w.planes.E) is not None:
            return "gemv_revsplitk"
        return "gemv_splitk"
    if m <= min(t.pairs_max_m, PAIRS_MAX_M) and pairs_supported(w):
        return "gemm_pairs"
    if m <= t.swap_max_m and swap_supported(w):
        if has_wgmma(device):
            return "gemm_swap"
        if m <= PAIRS_MAX_M and pairs_supported(w):  # mma.sync only: the pairs measured well there
            return "gemm_pairs"
    if m <= t.splitk_max_m:
        if m > 32:
            # 64x64 tiles: where they alone give >= 1 program per SM, the GEMM family's grouped
            # order + 3 stages won (H200, M=64: 14336x4096 67.7 vs 79.6 us, 28672x4096 128.2 vs
            # 157.0 us); with fewer tiles split-K wins (4096x14336: 76.6 vs 167 us)
            sms = _dev(device)[1] if device is not None else 132
            if -(-m // 64) * -(-w.n // 64) >= sms and m < t.dequant_min_m:
                return "gemm"
        return "gemm_splitk"
    if m < t.dequant_min_m:
        return "gemm"
    return "dequant_cublas"


def config(family: str, m: int, w: DeviceWeight, device: torch.device) -> dict:
    """Launch kwargs: registered overrides first, then the heuristic defaults."""
    name, sms = _dev(device)
    cfg = _default_config(family, m, w, sms)
    cfg.update(_lookup(name, family, m, w))
    return cfg


def _launcher(family: str):
    """The launch function of a family (the *_int8 ones take quantized activations)."""
    from . import dequant, gemm, gemm_pairs, gemm_splitk, gemm_swap, gemv, gemv_dp4a, gemv_revsplitk, gemv_words

    fns = {
        "gemv_dp4a": gemv_dp4a.gemv_dp4a,
        "gemv_words": gemv_words.gemv_words,
        "gemv": gemv.gemv,
        "gemv_splitk": gemv.gemv,
        "gemv_pipelined": gemv.gemv_pipelined,
        "gemv_revsplitk": gemv_revsplitk.gemv_revsplitk,
        "gemm_pairs": gemm_pairs.gemm_pairs,
        "gemm_swap": gemm_swap.gemm_swap,
        "gemm_splitk": gemm_splitk.gemm_splitk,
        "gemm": gemm.gemm,
        "dequant_cublas": dequant.dequant_linear,
        "gemv_int8": gemv.gemv_int8,
        "gemm_int8": gemm.gemm_int8,
    }
    if family not in fns:
        raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")
    return fns[family]


def check_config(family: str, config: dict) -> None:
    """Raise ValueError if ``config`` has launch arguments ``family`` does not take (a config
    tuned for an older version of the kernel)."""
    params = inspect.signature(_launcher(family)).parameters
    takes = sorted(n for n, p in params.items() if p.kind == p.KEYWORD_ONLY)
    unknown = sorted(set(config) - set(takes))
    if unknown:
        raise ValueError(f"config for {family} has unknown launch arguments {unknown}; it takes {takes}")


def run_family(family: str, x: torch.Tensor, w: DeviceWeight, bias: Optional[torch.Tensor], **cfg) -> torch.Tensor:
    """Run one family by name. x: [M, K] float (or the activations before int8
    quantization for the *_int8 families) -> [M, N] x.dtype."""
    fn = _launcher(family)
    if family in ("gemv_int8", "gemm_int8"):
        from .act_quant import quantize_rows_int8

        xq, sx = quantize_rows_int8(x)  # one kernel, bit-exact to quant.quantize_per_token_int8
        return fn(xq, sx, w, bias, x.dtype, **cfg)
    return fn(x, w, bias, **cfg)


def linear(x: torch.Tensor, w: DeviceWeight, bias: Optional[torch.Tensor] = None, act: str = "none") -> torch.Tensor:
    """y = x @ W.T (+ bias) with the family the table picks. x: [M, K] contiguous -> [M, N] x.dtype."""
    m = x.shape[0]
    family = choose(m, w, act, x.device, x.dtype)
    return run_family(family, x, w, bias, **config(family, m, w, x.device))
