"""DTensor tensor parallelism on 2 CPU processes (gloo), via torchrun."""
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_tensor_parallel_two_processes(tmp_path):
    worker = Path(__file__).with_name("dist_tp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "LOWBIT_TP_OUT": str(tmp_path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    for rank in (0, 1):
        lines = (tmp_path / f"rank{rank}.txt").read_text().splitlines()
        assert len(lines) == 3 and all(line.startswith("TP-OK") for line in lines), (rank, lines)
