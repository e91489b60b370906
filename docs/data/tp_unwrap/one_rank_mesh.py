"""Record of the check in docs/tensor_parallel.md ("Unwrapped shards"): an 8-layer 8B-shaped W4
g128 model on a 1-rank DTensor mesh, decode compiled with CUDA graphs, ms/step at batch 1 and 16
with the shards wrapped, unwrapped, or no DTensor at all (plain, unwrapped); PROF=1 adds a
torch.profiler table at batch 16. Run from the repo root:

    PYTHONPATH=. python3 docs/data/tp_unwrap/one_rank_mesh.py {wrap|unwrap|plain} cuda
"""
import os, sys, time, torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
import lowbit
from lowbit.models import build_model
from lowbit.tp import apply_tp
mode, dev = sys.argv[1], sys.argv[2]
preset, layers = ("llama-3.1-8b", 8) if dev == "cuda" else ("tiny", None)
dt = torch.bfloat16 if dev == "cuda" else torch.float32
dist.init_process_group("nccl" if dev == "cuda" else "gloo", store=dist.HashStore(), rank=0, world_size=1)
model = build_model(preset, dtype=dt, device=dev, n_layers=layers)
lowbit.quantize_(model, lowbit.WeightOnlyConfig(bits=4, group_size=128 if dev == "cuda" else 64))
if mode != "plain":
    model = apply_tp(model, init_device_mesh(dev, (1,)))
model.eval()
if mode in ("unwrap", "plain"):
    lowbit.unwrap_for_compile(model)
sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
for b in (1, 16):
    torch._dynamo.reset()
    model.setup_cache(b, 128)
    tok = torch.randint(0, model.config.vocab, (b, 8), device=dev)
    with torch.no_grad():
        model(tok, torch.arange(8, device=dev))
        step = torch.compile(model, fullgraph=True, mode="reduce-overhead" if dev == "cuda" else None)
        nxt = tok[:, -1:]
        for i in range(5):
            nxt = step(nxt, torch.tensor([8 + i], device=dev))[:, -1:].argmax(-1)
        sync(); t = time.perf_counter()
        for i in range(30):
            nxt = step(nxt, torch.tensor([13 + i], device=dev))[:, -1:].argmax(-1)
        sync(); ms = (time.perf_counter() - t) / 30 * 1e3
        print(f"{mode} b{b} ms/step {ms:.3f}", flush=True)
        if b == 16 and os.environ.get("PROF"):
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])) as p:
                for i in range(3):
                    nxt = step(nxt, torch.tensor([50 + i], device=dev))[:, -1:].argmax(-1)
                sync()
            print(p.key_averages().table(sort_by="cuda_time_total" if dev == "cuda" else "cpu_time_total", row_limit=12, max_name_column_width=60))
dist.destroy_process_group()
