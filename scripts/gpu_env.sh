# Sourced by scripts/gpu_core_check.sh and scripts/gpu_e2e_check.sh (run from the repo root):
# the output folder ($OUT on the device machine), wheels carried in .whl/ (that machine has no
# internet: e.g. platformdirs), this checkout first on PYTHONPATH, and which GPU this is.
set -uo pipefail
out=${OUT:-/tmp/lowbit-out}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi -L
