"""Custom ops (schema, fake impls, autograd) and the backend registry's plug-in contract."""
import pytest
import torch
import torch.nn.functional as F

import lowbit
from lowbit import LowBitTensor, backends
from lowbit.backends import Backend
from lowbit.packing import unpack

from helpers import rel_err


def _args(q: LowBitTensor, x, bias=None):
    m = q.meta
    return (x, q.qdata, q.scales, q.zeros, None, bias, m.bits, m.group(q.k), m.symmetric, m.act, "")


@pytest.mark.parametrize("act,sym", [("none", False), ("none", True), ("int8", True), ("int8", False)])
def test_linear_opcheck(act, sym):
    q = LowBitTensor.from_float(torch.randn(24, 128), 3, 32, sym, "minmax", act)
    x = torch.randn(5, 128, requires_grad=act == "none")
    torch.library.opcheck(torch.ops.lowbit.linear.default, _args(q, x, torch.randn(24)))


def test_embedding_opcheck():
    q = LowBitTensor.from_float(torch.randn(40, 64), 4, 32)
    idx = torch.randint(0, 40, (3, 5))
    args = (idx, q.qdata, q.scales, q.zeros, None, 4, 32, False, torch.float32, "")
    torch.library.opcheck(torch.ops.lowbit.embedding.default, args)


def test_activation_gradient_flows():
    q = LowBitTensor.from_float(torch.randn(24, 128), 4, 32)
    x = torch.randn(5, 128, requires_grad=True)
    b = torch.randn(24, requires_grad=True)
    F.linear(x, q, b).square().sum().backward()
    x2 = x.detach().clone().requires_grad_()
    b2 = b.detach().clone().requires_grad_()
    F.linear(x2, q.dequantize(), b2).square().sum().backward()
    assert rel_err(x.grad, x2.grad) < 1e-5 and rel_err(b.grad, b2.grad) < 1e-5


class UnpackedBackend(Backend):
    """A test backend with its own device layout (codes unpacked to int16), to show that a
    backend plugs in without touching the subclass: layout derived once, handed back, and
    re-derived when the canonical data changes."""

    name, priority, device_types = "test-unpacked", 10_000, ("cpu",)  # above every built-in

    def __init__(self):
        self.prepared = 0
        self.calls = []

    def supports(self, op, w, x_dtype):
        return op == "linear" and w.meta.act == "none"

    def prepare(self, w):
        self.prepared += 1
        return unpack(w.qdata, w.meta.bits, w.k).to(torch.int16)

    def linear(self, x, w, bias):
        self.calls.append(w.layout_name)
        codes = w.layout if w.layout is not None else self.prepare(w)
        deq = lowbit.dequantize(codes, w.scales, w.zeros, w.meta.bits, x.dtype)
        return F.linear(x, deq, bias)


@pytest.fixture
def plugin():
    b = backends.register_backend(UnpackedBackend())
    yield b
    backends.unregister_backend(b.name)


def test_backend_plugs_in_with_its_layout(plugin):
    q = LowBitTensor.from_float(torch.randn(24, 128), 4, 32)
    assert plugin.prepared == 1 and q.kernel_format == "test-unpacked" and q.kernel_data.dtype == torch.int16
    assert "layout=test-unpacked" in repr(q)
    x = torch.randn(3, 128)
    y = F.linear(x, q)
    assert plugin.calls == ["test-unpacked"] and plugin.prepared == 1
    assert rel_err(y, F.linear(x, q.dequantize())) < 1e-6
    # in-place loading changes the canonical data: the layout is re-derived before the next call
    new = LowBitTensor.from_float(torch.randn(24, 128), 4, 32)
    q.copy_(new)
    assert rel_err(F.linear(x, q), F.linear(x, new.dequantize())) < 1e-6
    assert plugin.prepared == 3  # new's own + q's re-derivation
    # int8 is not supported by the plug-in: another backend runs it
    q8 = LowBitTensor.from_float(torch.randn(24, 128), 4, 32, True, "minmax", "int8")
    assert q8.kernel_format != "test-unpacked"
    F.linear(x, q8)
    assert plugin.calls == ["test-unpacked", "test-unpacked"]


def test_forcing_a_backend(plugin, monkeypatch):
    q = LowBitTensor.from_float(torch.randn(24, 128), 4, 32)
    x = torch.randn(2, 128)
    with lowbit.use_backend("reference"):
        F.linear(x, q)
    assert plugin.calls == []
    monkeypatch.setenv("LOWBIT_BACKEND", "nope")
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        F.linear(x, q)
    monkeypatch.setenv("LOWBIT_BACKEND", "test-unpacked")
    q8 = LowBitTensor.from_float(torch.randn(24, 128), 4, 32, True, "minmax", "int8")
    with pytest.raises(RuntimeError, match="forced but cannot run"):
        F.linear(x, q8)


def test_reference_always_registered():
    names = [b.name for b in lowbit.registered_backends()]
    assert "reference" in names and names[-1] == "reference"


def test_eager_inference_skips_the_op_dispatcher(monkeypatch):
    """Eager no-grad calls run the op's implementation directly (same result as the op);
    autograd and dispatch modes still go through the custom op."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from lowbit import ops

    q = LowBitTensor.from_float(torch.randn(24, 128), 4, 32)
    x = torch.randn(3, 128)
    through_op = torch.ops.lowbit.linear.default(*_args(q, x))
    calls = []
    real = ops.linear

    def spy(*a):
        calls.append(1)
        return real(*a)

    monkeypatch.setattr(ops, "linear", spy)
    with torch.no_grad():
        assert torch.equal(F.linear(x, q), through_op) and not calls
    xg = x.clone().requires_grad_()
    F.linear(xg, q).sum().backward()
    assert len(calls) == 1 and xg.grad is not None
    assert not ops.eager_call_ok(torch.empty(1, device="meta"))
    with FakeTensorMode():
        assert not ops.eager_call_ok(torch.empty(1))
