"""The C++ kernel test harness (tests/cpp/test_kernels.cpp), built from the same torch-free
csrc/ sources as the extension: natively (x86 ISAs vs scalar vs a naive reference) and
cross-compiled for aarch64, run under qemu, for the NEON dot-product kernels.

The Arm run needs g++-aarch64-linux-gnu and qemu-user (scripts/install_arm_toolchain.sh
installs them when run as root; scripts/setup_env.sh calls it). Without them the test
SKIPS, saying so loudly. Builds are cached under build/cpp_harness/ by source hash.
"""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "csrc" / "kernels").glob("*.cpp")) + sorted((ROOT / "csrc" / "operator").glob("*.cpp"))
HARNESS = ROOT / "tests" / "cpp" / "test_kernels.cpp"
# the production flags (setup.py): the NEON kernels are only ever run here, so test what ships
FLAGS = ["-std=c++17", "-O3", "-ffp-contract=off", "-fno-math-errno", "-pthread"]
ARM_SYSROOT = "/usr/aarch64-linux-gnu"


def _build(cxx: str, tag: str) -> Path:
    """Compile the harness with `cxx` (objects in parallel), cached by source hash."""
    h = hashlib.sha256(" ".join([cxx, *FLAGS]).encode())
    for p in [*SOURCES, HARNESS, *sorted((ROOT / "csrc").rglob("*.h"))]:
        h.update(p.read_bytes())
    out_dir = ROOT / "build" / "cpp_harness" / f"{tag}-{h.hexdigest()[:16]}"
    exe = out_dir / "test_kernels"
    if exe.exists():
        return exe
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    objs, procs = [], []
    for src in [*SOURCES, HARNESS]:
        obj = tmp / (src.stem + ".o")
        objs.append(obj)
        procs.append((src, subprocess.Popen([cxx, *FLAGS, "-c", str(src), "-o", str(obj)],
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    for src, p in procs:
        log, _ = p.communicate()
        assert p.returncode == 0, f"{cxx} failed on {src.name}:\n{log}"
    link = subprocess.run([cxx, *FLAGS, *map(str, objs), "-o", str(tmp / "test_kernels")], capture_output=True, text=True)
    assert link.returncode == 0, f"link failed:\n{link.stdout}{link.stderr}"
    if out_dir.exists():
        shutil.rmtree(tmp)
    else:
        tmp.rename(out_dir)
    return exe


def _run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    print(r.stdout)
    assert r.returncode == 0, f"harness reported mismatches:\n{r.stdout}\n{r.stderr}"
    assert "all bit-exact" in r.stdout
    return r.stdout


@pytest.mark.skipif(shutil.which("g++") is None, reason="no native g++ to build the C++ harness")
def test_cpp_harness_native():
    out = _run([str(_build("g++", "native"))])
    assert "scalar" in out


def _arm_missing() -> str:
    missing = [t for t in ("aarch64-linux-gnu-g++", "qemu-aarch64") if shutil.which(t) is None]
    if missing:
        return ("!!! NEON KERNELS NOT TESTED: " + " and ".join(missing) + " not found. Install with "
                "`sudo bash scripts/install_arm_toolchain.sh` (apt: g++-aarch64-linux-gnu qemu-user) !!!")
    if not Path(ARM_SYSROOT).is_dir():
        return f"!!! NEON KERNELS NOT TESTED: aarch64 sysroot {ARM_SYSROOT} missing (install g++-aarch64-linux-gnu) !!!"
    return ""


@pytest.mark.skipif(bool(_arm_missing()), reason=_arm_missing() or "n/a")
def test_cpp_harness_aarch64_neondot_under_qemu():
    exe = _build("aarch64-linux-gnu-g++", "aarch64")
    out = _run(["qemu-aarch64", "-L", ARM_SYSROOT, str(exe)])
    # qemu's default CPU model has the dot-product extension: the NEON kernels must have run
    assert "neondot" in out.splitlines()[0], f"NEON dot-product kernels were not selected under qemu:\n{out}"


if _arm_missing():  # a skip is easy to miss in a summary: say it on stderr too
    print(_arm_missing(), file=sys.stderr)
