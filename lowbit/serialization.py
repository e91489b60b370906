"""safetensors save/load of quantized models: plain tensors + JSON metadata, no pickle.

Each LowBitTensor ``name`` is stored as ``name::qdata``, ``name::scales`` (and
``name::zeros``); the header's ``lowbit`` entry is JSON with each one's QuantMeta, dtype
and shape. Tied tensors are stored once and recorded as aliases.
"""
from __future__ import annotations

import json
from typing import Optional, Union

import torch
from torch import nn

from .meta import QuantMeta
from .tensor import LowBitTensor

__all__ = ["save_file", "load_file"]

_FORMAT_VERSION = 1
_SEP = "::"


def _dtype_name(d: torch.dtype) -> str:
    return str(d).removeprefix("torch.")


def _dtype(name: str) -> torch.dtype:
    d = getattr(torch, name, None)
    if not isinstance(d, torch.dtype) or not d.is_floating_point:
        raise ValueError(f"lowbit checkpoint: invalid dtype {name!r} in metadata")
    return d


def _identity(t: torch.Tensor) -> tuple:
    base = t.qdata if isinstance(t, LowBitTensor) else t
    return (type(t).__name__, base.untyped_storage().data_ptr(), base.storage_offset(),
            tuple(t.shape), tuple(base.stride()), t.dtype, str(base.device))


def _refuse_unwrapped(model, where: str) -> None:
    from .unwrap import is_unwrapped

    if isinstance(model, nn.Module) and is_unwrapped(model):
        raise ValueError(f"{where}: the model's weights are unwrapped by lowbit.unwrap_for_compile (plain inner "
                         "tensors under parametrize names); call lowbit.rewrap(model) first")


def save_file(model_or_state_dict: Union[nn.Module, dict], path: str, metadata: Optional[dict] = None) -> None:
    """Write a (quantized) model's state_dict to ``path`` in safetensors format."""
    from safetensors.torch import save_file as st_save

    _refuse_unwrapped(model_or_state_dict, "save_file")
    sd = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module) else model_or_state_dict
    tensors: dict[str, torch.Tensor] = {}
    info: dict[str, dict] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, t in sd.items():
        if _SEP in name:
            raise ValueError(f"state_dict key {name!r} contains {_SEP!r}, which lowbit reserves")
        key = _identity(t)
        if key in seen:  # tied: state_dict() detaches, so compare the data, not the objects
            aliases[name] = seen[key]
            continue
        seen[key] = name
        if key[1] in storages and not isinstance(t, LowBitTensor):
            t = t.clone()  # a different view of storage already saved: safetensors needs its own copy
        storages.add(key[1])
        if isinstance(t, LowBitTensor):
            if t.meta.transposed:
                raise ValueError(f"{name}: cannot save a transposed LowBitTensor")
            tensors[f"{name}{_SEP}qdata"] = t.qdata.contiguous()
            tensors[f"{name}{_SEP}scales"] = t.scales.contiguous()
            if t.zeros is not None:
                tensors[f"{name}{_SEP}zeros"] = t.zeros.contiguous()
            info[name] = {"meta": t.meta.to_dict(), "dtype": _dtype_name(t.dtype), "shape": list(t.shape)}
        else:
            tensors[name] = t.detach().contiguous()
    header = {"format": "lowbit", "version": _FORMAT_VERSION, "tensors": info, "aliases": aliases}
    st_save(tensors, path, metadata={**(metadata or {}), "lowbit": json.dumps(header)})


def _rebuild(name: str, entry: dict, flat: dict) -> LowBitTensor:
    try:
        meta = QuantMeta.from_dict(entry["meta"])
        dtype = _dtype(entry["dtype"])
        shape = tuple(entry["shape"])
        qdata, scales = flat.pop(f"{name}{_SEP}qdata"), flat.pop(f"{name}{_SEP}scales")
        zeros = flat.pop(f"{name}{_SEP}zeros", None)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"lowbit checkpoint: entry {name!r} is corrupt or incomplete: {e!r}") from e
    meta.check_parts(qdata, scales, zeros, shape[0], shape[1], where=f"lowbit checkpoint {name!r}")
    t = LowBitTensor(qdata, scales.to(dtype), None if zeros is None else zeros.to(dtype), meta, dtype)
    t.refresh_kernel_data()
    return t


def load_file(path: str, model: Optional[nn.Module] = None, device: Union[str, torch.device] = "cpu", strict: bool = True):
    """Read a file written by :func:`save_file`.

    Returns the state_dict (LowBitTensors rebuilt on ``device``), or, when ``model`` is
    given, loads it into the model with ``load_state_dict(assign=True)`` (so a model built on
    the meta device, or a float model, takes the quantized weights) and returns the model.
    """
    from safetensors import safe_open

    with safe_open(path, framework="pt", device=str(device)) as f:
        raw = (f.metadata() or {}).get("lowbit")
        flat = {k: f.get_tensor(k) for k in f.keys()}
    if raw is None:
        header = {"tensors": {}, "aliases": {}}
    else:
        try:
            header = json.loads(raw)
            if header.get("format") != "lowbit" or header.get("version") != _FORMAT_VERSION:
                raise ValueError(f"unsupported format/version {header.get('format')}/{header.get('version')}")
        except (json.JSONDecodeError, AttributeError, ValueError) as e:
            raise ValueError(f"lowbit checkpoint {path}: corrupt lowbit metadata: {e}") from e
    sd = {name: _rebuild(name, entry, flat) for name, entry in header["tensors"].items()}
    leftover = [k for k in flat if _SEP in k]
    if leftover:
        raise ValueError(f"lowbit checkpoint {path}: tensors without metadata: {leftover[:5]}")
    sd.update(flat)
    for alias, target in header.get("aliases", {}).items():
        if target not in sd:
            raise ValueError(f"lowbit checkpoint {path}: alias {alias!r} points to missing {target!r}")
        sd[alias] = sd[target]
    if model is None:
        return sd
    _refuse_unwrapped(model, "load_file")
    model.load_state_dict(sd, strict=strict, assign=True)
    return model
