"""Facts about this machine for `lowbit info` and backend selection (read on demand,
never at import)."""
from __future__ import annotations

import functools
import importlib.metadata
import os
import platform

__all__ = ["cpu_features", "cpu_name", "package_version", "cache_dir"]

# ISA flags worth reporting (x86 /proc/cpuinfo names, then Arm "Features" names)
_INTERESTING = (
    "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni",
    "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "sve", "sve2",
)


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> tuple[str, frozenset]:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model") and name in ("", platform.machine(), platform.processor()):
                    name = val.strip()
                elif key in ("flags", "features"):
                    flags.update(val.split())
    except OSError:
        pass
    return name, frozenset(flags)


def cpu_name() -> str:
    return _cpuinfo()[0]


def cpu_features() -> list[str]:
    """The interesting ISA extensions this CPU reports."""
    flags = _cpuinfo()[1]
    return [f for f in _INTERESTING if f in flags]


def package_version(name: str) -> str:
    """Installed version of a distribution without importing it, or 'not installed'."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cache_dir() -> str:
    """Where lowbit keeps per-device caches (LOWBIT_CACHE_DIR overrides)."""
    env = os.environ.get("LOWBIT_CACHE_DIR")
    if env:
        return env
    try:
        import platformdirs
    except ImportError:  # a declared dependency, but keep `info` and the kernels working without it
        return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lowbit")
    return platformdirs.user_cache_dir("lowbit")
