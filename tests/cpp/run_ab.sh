#!/bin/bash
# In-process A/B of two trees' CPU kernels over a list of cases (tests/cpp/bench_ab.cpp): builds
# BASE_TREE and this tree as shared libraries, then runs each case as one process with the base
# build first and last (its second copy shows the noise). From the repo root:
#   BASE_TREE=/tmp/basetree bash tests/cpp/run_ab.sh "N=14336 K=4096|4 32 1 1" ["ENV|BITS GROUP M THREADS" ...]
set -e
mk() { (cd "$2" && g++ -std=c++17 -O3 -ffp-contract=off -fno-math-errno -fPIC -shared -DAB_SHIM \
  csrc/kernels/*.cpp csrc/operator/*.cpp "$OLDPWD/tests/cpp/bench_ab.cpp" -o "$1" -ldl -pthread); }
mk /tmp/ab_base.so "$BASE_TREE" & mk /tmp/ab_new.so . & wait
g++ -std=c++17 -O3 -march=native tests/cpp/bench_ab.cpp -o /tmp/bench_ab -ldl
for c in "$@"; do
  e=${c%%|*}; a=${c#*|}
  echo "== $e, BITS GROUP M THREADS = $a"
  env $e ROUNDS=16 flock -x /tmp/lowbit-cpu.lock /tmp/bench_ab $a /tmp/ab_base.so /tmp/ab_new.so /tmp/ab_base.so
done
