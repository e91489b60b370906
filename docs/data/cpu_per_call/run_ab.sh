#!/bin/bash
# The per-call-work A/B (docs/cpu_kernels.md, "Per-call work out of the tiles"): tests/cpp/bench_ab.cpp
# over two builds, BASE_TREE (the commit before) and this tree, each case one process.
#   BASE_TREE=/tmp/wt0 bash docs/data/cpu_per_call/run_ab.sh > docs/data/cpu_per_call/ab.txt
set -e
mk() { (cd "$2" && g++ -std=c++17 -O3 -ffp-contract=off -fno-math-errno -fPIC -shared -DAB_SHIM \
  csrc/kernels/*.cpp csrc/operator/*.cpp "$OLDPWD/tests/cpp/bench_ab.cpp" -o "$1" -ldl -pthread); }
mk /tmp/ab_base.so "$BASE_TREE" & mk /tmp/ab_new.so . & wait
g++ -std=c++17 -O3 -march=native tests/cpp/bench_ab.cpp -o /tmp/bench_ab -ldl
for c in "N=14336 K=4096|4 32 1 1" "N=4096 K=14336|4 32 1 1" "N=14336 K=4096|4 128 1 1" \
         "N=14336 K=4096|2 32 1 1" "N=14336 K=4096|3 32 1 1" "N=14336 K=4096|8 128 1 1" \
         "N=14336 K=4096|4 32 4 1" "N=4096 K=14336|4 32 4 1" "N=14336 K=4096|4 32 8 1" \
         "N=14336 K=4096 ISA=avx512bf16 FACT=1|4 32 1 1" "N=14336 K=4096|4 32 1 2" "N=14336 K=4096|4 32 4 2"; do
  e=${c%%|*}; a=${c#*|}
  echo "== $e, BITS GROUP M THREADS = $a"
  env $e ROUNDS=16 flock -x /tmp/lowbit-cpu.lock /tmp/bench_ab $a /tmp/ab_base.so /tmp/ab_new.so /tmp/ab_base.so
done
