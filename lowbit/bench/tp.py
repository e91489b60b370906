"""Tensor-parallel decode benchmark: the built-in decoder sharded with ``TinyLlama._tp_plan``
(lowbit.tp) at each TP size, decode tokens/s per config and batch, and a correctness check of
every TP > 1 run's logits against TP = 1 on the same tokens.

    lowbit bench tp --preset llama-3.1-8b --configs bf16,w4g128 --batch 1,16 --tp 1,2   (2 GPUs, NCCL)
    lowbit bench tp --preset tiny --device cpu --dtype float32 --tp 1,2                 (CPU, gloo)

(``python -m lowbit.bench.tp ARGS`` is the same command.)

The order is quantize -> save -> load -> shard: a prep process builds each config's model once
(random weights, fixed seed), quantizes it and writes one checkpoint with lowbit.save_file; then,
for each TP size, one process per rank builds the model on the meta device and reads only its
own slices of that same checkpoint (lowbit.tp.load_sharded; TP = 1 uses lowbit.load_file). This
process only launches the others (it never touches a GPU), gathers one result file per rank,
prints the table and writes JSON. A rank that fails is reported with its error and log tail; the
other ranks of that run are then stopped, and every run has a time limit.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import timedelta
from typing import Optional

import torch

__all__ = ["main", "add_parser", "default_tol"]

# a row-parallel int8-dynamic layer quantizes its activations per token over the local K
# slice, not the full K: TP changes its numerics by design, so its check is looser
_DYNAMIC = ("a8w4", "a8w8")


def _configs() -> dict:
    from .e2e import _configs as e2e_configs

    return {"dense": [], **e2e_configs()}


CONFIGS = ("dense", "bf16", "w4g64", "w4g128", "w8", "a8w4", "a8w8")


def default_tol(dtype: str, config: str) -> float:
    """Relative L2 error allowed between TP > 1 and TP = 1 logits. Row-parallel layers sum
    partial products across ranks (float reassociation; in bf16 each partial is rounded before
    the all-reduce), so TP equals TP = 1 only up to rounding. Measured on the CPU (demo preset,
    32 layers): bf16 TP=2 vs TP=1 2.3e-2, the same size as bf16 vs fp32 at TP=1 (2.2e-2); fp32
    ~5e-7. A wrong shard or head split is an O(1) error."""
    tol = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}[dtype]
    return max(tol, 0.1) if config in _DYNAMIC else tol


# ---------------------------------------------------------------------------------------------
# worker side (python -m lowbit.bench.tp --worker SPEC)
# ---------------------------------------------------------------------------------------------
def _device(spec: dict, rank: int) -> torch.device:
    if spec["device"] == "cuda":
        dev = torch.device("cuda", rank)
        torch.cuda.set_device(dev)
        return dev
    return torch.device("cpu")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return platform.processor() or platform.machine()


def _prep(spec: dict) -> dict:
    """Build the model, quantize it, save the checkpoint once."""
    import lowbit
    from lowbit.models import build_model
    from lowbit.tp import canonical_bytes, tp_plan

    dev = _device(spec, 0)
    t0 = time.perf_counter()
    model = build_model(spec["preset"], seed=spec["seed"], dtype=getattr(torch, spec["dtype"]), device=dev, n_layers=spec["layers"])
    for cfg in _configs()[spec["config"]]:
        lowbit.quantize_(model, cfg)
    _sync(dev)
    t1 = time.perf_counter()
    planned = {f"{fqn}.weight" for fqn in tp_plan(model)}
    full = {"sharded": 0, "replicated": 0}
    for name, p in model.named_parameters():
        full["sharded" if name in planned else "replicated"] += canonical_bytes(p)
    lowbit.save_file(model, spec["ckpt"])
    t2 = time.perf_counter()
    return {"build_s": t1 - t0, "save_s": t2 - t1, "full_bytes": full, "ckpt_bytes": os.path.getsize(spec["ckpt"]),
            "device_name": _device_name(dev)}


def _init_dist(spec: dict, dev: torch.device, world: int):
    import inspect

    import torch.distributed as dist

    kw = {"backend": "nccl" if dev.type == "cuda" else "gloo", "timeout": timedelta(seconds=spec["dist_timeout"])}
    if dev.type == "cuda" and "device_id" in inspect.signature(dist.init_process_group).parameters:
        kw["device_id"] = dev
    dist.init_process_group(**kw)
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(dev.type, (world,))


def _logits_for_check(model, toks: torch.Tensor, prompt: int, steps: int, step=None) -> torch.Tensor:
    """Prefill ``prompt`` tokens (eager), then ``steps`` decode steps (``step``, default the
    model) fed with fixed tokens (not the model's own choices, so every TP size sees the same
    inputs): the last prefill position's logits and each step's, [B, 1 + steps, vocab] float32
    on the CPU."""
    dev, step = toks.device, model if step is None else step
    out = [model(toks[:, :prompt], torch.arange(prompt, device=dev))[:, -1].float().cpu()]
    for i in range(steps):
        p = prompt + i
        # copied out at once: a CUDA-graph step's output is overwritten by the next replay
        out.append(step(toks[:, p : p + 1].contiguous(), torch.tensor([p], device=dev))[:, -1].float().cpu())
    return torch.stack(out, 1)


def _compare(got: torch.Tensor, ref: torch.Tensor, tol: float) -> dict:
    diff = (got - ref).abs()
    max_abs = float(diff.max())
    rel_l2 = float((got - ref).norm() / ref.norm().clamp_min(1e-30))
    return {
        "max_abs": max_abs,
        "rel_max": max_abs / max(float(ref.abs().max()), 1e-30),
        "rel_err": rel_l2,
        "argmax_agree": float((got.argmax(-1) == ref.argmax(-1)).float().mean()),
        "tol": tol,
        "pass": bool(rel_l2 <= tol),
    }


def _cudagraph_skips(reset: bool = False) -> Optional[int]:
    """Inductor's count of graphs it ran without CUDA graphs (each one then replays its ops from
    Python on every step: a host-bound decode); None where this torch does not count them."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    if reset:
        counters["inductor"]["cudagraph_skips"] = 0
    return int(counters["inductor"]["cudagraph_skips"])


def _decode_steps(step, nxt, pos, n):
    for i in range(n):
        nxt = step(nxt, pos + i)[:, -1:].argmax(-1)
    return nxt


def _run(spec: dict, rank: int, world: int) -> dict:
    """Load (sharded for world > 1), check logits, time decode, for every batch size."""
    import lowbit
    from lowbit.models import TinyLlama, preset_config
    from lowbit.tp import load_sharded, shard_bytes

    dev = _device(spec, rank)
    res: dict = {"device_name": _device_name(dev), "batches": []}
    dist = None
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = TinyLlama(preset_config(spec["preset"], spec["layers"]))
    if world == 1:
        lowbit.load_file(spec["ckpt"], model, device=dev)
        model.init_buffers(dev)
        model.requires_grad_(False)
    else:
        import torch.distributed as dist

        mesh = _init_dist(spec, dev, world)
        load_sharded(spec["ckpt"], model, mesh, dev)
    model.eval()
    _sync(dev)
    res["load_s"] = time.perf_counter() - t0
    res["bytes"] = shard_bytes(model)
    # plain local shards and explicit all-reduces instead of DTensors (a DTensor step is host-bound)
    res["localized"] = bool(spec.get("local")) and world > 1
    if res["localized"]:
        from lowbit.tp import localize

        localize(model)
    # as in `bench e2e`: a compiled step would otherwise unwrap every quantized weight on the
    # host on every call (on 2xH200, TP=2: 1.2-2.1x faster unwrapped; docs/tensor_parallel.md)
    if spec["compile"] and (spec.get("unwrap") == "all" or (spec.get("unwrap") == "tp1" and world == 1)):
        lowbit.unwrap_for_compile(model)  # a no-op for the dense configs
    res["unwrapped"] = lowbit.is_unwrapped(model)
    if dev.type == "cuda":
        res["gpu_mem_after_load_gib"] = torch.cuda.memory_allocated(dev) / 2**30
        torch.cuda.reset_peak_memory_stats(dev)
    prompt, tokens, steps, warm = spec["prompt"], spec["tokens"], spec["check_steps"], 3
    vocab = model.config.vocab
    for batch in spec["batch"]:
        row: dict = {"batch": batch}
        model.setup_cache(batch, prompt + max(steps, warm + tokens) + 1)
        # the same tokens for every TP size: drawn on the CPU from a fixed seed
        g = torch.Generator().manual_seed(spec["seed"] + 1000 + batch)
        toks = torch.randint(0, vocab, (batch, prompt + steps), generator=g).to(dev)
        ref_path = os.path.join(spec["ref_dir"], f"ref_b{batch}.pt")
        with torch.no_grad():
            got = _logits_for_check(model, toks, prompt, steps)
        if world == 1:
            torch.save(got, ref_path)
        elif os.path.exists(ref_path):
            row["check"] = _compare(got, torch.load(ref_path), spec["tol"])
        else:
            row["check"] = {"pass": False, "error": "no TP=1 reference logits (the TP=1 run failed?)"}
        # timing: eager prefill, then decode (compiled if asked and it works)
        step, compiled, compile_error = model, False, None
        with torch.no_grad():
            if dist is not None:
                dist.barrier()
            _sync(dev)
            tp0 = time.perf_counter()
            logits = model(toks[:, :prompt], torch.arange(prompt, device=dev))
            nxt = logits[:, -1:].argmax(-1)
            _sync(dev)
            row["prefill_ms"] = (time.perf_counter() - tp0) * 1e3
            pos = torch.tensor([prompt], device=dev)
            if spec["compile"]:
                torch._dynamo.reset()
                _cudagraph_skips(reset=True)
                try:
                    cstep = torch.compile(model, fullgraph=True, mode="reduce-overhead" if dev.type == "cuda" else None)
                    nxt = _decode_steps(cstep, nxt, pos, warm)
                    _sync(dev)
                    ok = 1
                except Exception as e:  # noqa: BLE001 - reported, then eager
                    msg = str(e).strip().splitlines()
                    compile_error = f"{type(e).__name__}: {msg[0][:300] if msg else ''}"
                    ok = 0
                if dist is not None:  # every rank falls back if any rank failed
                    flag = torch.tensor([ok], device=dev)
                    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                    ok = int(flag.item())
                    if not ok and compile_error is None:
                        compile_error = "compiled on this rank, failed on another"
                if ok:
                    step, compiled = cstep, True
                else:
                    torch._dynamo.reset()
            if not compiled:
                nxt = _decode_steps(model, nxt, pos, warm)
            if dist is not None:
                dist.barrier()
            _sync(dev)
            t1 = time.perf_counter()
            nxt = _decode_steps(step, nxt, pos + warm, tokens)
            host = time.perf_counter() - t1  # enqueued; the device may still run: close to dt = host-bound
            _sync(dev)
            dt = time.perf_counter() - t1
            if compiled:  # the compiled decode step must give this rank's eager logits
                row["compiled_check"] = _compare(_logits_for_check(model, toks, prompt, steps, step), got, spec["tol"])
        row.update(tokens_per_s=batch * tokens / dt, ms_per_step=dt / tokens * 1e3,
                   host_ms_per_step=host / tokens * 1e3, compiled=compiled, compile_error=compile_error,
                   cudagraph_skips=_cudagraph_skips() if compiled else None)
        res["batches"].append(row)
        del step
        torch._dynamo.reset()
    if dev.type == "cuda":
        res["gpu_peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    if dist is not None:
        dist.barrier()
    return res


def _worker(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    result: dict = {"rank": rank, "world": world}
    code = 0
    try:
        result.update(_prep(spec) if spec["role"] == "prep" else _run(spec, rank, world))
    except BaseException as e:  # noqa: BLE001 - every failure is written down for the launcher
        traceback.print_exc()
        result.update(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        code = 1
    with open(os.path.join(spec["out"], f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    sys.stdout.flush()
    sys.stderr.flush()
    if code == 0:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    # results are on disk; skip interpreter teardown, where gloo occasionally aborts on exit
    # (tests/dist_tp_worker.py), and where a failed rank could wait on its peers
    os._exit(code)


# ---------------------------------------------------------------------------------------------
# launcher side
# ---------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: str, n: int = 3000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def _launch(spec: dict, world: int, rundir: str, timeout: float, grace: float = 15.0) -> tuple[list[dict], list[str]]:
    """Run ``world`` worker processes on ``spec``; return (per-rank results, errors)."""
    os.makedirs(rundir, exist_ok=True)
    spec = {**spec, "out": rundir}
    spec_path = os.path.join(rundir, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    base = dict(os.environ)
    base["PYTHONPATH"] = pkg_root + (os.pathsep + base["PYTHONPATH"] if base.get("PYTHONPATH") else "")
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    base.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # a failed collective aborts instead of hanging
    if spec["device"] == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        base["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // world))
    procs, logs = [], []
    try:
        for r in range(world):
            log = os.path.join(rundir, f"rank{r}.log")
            logs.append(log)
            with open(log, "w") as lf:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "lowbit.bench.tp", "--worker", spec_path],
                    env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=lf, stderr=subprocess.STDOUT,
                    start_new_session=True,
                ))
        deadline, failed_at, why = time.monotonic() + timeout, None, {}
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if failed_at is None and any(p.returncode not in (None, 0) for p in procs):
                failed_at = now
            stop = None
            if now > deadline:
                stop = f"killed: the run passed its time limit of {timeout:.0f} s (--timeout)"
            elif failed_at is not None and now - failed_at > grace:
                stop = "killed: another rank failed"
            if stop:
                for r, p in enumerate(procs):
                    if p.poll() is None:
                        why[r] = stop
                        os.killpg(p.pid, signal.SIGKILL)
                        p.wait()
                break
            time.sleep(0.1)
    finally:
        for p in procs:  # e.g. KeyboardInterrupt: leave nothing behind
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    results, errors = [], []
    for r, p in enumerate(procs):
        path = os.path.join(rundir, f"rank{r}.json")
        res = None
        if os.path.exists(path):
            with open(path) as f:
                res = json.load(f)
        if res is None or "error" in res or p.returncode != 0:
            msg = (res or {}).get("error") or why.get(r) or f"exited with code {p.returncode} and no result"
            errors.append(f"{spec['role']} {spec['config']} tp={world} rank {r}: {msg}\n--- rank {r} log tail ---\n{_tail(logs[r])}")
        results.append(res or {})
    return results, errors


def _fmt_check(c: Optional[dict]) -> str:
    if not c:
        return "reference"
    if "rel_err" not in c:
        return "FAIL " + c.get("error", "")
    return f"{'pass' if c['pass'] else 'FAIL'} rel {c['rel_err']:.1e} abs {c['max_abs']:.1e} (tol {c['tol']:.0e})"


def _fmt_decode(r: dict) -> str:
    if not r["compiled"]:
        return "eager (compile failed)" if r["compile"] else "eager"
    cc = r.get("compiled_check") or {}
    return ("compiled" + (", unwrapped" if r.get("unwrapped") else "") + (", local shards" if r.get("localized") else "")
            + (", CUDA graphs skipped" if r.get("cudagraph_skips") else "") + ("" if cc.get("pass") else " != eager!"))


def _print_table(rows: list[dict]) -> None:
    head = ("config", "tp", "batch", "tok/s", "ms/step", "host ms", "x tp1", "prefill ms", "shard MiB/rank", "decode", "TP=N vs TP=1 logits")
    lines = [head]
    for r in rows:
        sh = r.get("shard_mib")
        lines.append((
            r["config"], str(r["tp"]), str(r["batch"]), f"{r['tokens_per_s']:.1f}", f"{r['ms_per_step']:.2f}",
            f"{r['host_ms_per_step']:.2f}", f"{r['speedup_vs_tp1']:.2f}x" if r.get("speedup_vs_tp1") else "-", f"{r['prefill_ms']:.1f}",
            "-" if sh is None else f"{sh:.1f} ({r['shard_fraction']:.3f} of full)",
            _fmt_decode(r), _fmt_check(r.get("check")),
        ))
    w = [max(len(x[i]) for x in lines) for i in range(len(head))]
    for i, x in enumerate(lines):
        print("  ".join(c.ljust(w[j]) for j, c in enumerate(x)).rstrip())
        if i == 0:
            print("  ".join("-" * n for n in w))


def _rows(cfg: str, tp: int, res: list[dict], base: dict, full_sharded: int, args) -> list[dict]:
    """One row per batch size from the ranks' results of one run."""
    r0, rows = res[0], []
    for i, b in enumerate(r0["batches"]):
        row = {"config": cfg, "tp": tp, "batch": b["batch"], "dtype": args.dtype,
               **{k: b[k] for k in ("tokens_per_s", "ms_per_step", "host_ms_per_step", "prefill_ms", "compiled", "compile_error",
                                 "cudagraph_skips")},
               "load_s": r0["load_s"], "compile": args.compile, "unwrapped": r0.get("unwrapped", False),
               "localized": r0.get("localized", False)}
        if b.get("compiled_check"):  # compiled vs eager decode logits, worst rank
            row["compiled_check"] = max((r["batches"][i].get("compiled_check") or {} for r in res),
                                        key=lambda c: (not c.get("pass", False), c.get("rel_err", 0.0)))
        if tp == 1:
            base[b["batch"]] = b["tokens_per_s"]
        elif b["batch"] in base:
            row["speedup_vs_tp1"] = b["tokens_per_s"] / base[b["batch"]]
        if tp > 1:
            # every rank holds the full logits and checks them: report the worst rank
            checks = [(r["rank"], r["batches"][i].get("check") or {}) for r in res]
            worst_rank, worst = max(checks, key=lambda rc: (not rc[1].get("pass", False), rc[1].get("rel_err", 0.0)))
            row["check"] = {**worst, "rank": worst_rank, "all_ranks_pass": all(c.get("pass") for _, c in checks)}
            sh = [r["bytes"]["sharded"] for r in res]
            row["shard_mib"] = max(sh) / 2**20
            row["shard_fraction"] = max(sh) / full_sharded if full_sharded else None
            row["shards_compact"] = all(r["bytes"]["sharded"] == r["bytes"]["sharded_storage"] for r in res)
            row["shard_bytes_ok"] = bool(row["shards_compact"] and full_sharded
                                         and all(abs(x * tp / full_sharded - 1) < 0.01 for x in sh))
        row["replicated_mib"] = r0["bytes"]["replicated"] / 2**20
        for k in ("gpu_mem_after_load_gib", "gpu_peak_gib"):
            if k in r0:
                row[k] = max(r.get(k, 0.0) for r in res)
        rows.append(row)
    return rows


def _row_problem(r: dict) -> Optional[str]:
    cc = r.get("compiled_check")
    if cc and not cc.get("pass"):
        return f"compiled decode differs from eager: {_fmt_check(cc)}"
    if r["tp"] == 1:
        return None
    if not r["check"].get("all_ranks_pass"):
        return f"logits check FAILED: {_fmt_check(r['check'])}"
    if not r.get("shard_bytes_ok"):
        return (f"shard bytes FAILED: a rank holds {r['shard_fraction']} of the sharded layers, not 1/{r['tp']}"
                f"{'' if r.get('shards_compact') else ' (a shard is a view keeping a full weight alive)'}")
    return None


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through _launch, which kills the ranks


def main(args) -> int:
    tps = sorted(set(args.tp))
    notes: list[str] = []
    if tps[0] < 1:
        raise SystemExit("lowbit bench tp: --tp sizes must be >= 1")
    if 1 not in tps:
        tps = [1] + tps
        notes.append("tp=1 added: it is the reference for the correctness check")
    if args.device == "cuda":
        n = torch.cuda.device_count()
        if tps[-1] > n:
            raise SystemExit(f"lowbit bench tp: --tp {tps[-1]} needs {tps[-1]} GPUs, {n} visible")
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)  # e.g. `timeout`: still stop the ranks
    except ValueError:
        pass  # not the main thread
    workdir = args.workdir or tempfile.mkdtemp(prefix="lowbit-tp-")
    os.makedirs(workdir, exist_ok=True)
    spec0 = {"preset": args.preset, "layers": args.layers, "dtype": args.dtype, "device": args.device, "seed": args.seed,
             "batch": args.batch, "prompt": args.prompt, "tokens": args.tokens, "check_steps": args.check_steps,
             "compile": args.compile, "unwrap": args.unwrap, "local": args.local, "dist_timeout": args.dist_timeout}
    from lowbit.models import preset_config

    layers = preset_config(args.preset, args.layers).n_layers
    print(f"lowbit bench tp: preset {args.preset} ({layers} layers), {args.dtype}, {args.device}, TP {tps}, batch {args.batch}, "
          f"prompt {args.prompt}, {args.tokens} decode steps, {'torch.compile' if args.compile else 'eager'}", flush=True)
    rows: list[dict] = []
    errors: list[str] = []
    prep_info: dict = {}
    meta = {"device_name": None}
    t_start = time.perf_counter()

    def dump() -> None:  # after every run, so an interrupted benchmark keeps what it measured
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
                           "device": args.device, "device_name": meta["device_name"], "torch": torch.__version__,
                           "python": platform.python_version(), "preset": args.preset, "layers": layers,
                           "dtype": args.dtype, "prompt": args.prompt, "tokens": args.tokens, "tp": tps,
                           "prep": prep_info, "results": rows, "notes": notes, "errors": errors,
                           "wall_s": time.perf_counter() - t_start}, f, indent=1)

    try:
        for cfg in args.configs:
            cdir = os.path.join(workdir, cfg)
            spec = {**spec0, "config": cfg, "ckpt": os.path.join(cdir, "model.safetensors"), "ref_dir": cdir,
                    "tol": args.tol if args.tol is not None else default_tol(args.dtype, cfg)}
            os.makedirs(cdir, exist_ok=True)
            t0 = time.perf_counter()
            if args.device == "cpu":  # no GPU state to keep out of this process: prep here, faster
                try:
                    prep, errs = _prep(spec), []
                except Exception as e:  # noqa: BLE001 - reported
                    prep, errs = {}, [f"prep {cfg}: {type(e).__name__}: {e}\n{traceback.format_exc()}"]
            else:
                (prep,), errs = _launch({**spec, "role": "prep"}, 1, os.path.join(cdir, "prep"), args.timeout)
            errors += errs
            if errs:
                print(f"[{cfg}] prep FAILED (see the errors below)", flush=True)
                dump()
                continue
            meta["device_name"] = meta["device_name"] or prep.get("device_name")
            prep_info[cfg] = {k: prep[k] for k in ("build_s", "save_s", "full_bytes", "ckpt_bytes")}
            print(f"[{cfg}] built + quantized in {prep['build_s']:.1f} s, saved {prep['ckpt_bytes'] / 2**30:.2f} GiB "
                  f"in {prep['save_s']:.1f} s ({time.perf_counter() - t0:.0f} s in all)", flush=True)
            base: dict[int, float] = {}
            for tp in tps:
                t0 = time.perf_counter()
                res, errs = _launch({**spec, "role": "run"}, tp, os.path.join(cdir, f"tp{tp}"), args.timeout)
                errors += errs
                if errs or not res[0].get("batches"):
                    print(f"[{cfg}] tp={tp}: FAILED after {time.perf_counter() - t0:.0f} s (see the errors below)", flush=True)
                    dump()
                    continue
                new = _rows(cfg, tp, res, base, prep["full_bytes"]["sharded"], args)
                rows += new
                print(f"[{cfg}] tp={tp}: loaded in {res[0]['load_s']:.1f} s, {time.perf_counter() - t0:.0f} s in all", flush=True)
                for r in new:
                    problem = _row_problem(r)
                    if problem:
                        errors.append(f"{cfg} tp={tp} batch={r['batch']}: {problem}")
                    print(f"[{cfg}] tp={tp} batch={r['batch']}: {r['tokens_per_s']:.1f} tok/s, {r['ms_per_step']:.2f} ms/step "
                          f"(host {r['host_ms_per_step']:.2f})"
                          + ("" if tp == 1 else f", {_fmt_check(r['check'])}") + (f"  <- {problem}" if problem else ""), flush=True)
                dump()
            if not args.keep:
                shutil.rmtree(cdir, ignore_errors=True)
    except KeyboardInterrupt as e:
        errors.append(f"interrupted ({e or 'Ctrl-C'}): the results above are partial")
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    if rows:
        _print_table(rows)
    for e in sorted({r["compile_error"] for r in rows if r["compile"] and not r["compiled"]}):
        notes.append(f"torch.compile failed, decode timed in eager instead: {e}")
    for n in notes:
        print(f"note: {n}")
    for e in errors:
        print(f"ERROR: {e}", file=sys.stderr)
    print(f"{'FAILED' if errors else 'ok'}: {len(rows)} rows, {len(errors)} error(s), {time.perf_counter() - t_start:.0f} s", flush=True)
    dump()
    return 1 if errors else 0


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def add_parser(sub) -> None:
    p = sub.add_parser("tp", help="tensor parallel decode: tokens/s at each TP size, TP vs TP=1 logits check")
    p.add_argument("--preset", default=None, help="model preset (default: llama-3.1-8b on GPU, tiny on CPU)")
    p.add_argument("--layers", type=int, default=None, help="override the preset's number of layers (shorter runs)")
    p.add_argument("--device", default=None, choices=["cuda", "cpu"], help="cuda: one GPU per rank, NCCL; cpu: gloo")
    p.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"], help="default: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--configs", type=lambda s: s.split(","), default=None,
                   help=f"{','.join(CONFIGS)} (bf16/dense: unquantized, in --dtype); default bf16,w4g128 (GPU), dense,w4g64 (CPU)")
    p.add_argument("--batch", type=_ints, default=None, help="e.g. 1,16 (default 1,16 on GPU, 1,2 on CPU)")
    p.add_argument("--tp", type=_ints, default=[1, 2], help="TP sizes, e.g. 1,2 (TP=1 always runs: it is the reference)")
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--tokens", type=int, default=32, help="timed decode steps")
    p.add_argument("--check-steps", type=int, default=4, help="decode steps (fixed tokens) whose logits are compared")
    p.add_argument("--tol", type=float, default=None, help="relative L2 error allowed vs TP=1 (default per dtype/config)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step (reduce-overhead on GPU); "
                   "falls back to eager, and says so, if it fails")
    p.add_argument("--unwrap", default="all", choices=["all", "tp1", "none"],
                   help="with --compile: store the quantized weights unwrapped (lowbit.unwrap_for_compile) at every "
                        "TP size (default), at TP=1 only, or never")
    p.add_argument("--local", action="store_true",
                   help="at TP > 1: replace the DTensor shards by their local tensors and one all-reduce after each "
                        "row-wise linear (lowbit.tp.localize) before timing; the logits checks still apply")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed per launched run (prep, or one TP size)")
    p.add_argument("--dist-timeout", type=float, default=300, help="init_process_group / collective timeout, seconds")
    p.add_argument("--workdir", default=None, help="checkpoints, logs, rank results (default: a temp dir, removed)")
    p.add_argument("--keep", action="store_true", help="keep checkpoints and logs")
    p.add_argument("--json", default=None, help="write results here")

    def run(args):
        args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        gpu = args.device == "cuda"
        args.preset = args.preset or ("llama-3.1-8b" if gpu else "tiny")
        args.dtype = args.dtype or ("bfloat16" if gpu else "float32")
        args.batch = args.batch or ([1, 16] if gpu else [1, 2])
        args.configs = args.configs or (["bf16", "w4g128"] if gpu else ["dense", "w4g64"])
        unknown = [c for c in args.configs if c not in CONFIGS]
        if unknown:
            raise SystemExit(f"lowbit bench tp: unknown config(s) {unknown}; choose from {','.join(CONFIGS)}")
        return main(args)

    p.set_defaults(fn=run)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":  # a rank, started by _launch
        _worker(sys.argv[2])
    else:  # `python -m lowbit.bench.tp ARGS` = `lowbit bench tp ARGS`
        import argparse

        parser = argparse.ArgumentParser(prog="python -m lowbit.bench.tp")
        add_parser(parser.add_subparsers(dest="cmd"))
        ns = parser.parse_args(["tp", *sys.argv[1:]])
        sys.exit(ns.fn(ns))
