"""Attention over a static KV cache for the built-in decoders' cached steps (grouped queries).

Not a quantization kernel: the end-to-end decode benchmark (``lowbit bench e2e``) runs every
config, bf16 included, through it, so the step is not dominated by a generic attention. PyTorch's
``scaled_dot_product_attention`` with the slot mask a static cache needs picks cuDNN's prefill
kernel on an H100: ~24 us a layer at batch 32 for ~13 MB of cache, about 5x its bytes.

One program per (sequence, KV head, query token): the ``rep`` query heads sharing that KV head
are the rows of one tile (padded to 16, the smallest ``tl.dot``), the cache is read once per KV
head and only up to the token's position (slots past it are never loaded), with an online
softmax in fp32. ``decode_attention_ref`` beside it is the pure-torch reference.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _decode_attention_kernel(
    q_ptr, k_ptr, v_ptr, pos_ptr, o_ptr, sm_scale,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_ks, stride_vb, stride_vh, stride_vs,
    stride_ob, stride_oh, stride_ot,
    REP: tl.constexpr, BR: tl.constexpr, D: tl.constexpr, BS: tl.constexpr,
):
    b = tl.program_id(0)
    g = tl.program_id(1)
    t = tl.program_id(2)
    offs_r = tl.arange(0, BR)
    offs_d = tl.arange(0, D)
    offs_s = tl.arange(0, BS)
    r_mask = offs_r < REP
    n_kv = tl.load(pos_ptr + t) + 1  # slots 0..pos of this token
    heads = g * REP + offs_r
    q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + t * stride_qt + offs_d[None, :],
                mask=r_mask[:, None], other=0.0)
    k_base = k_ptr + b * stride_kb + g * stride_kh
    v_base = v_ptr + b * stride_vb + g * stride_vh
    m_i = tl.full([BR], float("-inf"), tl.float32)
    l_i = tl.zeros([BR], tl.float32)
    acc = tl.zeros([BR, D], tl.float32)
    for s0 in range(0, n_kv, BS):
        s_mask = s0 + offs_s < n_kv
        kt = tl.load(k_base + (s0 + offs_s)[None, :] * stride_ks + offs_d[:, None], mask=s_mask[None, :], other=0.0)
        sc = tl.dot(q, kt) * sm_scale
        sc = tl.where(s_mask[None, :], sc, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(sc, 1))
        p = tl.exp(sc - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        vt = tl.load(v_base + (s0 + offs_s)[:, None] * stride_vs + offs_d[None, :], mask=s_mask[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(o_ptr + b * stride_ob + heads[:, None] * stride_oh + t * stride_ot + offs_d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=r_mask[:, None])


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, input_pos: torch.Tensor) -> int:
    """The query heads per KV head; raises on shapes the kernel cannot take."""
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape:
        raise ValueError(f"decode_attention: q [B, H, T, D] and k, v [B, KV, S, D] expected, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    b, h, t, d = q.shape
    if k.shape[0] != b or k.shape[3] != d or h % k.shape[1]:
        raise ValueError(f"decode_attention: q {tuple(q.shape)} does not match the cache {tuple(k.shape)} "
                         "(same batch and head size, query heads a multiple of the KV heads)")
    if input_pos.shape != (t,):
        raise ValueError(f"decode_attention: input_pos must be [T={t}], got {tuple(input_pos.shape)}")
    if q.dtype != k.dtype or k.dtype != v.dtype:
        raise TypeError(f"decode_attention: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    return h // k.shape[1]


def decode_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """Reference: query token ``i`` of q [B, H, T, D] attends to cache slots ``<= input_pos[i]``
    of k, v [B, KV, S, D] (query head ``h`` uses KV head ``h // (H / KV)``) -> [B, H, T, D]."""
    rep = _check(q, k, v, input_pos)
    mask = torch.arange(k.shape[2], device=q.device)[None, :] <= input_pos[:, None]
    kr, vr = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    sc = (q.float() @ kr.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    sc = sc.masked_fill(~mask, float("-inf"))
    return (sc.softmax(-1) @ vr.float()).to(q.dtype)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, input_pos: torch.Tensor,
                     block_s: int = 64, num_warps: int = 4) -> torch.Tensor:
    """Triton version of :func:`decode_attention_ref`. q may be a strided view (the last dim
    contiguous); k and v are the cache buffers; input_pos: [T] int positions on q's device."""
    rep = _check(q, k, v, input_pos)
    b, h, t, d = q.shape
    if d & (d - 1) or d < 16:
        raise ValueError(f"decode_attention: head size must be a power of two >= 16, got {d}")
    if q.stride(3) != 1 or k.stride(3) != 1 or v.stride(3) != 1:
        raise ValueError("decode_attention: the head dimension must be contiguous")
    out = torch.empty(b, h, t, d, dtype=q.dtype, device=q.device)
    br = max(16, triton.next_power_of_2(rep))
    _decode_attention_kernel[(b, k.shape[1], t)](
        q, k, v, input_pos, out, 1.0 / math.sqrt(d),
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1),
        v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        rep, br, d, block_s, num_warps=num_warps,
    )
    return out
