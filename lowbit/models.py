"""Built-in Llama-style decoders for the demo, tests and benchmarks (random weights, fixed
seed, no downloads). Plain nn.Modules: quantize_ sees ordinary Linears.

Two ways to run one: ``model(tokens)`` (whole sequence, no cache) and, after
``model.setup_cache(batch, max_seq)``, ``model(tokens, input_pos)`` with a static KV cache
(prefill with ``input_pos = arange(T)``, then decode one token at a time). ``input_pos`` is a
tensor, so a compiled decode step never recompiles as the position advances."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

__all__ = ["LlamaConfig", "TinyLlama", "build_model", "preset_config", "PRESETS"]


@dataclass(frozen=True)
class LlamaConfig:
    vocab: int = 4096
    dim: int = 512
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int = 4
    hidden: int = 1536
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0


PRESETS = {
    "tiny": LlamaConfig(vocab=512, dim=128, n_layers=2, n_heads=4, n_kv_heads=2, hidden=384),
    "demo": LlamaConfig(),
    # CPU-sized decoder with Llama-3 proportions (~0.2 B parameters)
    "cpu-small": LlamaConfig(vocab=32000, dim=1024, n_layers=8, n_heads=16, n_kv_heads=4, hidden=3584, rope_theta=500000.0),
    # the shapes of Llama-3.1-8B (random weights)
    "llama-3.1-8b": LlamaConfig(vocab=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, hidden=14336, rope_theta=500000.0),
}


class KVCache(nn.Module):
    """Static cache [B, kv_heads, max_seq, head_dim]; written in place at ``input_pos``."""

    def __init__(self, batch, kv_heads, max_seq, head_dim, dtype, device):
        super().__init__()
        shape = (batch, kv_heads, max_seq, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos, k, v):
        self.k.index_copy_(2, input_pos, k)
        self.v.index_copy_(2, input_pos, v)
        return self.k, self.v


def _fused_linear(*parts: nn.Linear) -> nn.Linear:
    """One bias-free Linear whose output rows are ``parts``' rows, in order (float weights only:
    fuse before quantizing; the per-row quantization of the fused weight then equals the parts')."""
    w = [p.weight for p in parts]
    if any(is_traceable_wrapper_subclass(t) for t in w) or any(p.bias is not None for p in parts):
        raise TypeError("fuse_projections: fuse plain, bias-free Linears, before quantizing or sharding")
    fused = nn.Linear(parts[0].in_features, sum(p.out_features for p in parts), bias=False,
                      device=w[0].device, dtype=w[0].dtype)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([t.detach() for t in w]))
    return fused


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def _rope(x, cos, sin):
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.h, self.kv, self.hd = c.n_heads, c.n_kv_heads, c.dim // c.n_heads
        self.wq = nn.Linear(c.dim, self.h * self.hd, bias=False)
        self.wk = nn.Linear(c.dim, self.kv * self.hd, bias=False)
        self.wv = nn.Linear(c.dim, self.kv * self.hd, bias=False)
        self.wo = nn.Linear(self.h * self.hd, c.dim, bias=False)
        self.cache: KVCache | None = None

    def fuse(self) -> None:
        """q, k and v as one Linear ``wqkv`` (rows q | k | v): one weight read and one kernel
        launch instead of three, the k/v projections being too narrow to fill a GPU."""
        self.wqkv = _fused_linear(self.wq, self.wk, self.wv)
        del self.wq, self.wk, self.wv

    def forward(self, x, cos, sin, input_pos=None, mask=None):
        b, t, _ = x.shape
        if hasattr(self, "wqkv"):
            q, k, v = self.wqkv(x).split([self.h * self.hd, self.kv * self.hd, self.kv * self.hd], dim=-1)
        else:
            q, k, v = self.wq(x), self.wk(x), self.wv(x)
        q, k, v = q.view(b, t, self.h, self.hd), k.view(b, t, self.kv, self.hd), v.view(b, t, self.kv, self.hd)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        q, k, v = (y.transpose(1, 2) for y in (q, k, v))
        rep = self.h // self.kv
        if input_pos is None:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            k, v = self.cache.update(input_pos, k, v)
            if mask is None:  # the model chose the cache-attention kernel (TinyLlama.attention_kernel)
                from .ops import decode_attention

                return self.wo(decode_attention(q, k, v, input_pos).transpose(1, 2).reshape(b, t, -1))
            # grouped queries: the `rep` query heads of one KV head become rows of one
            # attention (mask rows repeated to match), so the cache is read once per KV head
            # instead of being copied `rep` times per step
            qg = q.reshape(b, self.kv, rep * t, self.hd)
            o = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask.repeat(rep, 1))
            o = o.reshape(b, self.h, t, self.hd)
        return self.wo(o.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.w1 = nn.Linear(c.dim, c.hidden, bias=False)  # gate
        self.w3 = nn.Linear(c.dim, c.hidden, bias=False)  # up
        self.w2 = nn.Linear(c.hidden, c.dim, bias=False)  # down

    def fuse(self) -> None:
        """gate and up as one Linear ``w13`` (rows gate | up)."""
        self.w13 = _fused_linear(self.w1, self.w3)
        del self.w1, self.w3

    def forward(self, x):
        if hasattr(self, "w13"):
            gate, up = self.w13(x).chunk(2, dim=-1)
        else:
            gate, up = self.w1(x), self.w3(x)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.attn_norm, self.mlp_norm = RMSNorm(c.dim, c.norm_eps), RMSNorm(c.dim, c.norm_eps)
        self.attn, self.mlp = Attention(c), MLP(c)

    def forward(self, x, cos, sin, input_pos=None, mask=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, input_pos, mask)
        return x + self.mlp(self.mlp_norm(x))


class TinyLlama(nn.Module):
    """tokens: [B, T] int64 -> logits [B, T, vocab]."""

    # Tensor-parallel plan, HF-style (module-name patterns -> style), applied by lowbit.tp:
    # "colwise" shards a Linear's output features (weight dim 0), "rowwise" its input features
    # (weight dim 1; the partial outputs are all-reduced). Everything not named here (embedding,
    # norms, lm_head) is replicated. Attention heads are split across ranks with q/k/v.
    _tp_plan = {
        "layers.*.attn.wq": "colwise",
        "layers.*.attn.wk": "colwise",
        "layers.*.attn.wv": "colwise",
        "layers.*.attn.wo": "rowwise",
        "layers.*.mlp.w1": "colwise",
        "layers.*.mlp.w3": "colwise",
        "layers.*.mlp.w2": "rowwise",
    }

    # cached steps on CUDA run lowbit's cache-attention kernel (kernels/attention.py) instead of
    # PyTorch's SDPA with a slot mask; False keeps SDPA everywhere (e2e ``--attention sdpa``)
    attention_kernel: bool = True
    _attention_kernel_ok: bool = False  # set by setup_cache on CUDA: triton importable

    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.config = c
        self.embed = nn.Embedding(c.vocab, c.dim)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.lm_head = nn.Linear(c.dim, c.vocab, bias=False)
        hd = c.dim // c.n_heads
        self.register_buffer("inv_freq", 1.0 / c.rope_theta ** (torch.arange(0, hd, 2).float() / hd), persistent=False)

    @property
    def fused(self) -> bool:
        """Whether :meth:`fuse_projections` has run (read off the layers, not stored twice)."""
        return len(self.layers) > 0 and hasattr(self.layers[0].attn, "wqkv")

    def fuse_projections(self) -> "TinyLlama":
        """Fuse each layer's q/k/v into ``attn.wqkv`` and gate/up into ``mlp.w13`` (in place,
        before quantizing), as serving engines do: same outputs, fewer and wider GEMMs. A fused
        model has no tensor-parallel plan (a column-wise shard of wqkv would mix q, k and v)."""
        for layer in self.layers:
            layer.attn.fuse()
            layer.mlp.fuse()
        return self

    def setup_cache(self, batch: int, max_seq: int) -> None:
        """Allocate static KV caches for ``batch`` sequences of up to ``max_seq`` tokens."""
        p = self.embed.weight
        dtype = self.norm.weight.dtype
        for layer in self.layers:  # the layer's own (per-rank, under tensor parallel) KV head count
            layer.attn.cache = KVCache(batch, layer.attn.kv, max_seq, layer.attn.hd, dtype, p.device)
        self.max_seq = max_seq
        if p.device.type == "cuda":  # decided here, outside the compiled step
            from .ops import decode_attention_available

            self._attention_kernel_ok = decode_attention_available()

    def init_buffers(self, device) -> None:
        """(Re)compute the non-persistent buffers on ``device``: needed after loading a
        checkpoint into a model built on the meta device (state_dicts do not carry them)."""
        c = self.config
        hd = c.dim // c.n_heads
        self.inv_freq = 1.0 / c.rope_theta ** (torch.arange(0, hd, 2, device=device).float() / hd)

    def forward(self, tokens, input_pos=None):
        """tokens: [B, T]; input_pos: None (no cache) or [T] int64 positions into the cache."""
        t = tokens.shape[1]
        pos = torch.arange(t, device=tokens.device) if input_pos is None else input_pos
        ang = torch.outer(pos.float(), self.inv_freq)
        x = self.embed(tokens)
        cos, sin = ang.cos()[None, :, None, :].to(x.dtype), ang.sin()[None, :, None, :].to(x.dtype)
        mask = None
        if input_pos is not None and not (self.attention_kernel and tokens.is_cuda and self._attention_kernel_ok):
            # SDPA: query i may attend to cache slots <= its position
            mask = torch.arange(self.max_seq, device=tokens.device)[None, :] <= input_pos[:, None]
        for layer in self.layers:
            x = layer(x, cos, sin, input_pos, mask)
        return self.lm_head(self.norm(x))


def preset_config(preset: str, n_layers: int | None = None) -> LlamaConfig:
    """The config of ``preset``, optionally with fewer (or more) layers."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    c = PRESETS[preset]
    return c if n_layers is None else replace(c, n_layers=n_layers)


def build_model(preset: str = "demo", seed: int = 0, dtype=torch.float32, device="cpu", n_layers: int | None = None,
                fused: bool = False) -> TinyLlama:
    """A randomly initialized model; weights scaled like a trained model's (std ~ 1/sqrt(fan_in)).
    Built directly on ``device`` in ``dtype`` (the 8B preset never exists in fp32 on the host).
    ``n_layers`` overrides the preset's depth (e.g. a shallower 8B-shaped model). ``fused``:
    :meth:`TinyLlama.fuse_projections` after initializing (the same weights as unfused)."""
    with torch.device("meta"):
        model = TinyLlama(preset_config(preset, n_layers))
    model = model.to_empty(device=device).to(dtype)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g, device=device, dtype=dtype) / p.shape[1] ** 0.5)
            else:
                p.fill_(1.0)  # RMSNorm gains
        c = model.config
        hd = c.dim // c.n_heads
        model.inv_freq = 1.0 / c.rope_theta ** (torch.arange(0, hd, 2, device=device).float() / hd)
    if fused:
        model.fuse_projections()
    return model.eval()
