"""Every Triton kernel family against the pure-torch reference.

Runs on GPU-less machines under TRITON_INTERPRET=1 (set by conftest), so shapes are small
and odd (M, N not multiples of any block; K at group multiples). The interpreter's bf16
``tl.dot`` is wrong, so bf16 is covered by bf16 weights/scales with fp32-upcast
activations; int8 activations must match the integer semantics bit for bit.
"""
import pytest
import torch

from lowbit import packing, quant
from lowbit.meta import QuantMeta, QWeight

triton = pytest.importorskip("triton")

from lowbit.kernels import dispatch  # noqa: E402
from lowbit.kernels.dequant import dequant_linear, dequantize_t, reference_linear  # noqa: E402
from lowbit.kernels.gemm import gemm, gemm_int8  # noqa: E402
from lowbit.kernels.gemm_splitk import gemm_splitk  # noqa: E402
from lowbit.kernels.gemv import gemv, gemv_int8  # noqa: E402
from lowbit.kernels.gemv_revsplitk import gemv_revsplitk  # noqa: E402
from lowbit.kernels.layout import device_weight, make_layout, plane_config, tile_k, views  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
# float32 activations on CPU (interpreter); fp16 on a GPU
ACT = torch.float16 if DEV == "cuda" else torch.float32
TOL = 2e-3 if DEV == "cuda" else 1e-5


def rel_err(out, ref):
    """Relative RMS error; NaN never passes."""
    out, ref = out.float(), ref.float()
    assert not torch.isnan(out).any(), "NaN in output"
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def assert_close(out, ref, tol=TOL):
    err = rel_err(out, ref)
    if err > tol:
        bad = ((out.float() - ref.float()).abs() > tol * ref.float().abs().max()).nonzero()[:5].tolist()
        raise AssertionError(f"rel err {err:.2e} > {tol:.0e}; first mismatches at {bad}")


def make(n, k, bits, gs, sym=False, wdtype=torch.float32, integer_zeros=True):
    """Quantize a random [n, k] weight; returns (codes, scales, zeros, DeviceWeight)."""
    w = torch.randn(n, k, dtype=wdtype)
    codes, s, z = quant.quantize_weight(w, bits, gs, symmetric=sym, method="minmax" if integer_zeros else "hqq")
    codes, s = codes.to(DEV), s.to(DEV)
    z = None if z is None else z.to(DEV)
    layout = make_layout(packing.pack(codes, bits), s, z, bits)
    dw = device_weight(layout, n, k, bits, gs or k, s.dtype, z is not None)
    return codes, s, z, dw


def poisoned(fn):
    """Runs fn; outputs come from fresh allocations, so just check every element is finite."""
    out = fn()
    assert torch.isfinite(out.float()).all()
    return out


# ---------------------------------------------------------------- layout
@pytest.mark.parametrize("bits", range(1, 9))
def test_layout_round_trip(bits):
    n, k, gs = 5, 64, 32
    codes = torch.randint(0, 1 << bits, (n, k), dtype=torch.uint8)
    s = torch.rand(n, k // gs, dtype=torch.float16)
    z = torch.rand(n, k // gs, dtype=torch.float16)
    lay = make_layout(packing.pack(codes, bits), s, z, bits)
    v = views(lay, n, k, bits, k // gs, s.dtype, True)
    assert torch.equal(v.scales, s.t()) and torch.equal(v.zeros, z.t())
    # plane p row r holds codes r*(8/w)+b at bit b*w
    rebuilt = torch.zeros(k, n, dtype=torch.int32)
    row, low = 0, 0
    for w in packing.plane_widths(bits):
        epw = 8 // w
        plane = v.codes[row : row + k * w // 8].to(torch.int32)
        for b in range(epw):
            rebuilt[b::epw] |= ((plane >> (b * w)) & ((1 << w) - 1)) << low
        row, low = row + k * w // 8, low + w
    assert torch.equal(rebuilt.t().to(torch.uint8), codes)


def test_layout_rejects_wrong_buffer():
    with pytest.raises(ValueError, match="flat uint8"):
        views(torch.zeros(10, dtype=torch.uint8), 5, 64, 4, 2, torch.float16, True)


def test_tile_k():
    assert tile_k(128, 128, 2) == 128
    assert tile_k(128, 32, 8) == 32
    assert tile_k(64, 24, 8) == 8
    assert tile_k(64, 12, 8) is None


# ---------------------------------------------------------------- float families
FLOAT_FAMILIES = {
    "gemv": lambda x, dw, b: gemv(x[:1], dw, b, block_n=16, block_k=64),
    "gemv_splitk": lambda x, dw, b: gemv(x[:1], dw, b, block_n=16, block_k=32, split_k=3),
    "gemv_revsplitk": lambda x, dw, b: gemv_revsplitk(x[:1], dw, b, block_n=16, block_k=16),
    "gemm_splitk": lambda x, dw, b: gemm_splitk(x, dw, b, block_m=16, block_n=16, block_k=32, split_k=2),
    "gemm": lambda x, dw, b: gemm(x, dw, b, block_m=16, block_n=32, block_k=32),
    "dequant_cublas": lambda x, dw, b: dequant_linear(x, dw, b, block_k=32, block_n=32),
}


@pytest.mark.parametrize("family", list(FLOAT_FAMILIES))
@pytest.mark.parametrize("bits", range(1, 9))
def test_float_families_every_width(family, bits):
    n, k, gs, m = 37, 128, 64, 5
    sym = bits in (2, 5, 8)  # symmetric on some widths (1-bit symmetric has no range)
    codes, s, z, dw = make(n, k, bits, gs, sym)
    x = torch.randn(m, k, device=DEV, dtype=ACT)
    bias = torch.randn(n, device=DEV, dtype=ACT) if bits % 2 else None
    out = poisoned(lambda: FLOAT_FAMILIES[family](x, dw, bias))
    rows = out.shape[0]
    ref = reference_linear(x[:rows], codes, s, z, bits, bias)
    assert out.shape == (rows, n) and out.dtype == x.dtype
    assert_close(out, ref)


@pytest.mark.parametrize("gs", [32, 256, None])
@pytest.mark.parametrize("family", ["gemv_revsplitk", "gemm_splitk", "gemm"])
@pytest.mark.parametrize("bits", [3, 4])
def test_group_sizes(family, bits, gs):
    n, k, m = 19, 256, 3
    codes, s, z, dw = make(n, k, bits, gs, integer_zeros=False)  # HQQ: float zeros
    x = torch.randn(m, k, device=DEV, dtype=ACT)
    if family == "gemv_revsplitk":
        out = gemv_revsplitk(x[:1], dw, None, block_n=16, block_k=64)
        x = x[:1]
    else:
        out = FLOAT_FAMILIES[family](x, dw, None)
    assert_close(out, reference_linear(x, codes, s, z, bits))


def test_k_tail_and_one_row():
    """K not a multiple of the tile (masked tail), M = 1 through the GEMM families."""
    n, k, gs, bits = 9, 96, 32, 4
    codes, s, z, dw = make(n, k, bits, gs)
    x = torch.randn(1, k, device=DEV, dtype=ACT)
    ref = reference_linear(x, codes, s, z, bits)
    assert_close(gemm_splitk(x, dw, block_m=16, block_n=16, block_k=64, split_k=2), ref)
    assert_close(gemm(x, dw, block_m=16, block_n=16, block_k=64), ref)
    assert_close(gemv(x, dw, block_n=16, block_k=64, split_k=2), ref)


@pytest.mark.parametrize("family", ["gemv_revsplitk", "gemm_splitk", "gemm"])
def test_bf16_weights_via_fp32_upcast(family):
    """bf16 model: bf16 scales/zeros in the layout; activations upcast to fp32 on CPU
    (the interpreter's bf16 dot is wrong), native bf16 on a GPU."""
    n, k, gs, bits, m = 21, 128, 32, 4, 3
    codes, s, z, dw = make(n, k, bits, gs, wdtype=torch.bfloat16)
    assert dw.scales.dtype == torch.bfloat16
    act = torch.bfloat16 if DEV == "cuda" else torch.float32
    x = torch.randn(m, k, device=DEV, dtype=torch.bfloat16).to(act)
    out = FLOAT_FAMILIES[family](x, dw, None)
    x = x[: out.shape[0]]
    ref = reference_linear(x.float(), codes, s.float(), None if z is None else z.float(), bits)
    assert_close(out, ref, tol=TOL if DEV == "cpu" else 5e-3)


@pytest.mark.parametrize("block_k", [16, 64])  # inside one group / spanning groups
def test_dequantize_matches_reference(block_k):
    n, k, gs, bits = 13, 128, 32, 5
    codes, s, z, dw = make(n, k, bits, gs)
    wt = dequantize_t(dw, torch.float32, block_k=block_k, block_n=16)
    assert torch.equal(wt.t(), quant.dequantize(codes, s, z, bits, torch.float32))


# ---------------------------------------------------------------- int8 activations (exact)
@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("kind", ["gemv", "gemm_groups", "gemm_tiles", "gemm_cuda_core"])
def test_int8_exact_every_width(bits, kind):
    n, k, gs, m = 23, 128, 64, (1 if kind == "gemv" else 5)
    sym = bits in (2, 5, 8)
    codes, s, z, dw = make(n, k, bits, gs, sym)
    x = torch.randn(m, k, device=DEV, dtype=ACT) * 3
    bias = torch.randn(n, device=DEV, dtype=ACT)
    xq, sx = quant.quantize_per_token_int8(x)
    if kind == "gemv":
        out = gemv_int8(xq, sx, dw, bias, x.dtype, block_n=16, block_k=32)
        one = gemv_int8(xq, sx, dw, bias, x.dtype, block_n=16, block_k=32, groups_per_program=0)
        assert torch.equal(one, out)
    elif kind == "gemm_groups":  # steps of one or more whole groups
        out = gemm_int8(xq, sx, dw, bias, x.dtype, block_m=16, block_n=16, block_k=32 * plane_config(bits).E)
    elif kind == "gemm_tiles":  # 32-code tiles, two to a group
        out = gemm_int8(xq, sx, dw, bias, x.dtype, block_m=16, block_n=16, block_k=32)
    else:
        out = gemm_int8(xq, sx, dw, bias, x.dtype, block_m=4, block_n=16, block_k=32)
    ref = reference_linear(x, codes, s, z, bits, bias, act="int8")
    assert torch.equal(out, ref), f"max abs diff {(out.float() - ref.float()).abs().max()}"


def test_int8_per_channel_exact():
    n, k, bits, m = 11, 256, 4, 3
    codes, s, z, dw = make(n, k, bits, None)
    x = torch.randn(m, k, device=DEV, dtype=ACT)
    xq, sx = quant.quantize_per_token_int8(x)
    ref = reference_linear(x, codes, s, z, bits, act="int8")
    assert torch.equal(gemm_int8(xq, sx, dw, None, x.dtype, block_m=16, block_n=16, block_k=64), ref)
    assert torch.equal(gemv_int8(xq[:1], sx[:1], dw, None, x.dtype, block_n=16, block_k=64), ref[:1])


@pytest.mark.parametrize("bits,block_k", [(4, 128), (3, 256), (8, 64)])
def test_int8_gemm_several_groups_a_step_exact(bits, block_k):
    """Steps of several whole groups, with a last step that runs past K (7 groups), over
    two row blocks: each group still reaches y in order, and no empty group touches y."""
    n, k, gs, m = 37, 7 * 32, 32, 17
    codes, s, z, dw = make(n, k, bits, gs, bits == 8)
    x = torch.randn(m, k, device=DEV, dtype=ACT) * 4
    bias = torch.randn(n, device=DEV, dtype=ACT)
    xq, sx = quant.quantize_per_token_int8(x)
    ref = reference_linear(x, codes, s, z, bits, bias, act="int8")
    out = gemm_int8(xq, sx, dw, bias, x.dtype, block_m=16, block_n=16, block_k=block_k)
    assert torch.equal(out, ref), f"max abs diff {(out.float() - ref.float()).abs().max()}"


@pytest.mark.parametrize("bits,block_k", [(4, 128), (2, 256), (8, 64)])
def test_int8_gemm_group_dot_exact(bits, block_k):
    """Symmetric weights, 2/4/8 groups of 32 a step in one block-diagonal dot, the last step
    past K (7 groups): the same bits as the reference and as one dot per group."""
    n, k, gs, m = 37, 7 * 32, 32, 17
    codes, s, z, dw = make(n, k, bits, gs, sym=True)
    x = torch.randn(m, k, device=DEV, dtype=ACT) * 4
    bias = torch.randn(n, device=DEV, dtype=ACT)
    xq, sx = quant.quantize_per_token_int8(x)
    ref = reference_linear(x, codes, s, z, bits, bias, act="int8")
    cfg = dict(block_m=16, block_n=16, block_k=block_k)
    assert torch.equal(gemm_int8(xq, sx, dw, bias, x.dtype, group_dot=True, **cfg), ref)
    assert torch.equal(gemm_int8(xq, sx, dw, bias, x.dtype, group_dot=False, **cfg), ref)


def test_int8_gemv_group_split_exact():
    """Many groups, several per program, columns past a block: the ordered reduction keeps
    the reference's bits."""
    n, k, gs, bits = 45, 512, 32, 4
    codes, s, z, dw = make(n, k, bits, gs)
    x = torch.randn(1, k, device=DEV, dtype=ACT) * 5
    bias = torch.randn(n, device=DEV, dtype=ACT)
    xq, sx = quant.quantize_per_token_int8(x)
    ref = reference_linear(x, codes, s, z, bits, bias, act="int8")
    for gpp in (1, 3, 0):
        assert torch.equal(gemv_int8(xq, sx, dw, bias, x.dtype, block_n=32, block_k=32, groups_per_program=gpp), ref)


# ---------------------------------------------------------------- dispatch and backend
def test_dispatch_table():
    _, _, _, dw4 = make(16, 256, 4, 128)
    _, _, _, dw8 = make(16, 256, 8, 128)
    assert dispatch.choose(1, dw4) == "gemv_words"  # single-plane width, N % 4 == 0
    assert dispatch.choose(1, dw8) == "gemv_words"
    assert dispatch.choose(1, make(16, 256, 3, 128)[3]) == "gemv_revsplitk"  # two planes
    assert dispatch.choose(1, make(18, 256, 8, 128)[3]) == "gemv_splitk"  # N % 4 != 0
    # single-plane widths with a K tile inside one group: the column-pair GEMM from M = 2 to 16,
    # the weights-left GEMM from 17 to 128
    for m in (2, 4, 16):
        assert dispatch.choose(m, dw4) == "gemm_pairs"
    for m in (17, 33, 64, 65, 128):
        assert dispatch.choose(m, dw4) == "gemm_swap"
    assert dispatch.choose(129, dw4) == "dequant_cublas"
    cfg = dispatch.config("gemm_swap", 100, dw4, torch.device("cpu"))
    assert (cfg["block_m"], cfg["block_n"], cfg["num_warps"]) == (128, 128, 8)  # 1 tile: K split instead
    _, _, _, dw3 = make(16, 256, 3, 128)  # two planes: the split-K GEMM
    assert dispatch.choose(4, dw3) == "gemm_splitk"
    assert dispatch.choose(64, dw3) == "gemm_splitk"  # 16 columns: too few tiles for the plain GEMM
    assert dispatch.choose(16, make(16, 256, 1, 64)[3]) == "gemm_splitk"  # 1-bit g64: 8-row slices
    _, _, _, wide = make(64 * 132, 64, 3, 32)
    assert dispatch.choose(64, wide) == "gemm"  # enough 64x64 tiles for a program per SM
    assert dispatch.choose(4096, dw4) == "dequant_cublas"
    old_t = dispatch.thresholds()
    try:
        dispatch.set_thresholds(dequant_min_m=1 << 30)
        assert dispatch.choose(4096, dw4) == "gemm"
    finally:
        dispatch.set_thresholds(**{f: getattr(old_t, f) for f in old_t.__dataclass_fields__})
    assert dispatch.choose(3, dw4, act="int8") == "gemm_int8"
    old = dispatch.thresholds()
    try:
        dispatch.set_thresholds(splitk_max_m=8, pairs_max_m=8, swap_max_m=0)
        assert dispatch.choose(8, dw4) == "gemm_pairs"
        assert dispatch.choose(16, dw4) == "gemm"
        dispatch.set_config("gemm", {"block_m": 32}, m=16)
        assert dispatch.config("gemm", 16, dw4, torch.device("cpu"))["block_m"] == 32
        assert dispatch.config("gemm", 300, dw4, torch.device("cpu"))["block_m"] == 128
    finally:
        dispatch.set_thresholds(**{f: getattr(old, f) for f in old.__dataclass_fields__})
    with pytest.raises(ValueError, match="unknown family"):
        dispatch.set_config("nope", {})
    with pytest.raises(ValueError, match="unknown family"):
        dispatch.set_winner("default", "x", "nope")


def test_dispatch_winners_and_width_thresholds():
    """What issue 5's autotune cache installs: per-shape winners, per-width thresholds."""
    _, _, _, dw = make(16, 256, 4, 128)
    act = str(ACT).replace("torch.", "")
    key = dispatch.shape_key(16, 256, 4, 128, act, 16)
    wkey = dispatch.width_key(4, 128, act)
    try:
        dispatch.set_winner("default", key, "gemm")
        assert dispatch.choose(16, dw, x_dtype=ACT) == "gemm"
        assert dispatch.choose(15, dw, x_dtype=ACT) == "gemm"  # same M bucket
        assert dispatch.choose(17, dw, x_dtype=ACT) == "gemm_swap"  # other M buckets: the thresholds
        assert dispatch.choose(5, dw, x_dtype=ACT) == "gemm_pairs"
        dispatch.set_thresholds(width=wkey, splitk_max_m=4, pairs_max_m=0, swap_max_m=0)
        assert dispatch.choose(8, dw, x_dtype=ACT) == "gemm"
        _, _, _, dw2 = make(16, 256, 2, 128)
        assert dispatch.choose(8, dw2, x_dtype=ACT) == "gemm_pairs"  # other widths keep the default
    finally:
        dispatch._winners.clear()
        dispatch._thresholds.pop(("default", wkey), None)


@pytest.mark.parametrize("m", [1, 7, 40, 300])
@pytest.mark.parametrize("act", ["none", "int8"])
def test_backend_linear(m, act):
    """The backend end to end (dispatch by M, cached layout and layout=None)."""
    from lowbit.backends import registered_backends
    from lowbit.backends.triton import TritonBackend

    assert "triton" in [b.name for b in registered_backends()]
    n, k, gs, bits = 29, 128, 32, 4
    codes, s, z, _ = make(n, k, bits, gs)
    meta = QuantMeta(bits=bits, group_size=gs, symmetric=False, act=act)
    qd = packing.pack(codes, bits)
    w = QWeight(qd, s, z, meta, n, k)
    be = TritonBackend()
    assert be.supports("linear", w, None) and be.supports("linear", w, torch.float16)
    assert not be.supports("embedding", w, None) and not be.supports("linear", w, torch.float64)
    wl = w._replace(layout=be.prepare(w), layout_name="triton")
    x = torch.randn(m, k, device=DEV, dtype=ACT)
    bias = torch.randn(n, device=DEV, dtype=ACT)
    ref = reference_linear(x, codes, s, z, bits, bias, act=act)
    for ww in (wl, w):
        out = be.linear(x, ww, bias)
        if act == "int8":
            assert torch.equal(out, ref)
        else:
            assert_close(out, ref)


@pytest.mark.parametrize("bits", range(1, 8))  # packed widths: 8-bit goes through gemv_splitk
def test_gemv_word_path(bits):
    """N % 4 == 0: the GEMV families read codes as 32-bit words of 4 columns."""
    n, k, gs = 36, 128, 64
    codes, s, z, dw = make(n, k, bits, gs, sym=bits in (2, 5))
    x = torch.randn(1, k, device=DEV, dtype=ACT)
    ref = reference_linear(x, codes, s, z, bits)
    assert_close(gemv_revsplitk(x, dw, None, block_n=16, block_k=16, words=True), ref)
    assert_close(gemv_revsplitk(x, dw, None, block_n=16, block_k=16, words=False), ref)


WORDS_TOL = 5e-5 if DEV == "cpu" else TOL  # fp32 in the interpreter: the ~2**-15 cancellation term shows


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("gs,split_k,block_n,rows,m", [(32, 1, 16, 4, 1), (64, 4, 32, 8, 1), (128, 3, 64, 16, 3),
                                                       (None, 2, 16, 8, 8)])
def test_gemv_words(bits, gs, split_k, block_n, rows, m):
    """Word GEMV: every single-plane width, sym/asym, groups and per-channel, K splits
    through the self-cleaning workspace (three calls: each must leave it zeroed), bias, a
    column count that is not a multiple of the block."""
    from lowbit.kernels.gemv_words import gemv_words

    n, k = 52, 512
    codes, s, z, dw = make(n, k, bits, gs, sym=bits in (2, 8))
    for _ in range(3):
        x = torch.randn(m, k, device=DEV, dtype=ACT)
        bias = torch.randn(n, device=DEV, dtype=ACT)
        out = poisoned(lambda: gemv_words(x, dw, bias, block_n=block_n, rows=rows, split_k=split_k))
        assert_close(out, reference_linear(x, codes, s, z, bits, bias), WORDS_TOL)
    ref = reference_linear(x, codes, s, z, bits)
    out = gemv_words(x, dw, None, block_n=block_n, rows=rows, split_k=split_k, prefetch=False)
    assert_close(out, ref, WORDS_TOL)
    # words staged through shared memory by the loop pipeliner
    out = gemv_words(x, dw, None, block_n=block_n, rows=rows, split_k=split_k, stages=3)
    assert_close(out, ref, WORDS_TOL)


@pytest.mark.parametrize("gs,sym,split_k,block_n,rows", [(128, False, 1, 16, 32), (32, True, 4, 32, 16),
                                                        (None, False, 2, 16, 8), (64, False, 3, 64, 32),
                                                        (256, True, 2, 16, 4)])
def test_gemv_dp4a(gs, sym, split_k, block_n, rows):
    """dp4a GEMV: against its own float64 model of the integer activation split (to fp32
    rounding: the transposes and dot products are exact) and against the float reference
    (the split's rounding, ~1e-4); K splits through the self-cleaning workspace, bias."""
    from lowbit.kernels.gemv_dp4a import gemv_dp4a, reference

    n, k = 52, 256
    codes, s, z, dw = make(n, k, 4, gs, sym=sym)
    for _ in range(3):
        x = torch.randn(1, k, device=DEV, dtype=ACT)
        bias = torch.randn(n, device=DEV, dtype=ACT)
        out = poisoned(lambda: gemv_dp4a(x, dw, bias, block_n=block_n, rows=rows, split_k=split_k))
        model = reference(x, codes, s, z, gs or k) + bias.double()
        assert_close(out, model, 1e-5 if DEV == "cpu" else TOL)
        assert_close(out, reference_linear(x, codes, s, z, 4, bias), 3e-4 if DEV == "cpu" else TOL)


def test_gemv_dp4a_rejects_and_dispatch():
    from lowbit.kernels.gemv_dp4a import gemv_dp4a

    x = torch.randn(1, 128, device=DEV, dtype=ACT)
    for bits, gs in ((8, 64), (2, 64), (4, 16)):
        with pytest.raises(ValueError, match="4-bit"):
            gemv_dp4a(x, make(8, 128, bits, gs)[3])
    dw = make(8, 128, 4, 64)[3]
    with pytest.raises(ValueError, match="rows"):
        gemv_dp4a(x, dw, rows=2)
    with pytest.raises(ValueError, match=r"x \[1, 128\]"):
        gemv_dp4a(torch.randn(2, 128, device=DEV, dtype=ACT), dw)
    assert dispatch.choose(1, dw) == "gemv_words"  # small problem: under dp4a_min_nk
    saved = dispatch.thresholds()
    try:
        dispatch.set_thresholds(dp4a_min_nk=0)
        assert dispatch.choose(1, dw) == "gemv_dp4a"
        assert dispatch.choose(2, dw) == "gemm_pairs"  # M = 1 only
        assert dispatch.choose(1, make(8, 128, 2, 64)[3]) == "gemv_words"  # 4-bit only
    finally:
        dispatch.set_thresholds(dp4a_min_nk=saved.dp4a_min_nk)


def test_gemv_words_rejects():
    from lowbit.kernels.gemv_words import gemv_words

    x = torch.randn(1, 128, device=DEV, dtype=ACT)
    with pytest.raises(ValueError, match="bits in"):
        gemv_words(x, make(8, 128, 3, 64)[3])
    with pytest.raises(ValueError, match="N % 4"):
        gemv_words(x, make(10, 128, 4, 64)[3])
    with pytest.raises(ValueError, match="expects x"):
        gemv_words(x[:, :64], make(8, 128, 4, 64)[3])
    with pytest.raises(ValueError, match="expects x"):
        gemv_words(torch.randn(9, 128, device=DEV, dtype=ACT), make(8, 128, 4, 64)[3])  # more rows than MAX_M


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("split_k", [1, 3])
def test_gemv_pipelined(bits, split_k):
    from lowbit.kernels.gemv import gemv_pipelined

    n, k, gs = 37, 192, 64
    codes, s, z, dw = make(n, k, bits, gs, sym=bits == 8)
    x = torch.randn(1, k, device=DEV, dtype=ACT)
    bias = torch.randn(n, device=DEV, dtype=ACT)
    ref = reference_linear(x, codes, s, z, bits, bias)
    assert_close(gemv_pipelined(x, dw, bias, block_n=16, block_k=32, split_k=split_k), ref)
    with pytest.raises(ValueError, match="single-plane"):
        gemv_pipelined(x, make(8, k, 3, gs)[3])


@pytest.mark.skipif(DEV == "cuda", reason="interpreter-only: CPU tensors through Triton (tests/test_triton_gpu.py covers CUDA)")
def test_lowbit_tensor_through_triton_backend():
    """End to end on a GPU-less machine: the Triton backend registered for CPU tensors (the
    interpreter runs them) serves LowBitTensor's F.linear, including the cached layout."""
    from torch import nn

    import lowbit
    from lowbit.backends import register_backend, unregister_backend, use_backend
    from lowbit.backends.triton import TritonBackend

    class CpuTriton(TritonBackend):
        name = "triton_cpu_test"
        priority = -1000  # never chosen unless forced
        device_types = ("cpu",)

        def available(self):
            return True

        def supports(self, op, w, x_dtype):
            return op == "linear" and x_dtype in (None, torch.float32) and super().supports(op, w, None)

    be = register_backend(CpuTriton())
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 40, bias=False)).eval()
        ref_model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 40, bias=False)).eval()
        ref_model.load_state_dict(model.state_dict())
        with use_backend("triton_cpu_test"):
            lowbit.quantize_(model, lowbit.WeightOnlyConfig(bits=4, group_size=16))
            assert model[0].weight.kernel_format == "triton_cpu_test"
            x = torch.randn(3, 64)
            with torch.no_grad():
                out = model(x)
        with use_backend("reference"):
            lowbit.quantize_(ref_model, lowbit.WeightOnlyConfig(bits=4, group_size=16))
            with torch.no_grad():
                ref = ref_model(x)
        assert_close(out, ref)
    finally:
        unregister_backend(be.name)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("gs,sym,split_k,block_m,block_n,m,hqq", [
    (128, False, 1, 16, 32, 1, False), (None, True, 3, 16, 64, 5, False), (64, False, 2, 16, 32, 15, True),
    (256, True, 4, 16, 32, 3, False), (128, False, 2, 16, 64, 37, False), (256, False, 4, 32, 32, 33, True)])
def test_gemm_pairs(bits, gs, sym, split_k, block_m, block_n, m, hqq):
    """Column-pair tensor-core GEMM: every single-plane width, sym/asym (integer and HQQ float
    zeros), groups and per-channel, K splits through the self-cleaning workspace (three calls:
    each must leave it zeroed), bias, odd M, N not a multiple of the block."""
    from lowbit.kernels.gemm_pairs import gemm_pairs, pairs_supported

    n, k = 54, 512
    codes, s, z, dw = make(n, k, bits, gs, sym=sym and bits > 1, integer_zeros=not hqq)  # 1-bit: no symmetric grid
    if (gs or k) < 16 * (8 // bits):  # 1-bit in groups of 64: 8-row slices, shorter than one dot
        assert not pairs_supported(dw)
        with pytest.raises(ValueError, match="1/2/4/8-bit"):
            gemm_pairs(torch.randn(m, k, device=DEV, dtype=ACT), dw)
        return
    assert pairs_supported(dw)
    for _ in range(3):
        x = torch.randn(m, k, device=DEV, dtype=ACT)
        bias = torch.randn(n, device=DEV, dtype=ACT)
        out = poisoned(lambda: gemm_pairs(x, dw, bias, block_m=block_m, block_n=block_n, block_k=128,
                                          split_k=split_k))
        assert_close(out, reference_linear(x, codes, s, z, bits, bias))


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("gs,sym,split_k,block_m,block_n,m,hqq", [
    (128, False, 1, 16, 64, 1, False), (None, True, 3, 16, 64, 5, False), (64, False, 2, 16, 128, 15, True),
    (256, True, 4, 32, 64, 3, False), (128, False, 2, 16, 64, 37, False), (256, False, 4, 32, 64, 33, True),
    (128, False, 2, 128, 64, 70, False)])
def test_gemm_swap(bits, gs, sym, split_k, block_m, block_n, m, hqq):
    """Weights-left tensor-core GEMM: every single-plane width, sym/asym (integer and HQQ float
    zeros), groups and per-channel, K splits through the self-cleaning workspace (three calls),
    bias, odd M, N not a multiple of the block (nor of 2 or 4)."""
    from lowbit.kernels.gemm_swap import gemm_swap, swap_supported

    n, k = 77, 512
    codes, s, z, dw = make(n, k, bits, gs, sym=sym and bits > 1, integer_zeros=not hqq)
    if (gs or k) < 16 * (8 // bits):
        assert not swap_supported(dw)
        with pytest.raises(ValueError, match="1/2/4/8-bit"):
            gemm_swap(torch.randn(m, k, device=DEV, dtype=ACT), dw)
        return
    assert swap_supported(dw)
    for _ in range(3):
        x = torch.randn(m, k, device=DEV, dtype=ACT)
        bias = torch.randn(n, device=DEV, dtype=ACT)
        out = poisoned(lambda: gemm_swap(x, dw, bias, block_m=block_m, block_n=block_n, block_k=128,
                                         split_k=split_k))
        assert_close(out, reference_linear(x, codes, s, z, bits, bias))


@pytest.mark.parametrize("bits,k,gs", [(4, 384, 128), (2, 320, 64), (8, 1408, 128)])
def test_gemm_swap_prep_partial_last_program(bits, k, gs):
    """K tiles not filling the activation prep's last program (masked), x a strided row view."""
    from lowbit.kernels.gemm_swap import gemm_swap

    codes, s, z, dw = make(40, k, bits, gs)
    x = torch.randn(3, k + 8, device=DEV, dtype=ACT)[:, 4 : 4 + k]
    assert_close(gemm_swap(x, dw, block_n=64), reference_linear(x, codes, s, z, bits))


def test_gemm_swap_rejects():
    from lowbit.kernels.gemm_swap import gemm_swap, swap_supported

    _, _, _, dw = make(54, 256, 3, 64)
    assert not swap_supported(dw)
    with pytest.raises(ValueError, match="1/2/4/8-bit"):
        gemm_swap(torch.randn(2, 256, device=DEV, dtype=ACT), dw)
    _, _, _, dw = make(54, 256, 4, 64)
    with pytest.raises(ValueError, match=r"x \[M, 256\]"):
        gemm_swap(torch.randn(2, 128, device=DEV, dtype=ACT), dw)
    with pytest.raises(ValueError, match="block_n"):
        gemm_swap(torch.randn(2, 256, device=DEV, dtype=ACT), dw, block_n=32)
    with pytest.raises(ValueError, match="block_m"):
        gemm_swap(torch.randn(2, 256, device=DEV, dtype=ACT), dw, block_m=24)


def test_gemm_pairs_rejects():
    from lowbit.kernels.gemm_pairs import gemm_pairs, pairs_supported

    _, _, _, dw = make(54, 256, 3, 64)
    assert not pairs_supported(dw)
    with pytest.raises(ValueError, match="1/2/4/8-bit"):
        gemm_pairs(torch.randn(2, 256, device=DEV, dtype=ACT), dw)
    _, _, _, dw = make(54, 256, 1, 64)  # 1-bit slices of 8 rows: shorter than one dot
    assert not pairs_supported(dw)
    _, _, _, dw = make(54, 256, 4, 64)
    with pytest.raises(ValueError, match=r"x \[M, 256\]"):
        gemm_pairs(torch.randn(2, 128, device=DEV, dtype=ACT), dw)
    with pytest.raises(ValueError, match="block_n"):
        gemm_pairs(torch.randn(2, 256, device=DEV, dtype=ACT), dw, block_n=48)
    with pytest.raises(ValueError, match="block_m"):
        gemm_pairs(torch.randn(2, 256, device=DEV, dtype=ACT), dw, block_m=24)


# ---------------------------------------------------------------- int8 activation quantization
@pytest.mark.parametrize("m,k", [(1, 64), (3, 200), (5, 1), (2, 3000)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_quantize_rows_int8_equals_reference(m, k, dtype):
    from lowbit.kernels.act_quant import quantize_rows_int8

    x = (torch.randn(m, k) * 3).to(dtype)
    if m > 1:
        x[1] = 0  # an all-zero row: scale 1
    if k >= 8:  # exact ties: v / s lands on .5 (round half to even), and the row's extreme
        x[0, :8] = torch.tensor([127, -127, 0.5, 1.5, 2.5, -0.5, -2.5, 63.5]).to(dtype)
    x = x.to(DEV)
    xq, sx = quantize_rows_int8(x)
    rq, rs = quant.quantize_per_token_int8(x)
    assert torch.equal(sx, rs) and torch.equal(xq, rq)
    if k >= 8:
        assert xq[0, :8].tolist() == [127, -127, 0, 2, 2, 0, -2, 64]


def test_quantize_rows_int8_strided_and_bad_input():
    from lowbit.kernels.act_quant import quantize_rows_int8

    x = torch.randn(4, 300, device=DEV)[:, ::2]  # non-unit inner stride
    xq, sx = quantize_rows_int8(x)
    rq, rs = quant.quantize_per_token_int8(x)
    assert torch.equal(sx, rs) and torch.equal(xq, rq)
    with pytest.raises(ValueError, match="2-D float"):
        quantize_rows_int8(torch.zeros(3, 4, dtype=torch.int32, device=DEV))


def test_pdl_only_where_it_can_run(monkeypatch):
    """Programmatic dependent launch needs CUDA sm_90+, inline PTX (not the interpreter) and a
    Triton with the launch option; LOWBIT_PDL=0 turns it off."""
    from lowbit.kernels.unpack import pdl

    assert not pdl(torch.device("cpu"))
    monkeypatch.setenv("LOWBIT_PDL", "0")
    assert not pdl(torch.device("cuda", 0))
