#!/usr/bin/env bash
# One device-machine call: install lowbit as a user would (editable, no build isolation),
# run the whole test suite on the GPU, and print `lowbit info`. Run from the repo root;
# wheels missing there (platformdirs) may be carried in .whl/.
set -uo pipefail
out=${OUT:-/tmp/lowbit-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-deps --no-compile .whl/*.whl 2>&1 | tail -2
fi
t0=$(date +%s)
python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -5
echo "pip install -e . : rc=$? in $(( $(date +%s) - t0 )) s"
python3 -c "import lowbit, lowbit.kernels, lowbit._C_cpu; print('installed', lowbit.__file__)"
lowbit info 2>&1 | tee "$out/info.log"
python3 -m pytest -q -rs -p no:cacheprovider tests 2>&1 | tee "$out/tests.log" | tail -25
