#!/usr/bin/env bash
# One device-machine call for issue 5: tune the Llama-3.1-8B preset on this GPU (the file that
# ships as lowbit/tuned/<gpu>.json), then show that a fresh process uses it with no tuning time.
set -uo pipefail
out=${OUT:-/tmp/lowbit-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ls .whl/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-deps --no-compile .whl/*.whl 2>&1 | tail -2; fi
gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name().split()[1].lower())")
export LOWBIT_AUTOTUNE_CACHE="$out/autotune_$gpu.json"
t0=$(date +%s)
python3 -m lowbit.cli autotune --preset llama-3.1-8b --bits 4 --group-size 128 \
    --batch ${BATCHES:-1,2,4,8,16,32,64,128,256,1024} --dtype ${DTYPES:-fp16,bf16} --quick --no-progress 2>&1 | tee "$out/autotune.log"
echo "autotune wall time: $(( $(date +%s) - t0 )) s"
python3 -m lowbit.cli autotune --show
# a fresh process: the first call installs the cached configs (file read only) and runs
python3 - <<'PY'
import time, torch, lowbit
from lowbit.backends import registered_backends
w = torch.randn(14336, 4096, device="cuda", dtype=torch.float16) / 64
q = lowbit.LowBitTensor.from_float(w, 4, 128)
x = torch.randn(1, 4096, device="cuda", dtype=torch.float16)
from lowbit import autotune
from lowbit.kernels import dispatch
t0 = time.perf_counter(); found = autotune.install(torch.device("cuda"), dispatch); t1 = time.perf_counter()
print(f"install from cache: {len(found.configs)} configs, {len(found.winners)} winners from {found.sources} in {(t1 - t0) * 1e3:.1f} ms")
torch.cuda.synchronize(); t0 = time.perf_counter(); y = torch.nn.functional.linear(x, q); torch.cuda.synchronize()
print(f"first forward (JIT compile of the chosen kernel, no tuning): {(time.perf_counter() - t0) * 1e3:.1f} ms")
from lowbit.kernels.layout import device_weight
print("family chosen for M=1:", dispatch.choose(1, device_weight(q.kernel_data, 14336, 4096, 4, 128, q.scales.dtype, True), "none", x.device, x.dtype) if hasattr(dispatch, "choose") else "?")
PY
