"""The cache-attention kernel (kernels/attention.py) against its reference and PyTorch's SDPA,
and the built-in decoder's two attention paths against each other.

On a GPU-less machine the kernel runs in the Triton interpreter (fp32: the interpreter's
bf16 ``tl.dot`` is wrong); on a GPU, fp16 and bf16 at the 8B model's decode shapes.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import HAS_CUDA, requires_cuda

triton = pytest.importorskip("triton")

from lowbit.backends.triton import ensure_kernels  # noqa: E402

ensure_kernels()
from lowbit.kernels.attention import decode_attention, decode_attention_ref  # noqa: E402

DEV = "cuda" if HAS_CUDA else "cpu"


def sdpa(q, k, v, input_pos):
    """PyTorch's SDPA with the slot mask and repeated KV heads: an independent reference."""
    rep = q.shape[1] // k.shape[1]
    mask = torch.arange(k.shape[2], device=q.device)[None, :] <= input_pos[:, None]
    return F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(rep, 1),
                                          v.float().repeat_interleave(rep, 1), attn_mask=mask)


def case(b, h, kv, t, s, d, dtype, device, pos=None):
    # q as the model makes it: a [B, T, H, D] projection viewed as [B, H, T, D] (strided)
    q = torch.randn(b, t, h, d, dtype=dtype, device=device).transpose(1, 2)
    k = torch.randn(b, kv, s, d, dtype=dtype, device=device)
    v = torch.randn(b, kv, s, d, dtype=dtype, device=device)
    if pos is None:
        pos = torch.randint(0, s, (t,))
    return q, k, v, torch.as_tensor(pos, dtype=torch.long, device=device)


@pytest.mark.parametrize("b,h,kv,t,s,d,pos", [
    (2, 8, 2, 1, 37, 32, None),      # GQA 4, odd cache length
    (1, 6, 2, 1, 130, 64, [129]),    # rep 3 (padded rows), last slot, more than two blocks
    (3, 4, 4, 1, 20, 16, [0]),       # no grouping, only slot 0
    (2, 8, 2, 3, 50, 32, [7, 8, 9]), # several query tokens (a prefill through the cache)
    (1, 4, 1, 2, 70, 32, [69, 3]),   # all heads on one KV head, positions out of order
])
def test_decode_attention_matches_reference(b, h, kv, t, s, d, pos):
    dtype = torch.float32 if DEV == "cpu" else torch.float16
    q, k, v, ip = case(b, h, kv, t, s, d, dtype, DEV, pos)
    out = decode_attention(q, k, v, ip, block_s=16)
    ref = decode_attention_ref(q, k, v, ip)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    err = float((out.float() - ref.float()).norm() / ref.float().norm())
    assert err < tol, err
    # the reference itself against PyTorch's SDPA
    err_sdpa = float((ref.float() - sdpa(q, k, v, ip)).norm() / ref.float().norm())
    assert err_sdpa < (1e-5 if dtype == torch.float32 else 2e-3), err_sdpa


def test_decode_attention_rejects_bad_input():
    q, k, v, ip = case(1, 8, 2, 1, 16, 32, torch.float32, "cpu")
    with pytest.raises(ValueError, match="multiple of the KV heads"):
        decode_attention(q[:, :7], k, v, ip)
    with pytest.raises(ValueError, match="input_pos must be"):
        decode_attention(q, k, v, ip.repeat(2))
    with pytest.raises(TypeError, match="share a dtype"):
        decode_attention(q, k.half(), v, ip)
    with pytest.raises(ValueError, match="power of two"):
        decode_attention(q[..., :24], k[..., :24], v[..., :24], ip)


def test_model_attention_paths_agree():
    """A decoder layer's cached attention through the custom op (mask=None; on CPU the op runs
    the reference) equals its SDPA path with the slot mask, for a prefill and a decode step."""
    from lowbit.models import build_model

    model = build_model("tiny", seed=1)
    attn = model.layers[0].attn
    x = torch.randn(2, 6, model.config.dim)
    outs = {}
    for path in ("sdpa", "op"):
        model.setup_cache(2, 16)
        for pos in (torch.arange(5), torch.tensor([5])):
            xs = x[:, pos]
            ang = torch.outer(pos.float(), model.inv_freq)
            cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
            mask = torch.arange(16)[None, :] <= pos[:, None] if path == "sdpa" else None
            with torch.no_grad():
                outs[path, len(pos)] = attn(xs, cos, sin, pos, mask)
    for t in (5, 1):
        torch.testing.assert_close(outs["op", t], outs["sdpa", t], atol=1e-5, rtol=1e-4)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("b,t", [(1, 1), (32, 1), (4, 32)])
def test_decode_attention_gpu_8b_shapes(dtype, b, t):
    q, k, v, ip = case(b, 32, 8, t, 101, 128, dtype, "cuda", pos=list(range(60, 60 + t)))
    out = torch.ops.lowbit.decode_attention(q, k, v, ip)
    ref = sdpa(q, k, v, ip)
    torch_err = float((sdpa(q, k, v, ip).to(dtype).float() - ref).norm() / ref.norm())
    err = float((out.float() - ref).norm() / ref.norm())
    assert err <= max(2e-3 if dtype == torch.float16 else 8e-3, 2 * torch_err), err
    assert math.isfinite(err)


@requires_cuda
def test_cached_decode_on_cuda_equals_full_forward():
    """On CUDA the cached steps run the kernel; the whole-sequence forward runs causal SDPA."""
    from lowbit.models import build_model

    m = build_model("tiny", seed=3, dtype=torch.float16, device="cuda")
    tok = torch.randint(0, m.config.vocab, (2, 11), device="cuda")
    with torch.no_grad():
        full = m(tok)
        m.setup_cache(2, 16)
        outs = [m(tok[:, :7], torch.arange(7, device="cuda"))]
        outs += [m(tok[:, i : i + 1], torch.tensor([i], device="cuda")) for i in range(7, 11)]
    got = torch.cat(outs, 1).float()
    assert float((got - full.float()).norm() / full.float().norm()) < 5e-3


def test_e2e_rejects_unknown_attention():
    from lowbit.bench.e2e import run_config

    with pytest.raises(ValueError, match="attention must be"):
        run_config("tiny", "bf16", batch=1, device="cpu", attention="flash")


def test_decode_attention_without_triton_is_a_clear_error(monkeypatch):
    """No importable kernels: the op says it needs triton, and the decoder keeps SDPA."""
    import lowbit.ops as ops
    from lowbit.backends import triton as tb

    def broken():
        raise ImportError("No module named 'triton'")

    monkeypatch.setattr(tb, "ensure_kernels", broken)
    ops.decode_attention_available.cache_clear()
    try:
        assert not ops.decode_attention_available()
        q, k, v, ip = case(1, 4, 2, 1, 8, 16, torch.float32, "cpu")
        with pytest.raises(RuntimeError, match="needs triton"):
            torch.ops.lowbit.decode_attention(q, k, v, ip)
    finally:
        ops.decode_attention_available.cache_clear()
