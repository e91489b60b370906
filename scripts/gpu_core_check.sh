#!/usr/bin/env bash
# Core (issue 2) checks on a CUDA machine: the device-portable tests on CUDA, the CPU
# checkpoint loading on the GPU, compile on CUDA, and the demo. Run from the repo root:
#   bash scripts/gpu_core_check.sh            (uses PYTHONPATH=., no install needed)
source "$(dirname "$0")/gpu_env.sh"
python3 -c "import torch, triton, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -rs -p no:cacheprovider tests/test_packing.py tests/test_quant.py tests/test_tensor.py tests/test_ops.py \
    tests/test_api.py tests/test_serialization.py tests/test_bad_input.py tests/test_compile.py 2>&1 | tee "$out/core_tests.log" | tail -15
python3 -m lowbit.cli info 2>&1 | tee "$out/info.log"
python3 -m lowbit.cli demo --device cuda 2>&1 | tee "$out/demo.log"
