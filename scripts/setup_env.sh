#!/usr/bin/env bash
# Create ./.venv if needed and install lowbit with everything the demo, tests and
# benchmarks need. Safe to re-run: it only reinstalls what changed.
#   LOWBIT_VENV        where the venv lives (default .venv)
#   LOWBIT_TORCH_SPEC  torch requirement (default torch==2.13.0: on a CPU-only box this
#                      resolves to the CPU wheel; a looser spec can pull a multi-GB CUDA build)
set -euo pipefail
cd "$(dirname "$0")/.."
# Arm cross toolchain + qemu for the NEON kernel tests (needs root; warns loudly otherwise)
[ ! -f scripts/install_arm_toolchain.sh ] || bash scripts/install_arm_toolchain.sh
venv=${LOWBIT_VENV:-.venv}
py=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q)
# torch first and exactly pinned, so nothing later resolves a different build
"$venv/bin/python" -c "import torch" 2>/dev/null || "${pip[@]}" "${LOWBIT_TORCH_SPEC:-torch==2.13.0}"
"${pip[@]}" "${LOWBIT_TRITON_SPEC:-triton==3.7.1}" setuptools wheel "pybind11>=2.10" \
    "pytest>=7" "hypothesis>=6" "pytest-benchmark>=4" "safetensors>=0.4" "platformdirs>=3" "filelock>=3.12" "tqdm>=4.60" "matplotlib>=3.7"
# the package itself, editable, built against the torch above (no build isolation)
stamp="$venv/.lowbit-build-stamp"
want=$(cat pyproject.toml setup.py $(find csrc -type f 2>/dev/null | sort) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$venv/bin/python" -c "import lowbit" 2>/dev/null; then
    "${pip[@]}" --no-build-isolation --no-deps -e .
    echo "$want" > "$stamp"
fi
