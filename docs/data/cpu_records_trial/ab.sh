#!/bin/bash
# abn.sh OUT reps "case" bin1 bin2 ...
out=$1; reps=$2; c=$3; shift 3
bins=("$@")
: > $out
read -r bits gs m envs <<< "$c"
for r in $(seq 1 $reps); do
  for b in "${bins[@]}"; do
    res=$(env ROUNDS=8 $envs flock -x /tmp/lowbit-cpu.lock ./$b $bits $gs $m 1 | awk '{print $NF, $8}')
    echo "$b|$c|$res" >> $out
  done
done
python3 - "$out" <<'PY'
import sys, statistics, collections
d=collections.defaultdict(list)
for line in open(sys.argv[1]):
    b,c,res=line.strip().split("|"); r,t=res.split(); d[(c,b)].append((float(r),float(t)))
for (c,b),v in sorted(d.items()):
    print(f"{c:20s} {b:22s} ratio med {statistics.median(x for x,_ in v):.3f}  time med {statistics.median(t for _,t in v):.0f}  all {' '.join(f'{x:.2f}' for x,_ in v)}")
PY
