#!/bin/bash
# The per-call-work A/B (docs/cpu_kernels.md, "Per-call work out of the tiles"): BASE_TREE (the
# commit before) against this tree, tests/cpp/run_ab.sh over the cases below.
#   BASE_TREE=/tmp/wt0 bash docs/data/cpu_per_call/run_ab.sh > docs/data/cpu_per_call/ab.txt
exec bash tests/cpp/run_ab.sh \
  "N=14336 K=4096|4 32 1 1" "N=4096 K=14336|4 32 1 1" "N=14336 K=4096|4 128 1 1" \
  "N=14336 K=4096|2 32 1 1" "N=14336 K=4096|3 32 1 1" "N=14336 K=4096|8 128 1 1" \
  "N=14336 K=4096|4 32 4 1" "N=4096 K=14336|4 32 4 1" "N=14336 K=4096|4 32 8 1" \
  "N=14336 K=4096 ISA=avx512bf16 FACT=1|4 32 1 1" "N=14336 K=4096|4 32 1 2" "N=14336 K=4096|4 32 4 2"
