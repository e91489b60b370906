"""Tensor parallelism for the built-in decoders (``TinyLlama._tp_plan``) over
``torch.distributed.tensor.parallel.parallelize_module``, for float and lowbit-quantized models.

Two ways in, both ending in the same sharded model (docs/tensor_parallel.md):

* :func:`apply_tp` shards a model that is already loaded on every rank (each rank keeps a
  compact copy of its slice; the full weight is dropped when the caller drops it);
* :func:`load_sharded` builds nothing but a meta model and reads *only this rank's slices* of a
  checkpoint written by :func:`lowbit.save_file` -- the quantize -> save -> load -> shard order:
  quantize once, save the quantized checkpoint once, shard it on load for any TP size.

For a compiled decode step, :func:`localize` then swaps the DTensors for their local shards and
an explicit all-reduce after each row-wise linear.

Column-wise layers are sharded along the weight's output dim N, row-wise ones along K. A
LowBitTensor slices along N freely and along K at group boundaries (the canonical format makes
both slices byte-exact slices of the packed codes), so the local shard is itself a LowBitTensor
and the lowbit kernels run on it unchanged. Nothing here runs at ``import lowbit``.
"""
from __future__ import annotations

import json
from fnmatch import fnmatch
from typing import Optional

import torch
from torch import nn

from .meta import QuantMeta
from .packing import CHUNK
from .serialization import _dtype
from .tensor import LowBitTensor

__all__ = ["tp_plan", "apply_tp", "load_sharded", "localize", "shard_bytes", "canonical_bytes", "STYLE_DIM"]

# the weight dim each style shards (nn.Linear weight is [out_features N, in_features K])
STYLE_DIM = {"colwise": 0, "rowwise": 1}


def _match(fqn: str, pattern: str) -> bool:
    """parallelize_module's matching: dotted tokens, each an fnmatch pattern."""
    a, b = fqn.split("."), pattern.split(".")
    return len(a) == len(b) and all(fnmatch(x, y) for x, y in zip(a, b))


def tp_plan(model: nn.Module, plan: Optional[dict] = None) -> dict[str, str]:
    """Resolve ``plan`` (default ``model._tp_plan``) to {module fqn: "colwise"|"rowwise"}."""
    if getattr(model, "fused", False):
        raise ValueError(f"{type(model).__name__}: tensor parallel needs the unfused model (fuse_projections "
                         "joined q/k/v and gate/up; a column-wise shard of those would mix them)")
    plan = getattr(model, "_tp_plan", None) if plan is None else plan
    if not plan:
        raise ValueError(f"{type(model).__name__} has no _tp_plan; pass plan=")
    out: dict[str, str] = {}
    for fqn, mod in model.named_modules():
        for pattern, style in plan.items():
            if _match(fqn, pattern):
                if style not in STYLE_DIM:
                    raise ValueError(f"tp plan {pattern!r}: style {style!r} is not one of {sorted(STYLE_DIM)}")
                if not isinstance(mod, nn.Linear):
                    raise TypeError(f"tp plan {pattern!r} matches {fqn!r}, a {type(mod).__name__}, not an nn.Linear")
                out[fqn] = style
    unmatched = [p for p in plan if not any(_match(f, p) for f in out)]
    if unmatched:
        raise ValueError(f"tp plan patterns match no module: {unmatched}")
    return out


def _check_split(name: str, shape, meta: Optional[QuantMeta], dim: int, tp: int) -> None:
    """Raise a clear error unless weight ``name`` [N, K] splits evenly into ``tp`` shards on ``dim``."""
    size = shape[dim]
    if size % tp:
        raise ValueError(f"tensor parallel: {name} {list(shape)} dim {dim} ({size}) is not divisible by tp={tp}")
    if meta is not None and dim == 1:
        k, local = shape[1], shape[1] // tp
        gs = meta.group(k)
        if local % gs or (local * meta.bits) % CHUNK:
            per = " (per-channel groups cannot be split along K)" if meta.group_size is None else ""
            raise ValueError(
                f"tensor parallel: row-wise {name} {list(shape)}: K/tp = {local} is not a multiple of the "
                f"group size {gs}{per}; use a smaller group size or TP size"
            )


def _check_model(model: nn.Module, entries: dict[str, str], tp: int) -> None:
    c = getattr(model, "config", None)
    if c is not None and (c.n_heads % tp or c.n_kv_heads % tp):
        raise ValueError(f"tensor parallel: n_heads={c.n_heads} and n_kv_heads={c.n_kv_heads} must be divisible by tp={tp}")
    for fqn, style in entries.items():
        w = model.get_submodule(fqn).weight
        meta = w.meta if isinstance(w, LowBitTensor) else None
        _check_split(f"{fqn}.weight", tuple(w.shape), meta, STYLE_DIM[style], tp)
        if getattr(model.get_submodule(fqn), "bias", None) is not None:
            raise NotImplementedError(f"tensor parallel: {fqn} has a bias; the built-in plan expects bias-free linears")


def _set_local_heads(model: nn.Module, tp: int) -> None:
    """Each rank holds n_heads/tp query and n_kv_heads/tp KV heads: the attention modules
    view their (local) q/k/v outputs with these counts and size their KV caches from them."""
    c = model.config
    for mod in model.modules():
        if hasattr(mod, "kv") and hasattr(mod, "h") and hasattr(mod, "hd"):
            mod.h, mod.kv = c.n_heads // tp, c.n_kv_heads // tp
    model.tp_size = tp


def _parallelize(model: nn.Module, mesh, entries: dict[str, str]) -> nn.Module:
    """Weights are already DTensors with the plan's placements (distribute_tensor passes them
    through unchanged: no scatter, no src_data_rank, works on torch >= 2.6); this installs the
    input/output redistribution hooks of the styles."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    styles = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
    parallelize_module(model, mesh, {fqn: styles[s]() for fqn, s in entries.items()})
    _set_local_heads(model, mesh.size())
    return model.requires_grad_(False)


def _dtensor(local: torch.Tensor, mesh, dim: int) -> nn.Parameter:
    from torch.distributed.tensor import DTensor, Shard

    return nn.Parameter(DTensor.from_local(local, mesh, [Shard(dim)], run_check=False), requires_grad=False)


def apply_tp(model: nn.Module, mesh, plan: Optional[dict] = None) -> nn.Module:
    """Shard ``model`` (loaded in full on every rank, on the mesh's device type) in place with
    its ``_tp_plan`` over the 1-D ``mesh``; returns it. Float and LowBitTensor weights alike:
    each rank keeps a compact copy of its shard (not a view of the full weight)."""
    tp, rank = mesh.size(), mesh.get_local_rank()
    entries = tp_plan(model, plan)
    _check_model(model, entries, tp)
    for fqn, style in entries.items():
        mod, dim = model.get_submodule(fqn), STYLE_DIM[style]
        shard = torch.chunk(mod.weight.detach(), tp, dim=dim)[rank]
        # a chunk is a view that would keep the whole weight alive: copy it out
        local = shard.clone() if isinstance(shard, LowBitTensor) else shard.clone(memory_format=torch.contiguous_format)
        mod.weight = _dtensor(local, mesh, dim)
    return _parallelize(model, mesh, entries)


class _AllReduceAfter:
    """Forward hook of a localized row-wise linear: sum the ranks' partial outputs with torch's
    functional collective (which torch.compile traces into the graph)."""

    def __init__(self, mesh):
        self.mesh = mesh

    def __call__(self, module, args, out):
        from torch.distributed import _functional_collectives as funcol

        return funcol.all_reduce(out, "sum", self.mesh)


def localize(model: nn.Module) -> nn.Module:
    """Turn a model sharded by :func:`apply_tp` / :func:`load_sharded` into plain per-rank
    tensors, in place: every DTensor weight becomes its local shard (a LowBitTensor stays one),
    the forward hooks of those linears (parallelize_module's redistribution) are removed, and
    each row-wise linear gets one all-reduce of its output. Column-wise outputs were already local, so the math is the DTensor
    model's. For a compiled decode step: a DTensor step is host-bound at TP = 2 (every
    parameter goes through the subclass on every call; docs/tensor_parallel.md). Not
    reversible: the model no longer carries placements, so save or re-shard before this."""
    from torch.distributed.tensor import DTensor

    for fqn, mod in model.named_modules():
        w = getattr(mod, "weight", None)
        if not isinstance(w, DTensor):
            continue
        (pl,) = w.placements
        if not pl.is_shard() or pl.dim not in (0, 1):
            raise NotImplementedError(f"tp.localize: {fqn}.weight is placed {w.placements}; only the plan's "
                                      "column-wise Shard(0) and row-wise Shard(1) weights are supported")
        if getattr(mod, "bias", None) is not None:  # the built-in decoders have none
            raise NotImplementedError(f"tp.localize: {fqn} has a bias; localizing biased linears is not supported")
        for hooks in ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
                      "_forward_hooks_with_kwargs", "_forward_hooks_always_called"):
            getattr(mod, hooks, {}).clear()  # the styles' input/output redistribution
        mod.weight = nn.Parameter(w.to_local(), requires_grad=False)
        if pl.dim == 1:  # row-wise: each rank holds a partial sum
            mod.register_forward_hook(_AllReduceAfter(w.device_mesh))
    return model


def _read_header(f, path: str) -> dict:
    raw = (f.metadata() or {}).get("lowbit")
    if raw is None:
        return {"tensors": {}, "aliases": {}}
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"lowbit checkpoint {path}: corrupt lowbit metadata: {e}") from e
    if header.get("format") != "lowbit" or header.get("version") != 1:
        raise ValueError(f"lowbit checkpoint {path}: unsupported format/version {header.get('format')}/{header.get('version')}")
    return header


def _read(f, key: str, dim: Optional[int], lo: int = 0, hi: int = 0, device=None) -> torch.Tensor:
    """Tensor ``key`` of the open checkpoint, or only rows/columns [lo:hi] of ``dim``, on
    ``device`` as a compact tensor (safetensors may hand back a view of a larger buffer: the
    copy to another device takes only the view; on the CPU it is copied out)."""
    if dim is None:
        return f.get_tensor(key).to(device)
    sl = f.get_slice(key)
    t = sl[lo:hi] if dim == 0 else sl[:, lo:hi]
    if torch.device(device).type != "cpu":
        return t.to(device).contiguous()
    if not t.is_contiguous() or t.untyped_storage().nbytes() != t.numel() * t.element_size():
        t = t.clone(memory_format=torch.contiguous_format)
    return t


def load_sharded(path: str, model: nn.Module, mesh, device=None, plan: Optional[dict] = None) -> nn.Module:
    """Load a checkpoint written by :func:`lowbit.save_file` (float or quantized) into ``model``
    (built on the meta device with the checkpoint's architecture), reading from disk only this
    rank's slice of every sharded weight and all of the replicated ones; returns the model
    sharded over ``mesh`` (1-D), on ``device`` (default: the mesh's device type, current index).

    The checkpoint is the same for every TP size; nothing is scattered between ranks."""
    from safetensors import safe_open

    tp, rank = mesh.size(), mesh.get_local_rank()
    if device is None:
        device = torch.device(mesh.device_type, torch.cuda.current_device()) if mesh.device_type == "cuda" else torch.device(mesh.device_type)
    entries = tp_plan(model, plan)
    sharded = {f"{fqn}.weight": STYLE_DIM[s] for fqn, s in entries.items()}
    c = getattr(model, "config", None)
    if c is not None and (c.n_heads % tp or c.n_kv_heads % tp):
        raise ValueError(f"tensor parallel: n_heads={c.n_heads} and n_kv_heads={c.n_kv_heads} must be divisible by tp={tp}")
    sd: dict[str, torch.Tensor] = {}
    with safe_open(path, framework="pt", device="cpu") as f:
        header = _read_header(f, path)
        keys = set(f.keys())
        entries_q = {}
        for name, entry in header["tensors"].items():  # LowBitTensors: qdata, scales (, zeros)
            try:
                entries_q[name] = (QuantMeta.from_dict(entry["meta"]), _dtype(entry["dtype"]), tuple(entry["shape"]))
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise ValueError(f"lowbit checkpoint {path}: entry {name!r} is corrupt or incomplete: {e!r}") from e
        # every split is checked before any weight is read
        for name, dim in sharded.items():
            if name in entries_q:
                meta, _, shape = entries_q[name]
                _check_split(name, shape, meta, dim, tp)
            elif name in keys:
                _check_split(name, tuple(f.get_slice(name).get_shape()), None, dim, tp)
            else:
                raise ValueError(f"lowbit checkpoint {path}: missing sharded weight {name!r}")
        for name, (meta, wdtype, (n, k)) in entries_q.items():
            dim = sharded.get(name)
            parts = {p: f"{name}::{p}" for p in ("qdata", "scales", "zeros") if f"{name}::{p}" in keys}
            if "qdata" not in parts or "scales" not in parts:
                raise ValueError(f"lowbit checkpoint {path}: entry {name!r} is missing its qdata/scales")
            if dim is None:
                got = {p: _read(f, key, None, device=device) for p, key in parts.items()}
                ln, lk = n, k
            elif dim == 0:
                ln, lk = n // tp, k
                got = {p: _read(f, key, 0, rank * ln, (rank + 1) * ln, device) for p, key in parts.items()}
            else:
                ln, lk = n, k // tp
                b, gs = meta.bits, meta.group(k)
                got = {"qdata": _read(f, parts["qdata"], 1, rank * lk * b // CHUNK, (rank + 1) * lk * b // CHUNK, device)}
                for p in ("scales", "zeros"):
                    if p in parts:
                        got[p] = _read(f, parts[p], 1, rank * lk // gs, (rank + 1) * lk // gs, device)
            zeros = got.get("zeros")
            meta.check_parts(got["qdata"], got["scales"], zeros, ln, lk, where=f"lowbit checkpoint {name!r} (rank {rank}/{tp})")
            cast = lambda t: None if t is None else t.to(wdtype)  # noqa: E731
            # the kernel layout is derived on first use, on this device, for this shard
            sd[name] = LowBitTensor(got["qdata"], cast(got["scales"]), cast(zeros), meta, wdtype)
        for key in keys:
            if "::" in key:
                continue
            dim = sharded.get(key)
            if dim is None:
                sd[key] = _read(f, key, None, device=device)
            else:
                size = f.get_slice(key).get_shape()[dim] // tp
                sd[key] = _read(f, key, dim, rank * size, (rank + 1) * size, device)
        for alias, target in header.get("aliases", {}).items():
            if target not in sd:
                raise ValueError(f"lowbit checkpoint {path}: alias {alias!r} points to missing {target!r}")
            sd[alias] = sd[target]
    for name, dim in sharded.items():
        sd[name] = _dtensor(sd[name], mesh, dim)
    model.load_state_dict(sd, strict=True, assign=True)
    if hasattr(model, "init_buffers"):
        model.init_buffers(device)
    return _parallelize(model, mesh, entries)


def canonical_bytes(t: torch.Tensor) -> int:
    """Bytes of a weight's canonical form (packed codes + scales + zeros, or the float data);
    of the local shard for a DTensor."""
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        t = t.to_local()
    return t.packed_nbytes if isinstance(t, LowBitTensor) else t.numel() * t.element_size()


def _storage_bytes(t: torch.Tensor, seen: set) -> int:
    """Bytes of the storages behind a weight's canonical tensors (a view of a larger tensor
    counts the whole storage, which is what stays allocated)."""
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        t = t.to_local()
    inner = [t.qdata, t.scales, t.zeros] if isinstance(t, LowBitTensor) else [t]
    total = 0
    for x in inner:
        if x is None:
            continue
        s = x.untyped_storage()
        key = (s.data_ptr(), str(s.device))
        if key not in seen:
            seen.add(key)
            total += s.nbytes()
    return total


def shard_bytes(model: nn.Module) -> dict:
    """What this rank holds, in bytes of canonical weights (derived kernel layouts excluded):
    ``sharded`` (the local shards of the DTensor parameters), ``sharded_storage`` (the storages
    behind them: equal to ``sharded`` unless a shard is a view that keeps a full weight alive)
    and ``replicated`` (every other parameter)."""
    from torch.distributed.tensor import DTensor

    seen: set = set()
    out = {"sharded": 0, "sharded_storage": 0, "replicated": 0}
    for p in model.parameters():
        if isinstance(p, DTensor):
            out["sharded"] += canonical_bytes(p)
            out["sharded_storage"] += _storage_bytes(p, seen)
        else:
            out["replicated"] += canonical_bytes(p)
    return out
