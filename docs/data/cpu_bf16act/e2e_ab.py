# A/B in one process: weight-only W4 g128 decode of cpu-small in bf16, with the bf16-activation
# kernels (isa '' = avx512bf16 here) and without (isa 'avx512vnni': the fp32-activation kernels).
import json, sys, torch, lowbit
from lowbit.bench.e2e import run_config
be = next(b for b in lowbit.registered_backends() if b.name == "cpu")
rows = []
for rnd in range(2):
    for isa in ("", "avx512vnni"):
        be.isa = isa
        for cfg in ("bf16", "w4g128"):
            for batch in (1, 4, 16):
                if cfg == "bf16" and isa:
                    continue
                r = run_config("cpu-small", cfg, batch, "cpu", torch.bfloat16, prompt=32, tokens=32)
                rows.append(dict(round=rnd, isa=isa or "avx512bf16", config=cfg, batch=batch, tok_s=r.tokens_per_s, ms=r.ms_per_step))
                print(rows[-1], flush=True)
json.dump(rows, open(sys.argv[1], "w"), indent=1)
