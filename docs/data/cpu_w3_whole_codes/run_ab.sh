#!/bin/bash
# The W3 whole-codes A/B (docs/cpu_kernels.md, "W3 whole codes"): BASE_TREE (617724d, the 2+1
# planes) against this tree, tests/cpp/run_ab.sh over the cases below.
#   BASE_TREE=/tmp/wtbase bash docs/data/cpu_w3_whole_codes/run_ab.sh > docs/data/cpu_w3_whole_codes/ab.txt
exec bash tests/cpp/run_ab.sh \
  "N=14336 K=4096|3 32 1 1" "N=4096 K=14336|3 32 1 1" "N=14336 K=4096|3 128 1 1" \
  "N=14336 K=4096|3 32 2 1" "N=14336 K=4096|3 32 4 1" "N=14336 K=4096|3 32 8 1" \
  "N=14336 K=4096|3 32 1 2" "N=14336 K=4096|3 32 4 2"
