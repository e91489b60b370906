import torch, time, sys
sys.path.insert(0, "tests")
import test_cpu_kernels as T
torch.manual_seed(0)
def bench(f, n=10):
    f(); f()
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    ts.sort(); return ts[len(ts)//2]*1e6
import torch.nn.functional as F
for N,K in [(14336,4096),(4096,14336)]:
  for bits, gs in [(4,128),(4,32),(2,64),(3,128)]:
    codes, qw = T.make_weight(N, K, bits, gs, False, torch.bfloat16, act="none")
    wd = torch.randn(N, K, dtype=torch.bfloat16)
    for m in (1, 4, 16, 64, 256):
        if bits != 4 and m not in (1, 64): continue
        x = torch.randn(m, K, dtype=torch.bfloat16)
        tb = bench(lambda: T.run(x, qw, None, "avx512bf16"))
        tv = bench(lambda: T.run(x, qw, None, "avx512vnni"))
        td = bench(lambda: F.linear(x, wd))
        print(f"{N}x{K} W{bits} g{gs} M={m:3d}: bf16act {tb:8.0f}  fp32act {tv:8.0f}  dense bf16 {td:8.0f} us   new x{tv/tb:.2f} old, x{td/tb:.2f} dense", flush=True)
