"""The autotune cache: measured kernel configs and dispatch thresholds, per device.

A JSON file (``LOWBIT_AUTOTUNE_CACHE``, else ``<cache dir>/autotune.json``; the cache dir is
``LOWBIT_CACHE_DIR`` or platformdirs' user cache dir). Layout::

    {"schema": 1,
     "devices": {"<device key>": {
         "device": {"name": ..., "capability": "9.0", "triton": ..., "lowbit": ...},
         "configs":    {"<tune key>": {"config": {...}, "us": 12.3, "updated": "<iso time>"}},
         "winners":    {"<shape key>": {"family": "gemv_revsplitk", "us": 10.1}},
         "thresholds": {"<width key>": {"gemv_max_m": 1, "splitk_max_m": 64, "dequant_min_m": 512}}}}}

The device key holds everything about the machine and software that changes the answer
(device name, compute capability, Triton and lowbit versions); the tune key the rest (kernel
family, N, K, bits, group size, activation dtype, M bucket). Writes are atomic (temp file in
the same folder + rename) and serialized by a file lock, and they merge with what is on disk,
so concurrent tuners never corrupt the file or lose each other's entries. A corrupt file is
warned about and ignored, never a crash.

Lookup precedence: the user's cache (exact device key) > configs shipped with lowbit for this
device name and capability (``lowbit/tuned/*.json``; other versions are accepted there) >
the kernels' heuristics. This module knows nothing about kernels; ``lowbit.backends.triton``
installs what it returns into the kernel dispatch table.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from importlib import resources
from typing import Optional

__all__ = [
    "SCHEMA", "DeviceId", "TuneKey", "DeviceTuning", "cache_path", "read_cache", "update_cache",
    "clear_cache", "lookup", "m_bucket", "shape_key", "width_key",
]

SCHEMA = 1
_warned: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, stacklevel=3)


def m_bucket(m: int) -> int:
    """Batch sizes share a config per power-of-two bucket (1, 2, 4, 8, ...)."""
    if m < 1:
        raise ValueError(f"M must be >= 1, got {m}")
    return 1 << (m - 1).bit_length()


@dataclass(frozen=True)
class DeviceId:
    """What about the machine and software changes a tuning answer."""

    name: str
    capability: str
    triton: str
    lowbit: str

    @property
    def key(self) -> str:
        return f"{self.name}|sm{self.capability}|triton={self.triton}|lowbit={self.lowbit}"

    @classmethod
    def current(cls, device=None) -> "DeviceId":
        import torch

        from . import __version__
        from .sysinfo import package_version

        idx = torch.cuda.current_device() if device is None or device.index is None else device.index
        major, minor = torch.cuda.get_device_capability(idx)
        return cls(torch.cuda.get_device_name(idx), f"{major}.{minor}", package_version("triton"), __version__)


@dataclass(frozen=True)
class TuneKey:
    """One tuned config: kernel family x problem x M bucket (per DeviceId)."""

    family: str
    n: int
    k: int
    bits: int
    group_size: int
    act_dtype: str
    m_bucket: int

    def encode(self) -> str:
        return (f"{self.family}|n={self.n}|k={self.k}|bits={self.bits}|g={self.group_size}|"
                f"{self.act_dtype}|m={self.m_bucket}")

    @classmethod
    def decode(cls, s: str) -> "TuneKey":
        fam, n, k, bits, g, act, m = s.split("|")
        val = lambda t: int(t.split("=", 1)[1])  # noqa: E731
        return cls(fam, val(n), val(k), val(bits), val(g), act, val(m))


def shape_key(n: int, k: int, bits: int, group_size: int, act_dtype: str, m: int) -> str:
    """Key of the winning family for one problem and M bucket."""
    return f"n={n}|k={k}|bits={bits}|g={group_size}|{act_dtype}|m={m_bucket(m)}"


def width_key(bits: int, group_size: int, act_dtype: str) -> str:
    return f"bits={bits}|g={group_size}|{act_dtype}"


@dataclass
class DeviceTuning:
    """What is known for one device: merged from the user cache and shipped configs."""

    configs: dict = field(default_factory=dict)
    winners: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)
    sources: list = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.configs or self.winners or self.thresholds)


def cache_path() -> str:
    env = os.environ.get("LOWBIT_AUTOTUNE_CACHE")
    if env:
        return env
    from .sysinfo import cache_dir

    return os.path.join(cache_dir(), "autotune.json")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _validate(data, path: str) -> dict:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("devices"), dict):
        raise ValueError(f"not a lowbit autotune cache of schema {SCHEMA}")
    for dkey, dev in data["devices"].items():
        if not isinstance(dev, dict) or not isinstance(dev.get("device"), dict):
            raise ValueError(f"device entry {dkey!r} is malformed")
        for part in ("configs", "winners", "thresholds"):
            if not isinstance(dev.get(part, {}), dict):
                raise ValueError(f"device entry {dkey!r}: {part!r} is not an object")
        for tkey, ent in dev.get("configs", {}).items():
            TuneKey.decode(tkey)
            if not isinstance(ent, dict) or not isinstance(ent.get("config"), dict):
                raise ValueError(f"config entry {tkey!r} is malformed")
    return data


def _empty() -> dict:
    return {"schema": SCHEMA, "devices": {}}


def read_cache(path: Optional[str] = None, *, warn: bool = True) -> dict:
    """The cache file's contents; a missing file is empty, a corrupt one is warned about and
    treated as empty."""
    path = path or cache_path()
    try:
        with open(path) as f:
            return _validate(json.load(f), path)
    except FileNotFoundError:
        return _empty()
    except (OSError, ValueError, TypeError, KeyError) as e:
        if warn:
            _warn_once(f"lowbit: ignoring corrupt autotune cache {path} ({type(e).__name__}: {e}); "
                       "re-run `lowbit autotune` or `lowbit autotune --clear`")
        return _empty()


def _lock(path: str):
    from filelock import FileLock

    return FileLock(path + ".lock", timeout=120)


def _atomic_write(path: str, data: dict) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".autotune-", suffix=".json", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old or the new file, never half
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def update_cache(device: DeviceId, *, configs: Optional[dict] = None, winners: Optional[dict] = None,
                 thresholds: Optional[dict] = None, path: Optional[str] = None) -> str:
    """Merge new entries for ``device`` into the cache file, atomically and under a lock.

    configs: {TuneKey: {"config": {...}, "us": float}}; winners: {shape_key: {"family", "us"}};
    thresholds: {width_key: {...}}. Returns the path written.
    """
    path = path or cache_path()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with _lock(path):
        data = read_cache(path)
        dev = data["devices"].setdefault(device.key, {"device": dataclasses.asdict(device)})
        now = _now()
        for key, ent in (configs or {}).items():
            k = key.encode() if isinstance(key, TuneKey) else str(key)
            dev.setdefault("configs", {})[k] = {**ent, "updated": now}
        for k, ent in (winners or {}).items():
            dev.setdefault("winners", {})[k] = {**ent, "updated": now}
        for k, ent in (thresholds or {}).items():
            dev.setdefault("thresholds", {})[k] = {**ent, "updated": now}
        _atomic_write(path, data)
    return path


def clear_cache(path: Optional[str] = None) -> bool:
    """Delete the cache file; returns whether there was one."""
    path = path or cache_path()
    with _lock(path):
        if os.path.exists(path):
            os.unlink(path)
            return True
    return False


def _shipped() -> list[tuple[str, dict]]:
    out = []
    try:
        folder = resources.files("lowbit") / "tuned"
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            if entry.name.endswith(".json"):
                try:
                    out.append((f"shipped:{entry.name}", _validate(json.loads(entry.read_text()), entry.name)))
                except (ValueError, TypeError, KeyError) as e:
                    _warn_once(f"lowbit: ignoring corrupt shipped autotune file {entry.name}: {e}")
    except (FileNotFoundError, NotADirectoryError, ModuleNotFoundError):
        pass
    return out


def lookup(device: DeviceId, path: Optional[str] = None) -> DeviceTuning:
    """Everything known for ``device``: user cache (exact key) over shipped configs (same
    device name and capability, any version)."""
    result = DeviceTuning()
    user = read_cache(path)
    layers = []
    for _, dev in user["devices"].items():
        d = dev["device"]
        if d.get("name") == device.name and d.get("capability") == device.capability:
            if DeviceId(**{f: d.get(f, "") for f in ("name", "capability", "triton", "lowbit")}) == device:
                layers.append(("user:" + (path or cache_path()), dev))
            else:
                _warn_once(f"lowbit: the autotune cache has entries for {device.name} from triton {d.get('triton')} / "
                           f"lowbit {d.get('lowbit')}, but this is triton {device.triton} / lowbit {device.lowbit}: "
                           "they are ignored; run `lowbit autotune` again")
    for src, data in _shipped():
        for _, dev in data["devices"].items():
            d = dev["device"]
            if d.get("name") == device.name and d.get("capability") == device.capability:
                layers.append((src, dev))
    # later layers must not override earlier ones: fill from lowest precedence up
    for src, dev in reversed(layers):
        result.configs.update(dev.get("configs", {}))
        result.winners.update(dev.get("winners", {}))
        result.thresholds.update(dev.get("thresholds", {}))
        result.sources.insert(0, src)
    return result
