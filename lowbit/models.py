"""A small built-in Llama-style decoder for the demo, tests and benchmarks (random
weights, fixed seed, no downloads). Plain nn.Modules: quantize_ sees ordinary Linears."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LlamaConfig", "TinyLlama", "build_model", "PRESETS"]


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
}


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

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.h, self.hd)
        k = self.wk(x).view(b, t, self.kv, self.hd)
        v = self.wv(x).view(b, t, self.kv, self.hd)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        q, k, v = (y.transpose(1, 2) for y in (q, k, v))
        k = k.repeat_interleave(self.h // self.kv, dim=1)
        v = v.repeat_interleave(self.h // self.kv, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(o.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.w1 = nn.Linear(c.dim, c.hidden, bias=False)  # gate
        self.w3 = nn.Linear(c.dim, c.hidden, bias=False)  # up
        self.w2 = nn.Linear(c.hidden, c.dim, bias=False)  # down

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.attn_norm, self.mlp_norm = RMSNorm(c.dim, c.norm_eps), RMSNorm(c.dim, c.norm_eps)
        self.attn, self.mlp = Attention(c), MLP(c)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class TinyLlama(nn.Module):
    """tokens: [B, T] int64 -> logits [B, T, vocab]."""

    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.config = c
        self.embed = nn.Embedding(c.vocab, c.dim)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.lm_head = nn.Linear(c.dim, c.vocab, bias=False)
        hd = c.dim // c.n_heads
        self.register_buffer("inv_freq", 1.0 / c.rope_theta ** (torch.arange(0, hd, 2).float() / hd), persistent=False)

    def forward(self, tokens):
        t = tokens.shape[1]
        ang = torch.outer(torch.arange(t, device=tokens.device, dtype=torch.float32), self.inv_freq)
        x = self.embed(tokens)
        cos, sin = ang.cos()[None, :, None, :].to(x.dtype), ang.sin()[None, :, None, :].to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def build_model(preset: str = "demo", seed: int = 0, dtype=torch.float32, device="cpu") -> TinyLlama:
    """A randomly initialized model; weights scaled like a trained model's (std ~ 1/sqrt(fan_in))."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    g = torch.Generator().manual_seed(seed)
    model = TinyLlama(PRESETS[preset])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
    return model.to(device=device, dtype=dtype).eval()
