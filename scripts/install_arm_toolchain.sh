#!/usr/bin/env bash
# Install the aarch64 cross compiler and qemu user-mode emulator used by tests/test_cpu_arm.py
# to build the C++ kernel test harness for Arm and run the NEON dot-product kernels.
# Idempotent: returns at once when both tools are already on PATH. Needs root (apt-get);
# otherwise it prints a loud warning and exits 0, and the Arm test skips saying why.
set -uo pipefail
if command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 && command -v qemu-aarch64 >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    echo "!! WARNING: g++-aarch64-linux-gnu / qemu-user are missing and this is not root:   " >&2
    echo "!! the NEON kernel tests (tests/test_cpu_arm.py) will be SKIPPED.                 " >&2
    echo "!! Install them with: sudo apt-get install -y g++-aarch64-linux-gnu qemu-user     " >&2
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt_install() { apt-get install -y -q --no-install-recommends g++-aarch64-linux-gnu qemu-user >/dev/null; }
if ! apt_install; then
    # package lists may be stale or absent on a fresh image
    apt-get update -q >/dev/null && apt_install || {
        echo "!! WARNING: apt-get could not install g++-aarch64-linux-gnu qemu-user; the NEON tests will be SKIPPED" >&2
        exit 0
    }
fi
echo "installed aarch64 cross toolchain ($(aarch64-linux-gnu-g++ --version | head -1)) and $(qemu-aarch64 --version | head -1)"
