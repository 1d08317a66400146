#!/usr/bin/env bash
# A/B of multi-process write scaling: a baseline build against this checkout, interleaved.
# usage: benchmarks/scaling_ab.sh [BASE_REF] [ROUNDS] [PROCS] [READS] [SECS]
#   BASE_REF  a git ref of this repository to compare against (default: main)
#   ROUNDS    base/candidate alternations (default 5); each runs benchmarks/mp_cpu.py once
# Builds BASE_REF into a scratch directory and this checkout in place, then alternates
# base, candidate, base, ... and prints, per process count, the median ops/s, the scaling
# against one process and the CPU time per operation (children's user+sys / ops), with the
# load average of every run. On a shared machine trust the CPU per op and the medians.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
base_ref="${1:-main}"; rounds="${2:-5}"; procs="${3:-1,2,4,8}"; reads="${4:-0}"; secs="${5:-1.5}"
py="${PYTHON:-/work/venv/bin/python}"
[ -x "$py" ] || py=python3
scratch="$(mktemp -d /tmp/uwc-ab.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
git -C "$root" archive "$base_ref" | tar -x -C "$scratch"
(cd "$scratch" && "$py" setup.py -q build_ext --inplace >/dev/null 2>&1)
(cd "$root" && "$py" setup.py -q build_ext --inplace >/dev/null 2>&1)
out="$scratch/results"
for i in $(seq "$rounds"); do
  for arm in base cand; do
    src="$root/src"; [ "$arm" = base ] && src="$scratch/src"
    (cd /tmp && PYTHONPATH="$src" "$py" "$root/benchmarks/mp_cpu.py" "$procs" "$reads" "$secs" 1) \
      | grep -v MEDIAN | sed "s/^/$arm /" | tee -a "$out"
  done
done
"$py" - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    arm, js = line.split(" ", 1)
    r = json.loads(js)
    rows.setdefault((arm, r["procs"]), []).append(r)
for arm in ("base", "cand"):
    one = statistics.median(r["ops_s"] for r in rows[(arm, min(p for a, p in rows if a == arm))])
    for (a, p), rs in sorted(rows.items()):
        if a != arm:
            continue
        ops = statistics.median(r["ops_s"] for r in rs)
        ns = statistics.median(r["cpu_ns_op"] for r in rs)
        loads = ",".join("%.1f" % r["load"] for r in rs)
        print(f"{arm} {p}p: {ops/1e6:6.2f} M ops/s  {ops/one:4.2f}x  cpu {ns:6.1f} ns/op  (n={len(rs)}, load {loads})")
PY
