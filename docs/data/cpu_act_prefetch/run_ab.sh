#!/bin/bash
# The activation-prefetch A/B (docs/cpu_kernels.md, "Activations out of L1"): BASE_TREE (the commit
# before) against this tree, tests/cpp/run_ab.sh over the cases below.
#   BASE_TREE=/tmp/headtree bash docs/data/cpu_act_prefetch/run_ab.sh > docs/data/cpu_act_prefetch/ab.txt
exec bash tests/cpp/run_ab.sh \
  "N=4096 K=14336|4 32 1 1" "N=4096 K=14336|2 32 1 1" "N=4096 K=14336|4 128 1 1" \
  "N=4096 K=14336 ISA=avx512bf16 FACT=1|4 32 1 1" "N=4096 K=14336|4 32 1 2" "N=4096 K=14336|2 32 1 2" \
  "N=14336 K=4096|4 32 1 1" "N=14336 K=4096|2 32 1 1" "N=14336 K=4096 ISA=avx512bf16 FACT=1|4 32 1 1" \
  "N=4096 K=14336|4 32 4 1"
