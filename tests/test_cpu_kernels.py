"""C++ CPU backend (csrc/, lowbit.backends.cpu): bit-exactness of the int8 kernels against
the scalar kernel and lowbit.quant.int8_linear_reference, the weight-only path against the
float reference (stated tolerance), embeddings, threading, selection and errors."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lowbit
from lowbit import packing, quant
from lowbit.backends import use_backend
from lowbit.meta import QuantMeta, QWeight

cpu = pytest.importorskip("lowbit.backends.cpu")
BACKEND = next(b for b in lowbit.registered_backends() if b.name == "cpu")
pytestmark = pytest.mark.skipif(not BACKEND.available(), reason=f"C++ CPU backend unavailable: {BACKEND.unavailable_reason()}")

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MS = (1, 2, 3, 4, 5, 8, 17, 64)
N_ODD, K = 1071, 512


def isas():
    return BACKEND.ext.available_isas()


def make_weight(n, k, bits, gs, sym, dtype, act="int8", method="minmax"):
    w = torch.randn(n, k) * (1 + torch.rand(n, 1))
    codes, s, z = quant.quantize_weight(w, bits, gs, sym, method=method, scale_dtype=dtype)
    meta = QuantMeta(bits=bits, group_size=gs, symmetric=sym, act=act)
    qw = QWeight(packing.pack(codes, bits), s, z, meta, n, k)
    return codes, qw._replace(layout=BACKEND.prepare(qw), layout_name="cpu")


def run(x, qw, bias, isa):
    old, BACKEND.isa = BACKEND.isa, isa
    try:
        return BACKEND.linear(x, qw, bias)
    finally:
        BACKEND.isa = old


def assert_bits_equal(got, want, what):
    if torch.equal(got.view(torch.uint8) if got.dtype != torch.float32 else got, want.view(torch.uint8) if want.dtype != torch.float32 else want):
        return
    d = (got.float() - want.float()).abs()
    idx = torch.nonzero(d > 0)[:5].tolist()
    raise AssertionError(f"{what}: {int((d > 0).sum())} elements differ (max {float(d.max()):.3g}); first {idx}: "
                         f"got {[float(got[i, j]) for i, j in idx]} want {[float(want[i, j]) for i, j in idx]}")


@pytest.mark.parametrize("gs", [32, 64, 128, 256, None], ids=lambda g: f"g{g}")
# symmetric 1-bit has no zero level and is rejected by the configs, so it is not a case here
@pytest.mark.parametrize("bits,sym", [(b, s) for b in range(1, 9) for s in (True, False) if not (s and b == 1)],
                         ids=lambda v: str(v) if isinstance(v, int) else ("sym" if v else "asym"))
def test_int8_linear_bit_exact(bits, sym, gs):
    dtype = DTYPES[(bits + (gs or 0) // 32) % 3]
    codes, qw = make_weight(N_ODD, K, bits, gs, sym, dtype)
    bias = torch.randn(N_ODD, dtype=dtype) if bits % 2 else None
    for m in MS:
        x = torch.randn(m, K, dtype=dtype) * 3
        want = quant.int8_linear_reference(x, codes, qw.scales, qw.zeros, bits, bias, dtype)
        scalar = run(x, qw, bias, "scalar")
        assert_bits_equal(scalar, want, f"scalar vs reference (M={m}, {dtype})")
        for isa in isas():
            if isa != "scalar":
                assert_bits_equal(run(x, qw, bias, isa), scalar, f"{isa} vs scalar (M={m}, {dtype})")


# big_k*: tiles far larger than L1; at M=1 (big_k_gemv) the kernel prefetches the activations (prefetch_x)
@pytest.mark.parametrize("out_case", ["zero_row", "tiny_n", "big_k", "big_k_gemv"])
def test_int8_linear_edges(out_case):
    bits, dtype = 4, torch.bfloat16
    n, k, m = {"zero_row": (33, 256, 3), "tiny_n": (1, 64, 5), "big_k": (40, 14336, 2),
               "big_k_gemv": (40, 14336, 1)}[out_case]
    codes, qw = make_weight(n, k, bits, 32, False, dtype)
    x = torch.randn(m, k, dtype=dtype)
    if out_case == "zero_row":
        x[1] = 0  # amax == 0: sx = 1, the row's output is exactly the bias
    bias = torch.randn(n, dtype=dtype)
    want = quant.int8_linear_reference(x, codes, qw.scales, qw.zeros, bits, bias, dtype)
    for isa in isas():
        assert_bits_equal(run(x, qw, bias, isa), want, f"{isa} {out_case}")


def test_threads_do_not_change_results():
    codes, qw = make_weight(N_ODD, K, 3, 64, False, torch.float32)
    x = torch.randn(17, K)
    n0 = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(x, qw, None, "")
        torch.set_num_threads(max(2, n0))
        many = run(x, qw, None, "")
    finally:
        torch.set_num_threads(n0)
    assert torch.equal(one, many)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("method", ["minmax", "hqq"])
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_weight_only_fp32_path(bits, method, dtype):
    """act='none' runs the fp32-activation kernels (linear_fp32act_*). Stated tolerance vs
    the float reference (dequantize in fp32, then matmul in fp32): relative RMS error
    <= 2e-6 for fp32 activations (summation order only), <= 4e-3 for bf16 (the bf16
    rounding of the output). Every ISA equals the scalar kernel bit for bit."""
    n, k = 257, 1024
    codes, qw = make_weight(n, k, bits, 128 if bits != 3 else None, False, dtype, act="none", method=method)
    for m in (1, 5, 17):
        x = torch.randn(m, k, dtype=dtype)
        bias = torch.randn(n, dtype=dtype)
        want = quant.weight_only_linear_reference(x.float(), codes, qw.scales, qw.zeros, bits, bias.float())
        scalar = run(x, qw, bias, "scalar")
        rel = float((scalar.float() - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt())
        assert rel <= (2e-6 if dtype == torch.float32 else 4e-3), f"bits={bits} {method} M={m}: relative RMS {rel:.2e}"
        for isa in isas():
            if isa != "scalar" and runs_fp32act(isa, m, dtype, bits):  # else: test_weight_only_bf16_path
                assert_bits_equal(run(x, qw, bias, isa), scalar, f"{isa} vs scalar (act=none, {method}, M={m})")


def require_bf16act():
    if "avx512bf16" not in isas():
        pytest.skip("!!! this CPU has no AVX-512 BF16: the linear_bf16act_* kernels are NOT TESTED here !!!")


def runs_fp32act(isa, m, dtype, bits):
    return BACKEND.ext.kernel_name(isa, m, True, BACKEND._dtype(dtype), bits).startswith("linear_fp32act_")


@pytest.mark.parametrize("gs", [32, 64, 128, 256, None], ids=lambda g: f"g{g}")
@pytest.mark.parametrize("bits,sym,method", [(b, s, "minmax") for b in range(1, 9) for s in (True, False) if not (s and b == 1)]
                         + [(b, False, "hqq") for b in (2, 4, 6)], ids=str)
def test_weight_only_bf16_path(bits, sym, method, gs):
    """bf16 activations, act='none', on a CPU with AVX-512 BF16: linear_bf16act_* (vdpbf16ps)
    for every width, near the float64 result (assert_near_float64)."""
    require_bf16act()
    codes, qw = make_weight(N_ODD, K, bits, gs, sym, torch.bfloat16, act="none", method=method)
    w = quant.dequantize(codes, qw.scales.double(), None if qw.zeros is None else qw.zeros.double(), bits, torch.float64)
    bias = torch.randn(N_ODD, dtype=torch.bfloat16)
    for m in MS:
        name = BACKEND.ext.kernel_name("avx512bf16", m, True, BACKEND._dtype(torch.bfloat16), bits)
        assert name.startswith("linear_bf16act_"), name
        x = torch.randn(m, K, dtype=torch.bfloat16) * 3
        assert_near_float64(run(x, qw, bias, "avx512bf16"), x, w, bias, f"{name} M={m}")


def assert_near_float64(got, x, w, bias, what):
    """Per element within one bf16 rounding of the float64 result plus 1e-5 of the terms'
    magnitude (the fp32 sums of the bf16-activation kernels)."""
    got, want = got.double(), x.double() @ w.T + bias.double()
    bound = want.abs() * 2**-8 + 1e-5 * (x.double().abs() @ w.abs().T + bias.double().abs())
    bad = (got - want).abs() > bound
    assert not bad.any(), f"{what}: {int(bad.sum())} outputs off, e.g. got {got[bad][:3].tolist()} want {want[bad][:3].tolist()}"


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_weight_only_bf16_path_long_k(bits):
    """Many groups per tile (K = 14336, 112 groups of 128) and a partial last tile (N = 40)."""
    require_bf16act()
    n, k = 40, 14336
    codes, qw = make_weight(n, k, bits, 128, False, torch.bfloat16, act="none")
    w = quant.dequantize(codes, qw.scales.double(), qw.zeros.double(), bits, torch.float64)
    bias = torch.randn(n, dtype=torch.bfloat16)
    for m in (1, 3, 9):
        x = torch.randn(m, k, dtype=torch.bfloat16)
        assert_near_float64(run(x, qw, bias, "avx512bf16"), x, w, bias, f"W{bits} K={k} M={m}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits", range(1, 9))
def test_embedding_exact(bits, dtype):
    n, k = 300, 96
    sym = bits > 1 and bits % 2 == 0
    w = torch.randn(n, k)
    codes, s, z = quant.quantize_weight(w, bits, 32 if bits != 5 else None, sym, scale_dtype=dtype)
    meta = QuantMeta(bits=bits, group_size=32 if bits != 5 else None, symmetric=sym)
    qw = QWeight(packing.pack(codes, bits), s, z, meta, n, k)
    idx = torch.randint(0, n, (3, 7))
    got = BACKEND.embedding(idx, qw, dtype)
    want = quant.dequantize(codes[idx.reshape(-1)], s[idx.reshape(-1)], None if z is None else z[idx.reshape(-1)], bits, dtype)
    assert got.shape == (3, 7, k)
    assert_bits_equal(got.reshape(-1, k), want, "embedding")
    with pytest.raises(IndexError, match="out of range"):
        BACKEND.embedding(torch.tensor([0, n]), qw, dtype)


def test_default_cpu_backend_end_to_end():
    """quantize_ + the custom op pick this backend on CPU and match the reference backend."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(256, 200), torch.nn.ReLU(), torch.nn.Linear(200, 96)).to(torch.bfloat16)
    x = torch.randn(5, 256, dtype=torch.bfloat16)
    lowbit.quantize_(model, lowbit.Int8DynamicActivationConfig(bits=4, group_size=32))
    w = model[0].weight
    assert lowbit.backends.select("linear", "cpu", w.qweight(), torch.bfloat16).name == "cpu"
    assert w.kernel_format == "cpu" and w.kernel_data is not None
    got = model(x)
    with use_backend("reference"):
        want = model(x)
    assert torch.equal(got, want)


def test_unsupported_shapes_fall_back_and_bad_zeros_raise():
    meta = QuantMeta(bits=4, group_size=16, symmetric=True, act="int8")
    qw = QWeight(torch.zeros(8, 32, dtype=torch.uint8), torch.ones(8, 4), None, meta, 8, 64)
    assert not BACKEND.supports("linear", qw, torch.float32)  # group of 16: not a multiple of 32
    assert lowbit.backends.select("linear", "cpu", qw, torch.float32).name == "reference"
    meta = QuantMeta(bits=4, group_size=32, symmetric=False, act="int8")
    qw = QWeight(torch.zeros(8, 32, dtype=torch.uint8), torch.ones(8, 2), torch.full((8, 2), 2.5), meta, 8, 64)
    with pytest.raises(ValueError, match="integer zero points"):
        BACKEND.prepare(qw)
    with pytest.raises(ValueError, match="ISA 'nope' is not available"):
        BACKEND.ext.kernel_name("nope", 1)


# a child process's start: a fixed W4 weight and input, two threads (pools are per process)
_CHILD_SETUP = f"""
import os, sys, torch, lowbit
sys.path.insert(0, {str(Path(__file__).parent)!r})
import test_cpu_kernels as t
torch.manual_seed(5)
torch.set_num_threads(2)
codes, qw = t.make_weight(t.N_ODD, t.K, 4, 32, True, torch.bfloat16)
x = torch.randn(5, t.K, dtype=torch.bfloat16)
"""


def test_parallel_regions_share_torchs_openmp_team(tmp_path):
    """Where torch runs on OpenMP, the kernels' parallel regions run on torch's own team (its
    workers spin after every torch op, and a second pool would fight them for the cores);
    LOWBIT_CPU_POOL=own selects lowbit's pool, and both give identical results."""
    if "OpenMP" in torch.__config__.parallel_info():
        assert BACKEND.ext.parallel_pool().startswith("openmp ("), BACKEND.ext.parallel_pool()
    code = _CHILD_SETUP + """
torch.save((t.BACKEND.ext.parallel_pool(), t.run(x, qw, None, "")), sys.argv[1])
"""
    outs = []
    for pool in ("own", ""):
        path = tmp_path / f"out_{pool or 'default'}.pt"
        r = subprocess.run([sys.executable, "-c", code, str(path)], env={**os.environ, "LOWBIT_CPU_POOL": pool},
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(torch.load(path))
    assert outs[0][0] == "lowbit"
    assert torch.equal(outs[0][1], outs[1][1])


def test_forked_child_runs_on_its_own_pool():
    """After fork() the parent's OpenMP team does not exist in the child (torch's own parallel
    ops hang there); the kernels switch to a fresh pool of their own and still give the
    parent's result."""
    code = _CHILD_SETUP + """
want = t.run(x, qw, None, "")
pid = os.fork()
if pid == 0:
    got = t.run(x, qw, None, "")  # two threads, no torch parallel op in the child
    print(t.BACKEND.ext.parallel_pool(), torch.equal(got, want), flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == ["lowbit", "True"], (r.stdout, r.stderr[-2000:])


def test_describe_names_the_kernels():
    lines = BACKEND.describe()
    assert any("linear_1x16x32_f32_" in line for line in lines), lines
    assert any(line.startswith("threads: ") for line in lines), lines


def test_extension_loads_lazily_and_missing_extension_is_reported(monkeypatch):
    code = "import sys, lowbit; assert 'lowbit._C_cpu' not in sys.modules; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    real_import = cpu.importlib.import_module

    def no_ext(name, *a, **k):
        if name == "lowbit._C_cpu":
            raise ImportError("simulated: not built")
        return real_import(name, *a, **k)

    monkeypatch.setattr(cpu.importlib, "import_module", no_ext)
    b = cpu.CpuBackend()
    assert not b.available() and "not built" in b.unavailable_reason()
    with pytest.raises(RuntimeError, match="not built"):
        b.ext


def test_small_problems_run_on_the_calling_thread():
    """Small linears skip the worker threads (a wake-up costs more than a second core saves);
    large ones use torch's thread count."""
    def qw(n, k):
        return QWeight(None, None, None, QuantMeta(bits=4, group_size=32, symmetric=True, act="int8"), n, k)

    assert cpu.CpuBackend._threads(1, qw(1024, 1024)) == 1
    assert cpu.CpuBackend._threads(1, qw(4096, 4096)) == torch.get_num_threads()
    assert cpu.CpuBackend._threads(64, qw(1024, 1024)) == torch.get_num_threads()
