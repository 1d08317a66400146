#!/usr/bin/env bash
# A/B of multi-process write scaling: a baseline ref against this checkout.
# usage: benchmarks/scaling_ab.sh BASE_REF [ROUNDS] [PROCS] [READS] [SECS]
#   BASE_REF  a git ref of this repository to compare against (required: e.g. HEAD~1)
#   ROUNDS    base/candidate alternations (default 5)
#   PROCS     process counts (default 1,2,4,8); READS: percent gets (default 0); SECS per run (1.5)
# 1. Engine level, steady under load: benchmarks/c/ab_epochs.c loads both engine builds into
#    the same processes and alternates them every ~2 ms, so whatever else runs falls on both
#    alike; run in both orders (the second build of a pair has a small handicap), for each
#    process count. cand/base > 1 means the candidate does more operations.
# 2. Python level (benchmarks/mp_scale.py's workload through uwcache.Cache): base and candidate
#    runs of benchmarks/mp_cpu.py alternate; medians of ops/s, the scaling against one process
#    and the CPU time per operation (each child's user+sys over its measured loop / ops), with
#    the load average of each run. On a shared machine trust part 1 and the CPU per op.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
base_ref="${1:?usage: benchmarks/scaling_ab.sh BASE_REF [ROUNDS] [PROCS] [READS] [SECS]}"; rounds="${2:-5}"; procs="${3:-1,2,4,8}"; reads="${4:-0}"; secs="${5:-1.5}"
py="${PYTHON:-python3}"
cc="${CC:-cc}"
# as root, nice -20 keeps other users of a shared machine from cutting the runs up (the
# processes under test must run at the same time for cache-line traffic to show)
nice=""; nice -n -20 true 2>/dev/null && nice="nice -n -20"
scratch="$(mktemp -d /tmp/uwc-ab.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
git -C "$root" archive "$base_ref" | tar -x -C "$scratch"
(cd "$scratch" && "$py" setup.py -q build_ext --inplace >/dev/null 2>&1)
(cd "$root" && "$py" setup.py -q build_ext --inplace >/dev/null 2>&1)

echo "== engine level: epoch-interleaved A/B (load: $(cut -d' ' -f1-3 /proc/loadavg))"
"$cc" -O2 -I"$scratch/engine" -shared -fPIC "$scratch/engine/cache.c" "$scratch/engine/hash.c" -o "$scratch/base.so"
"$cc" -O2 -I"$root/engine" -shared -fPIC "$root/engine/cache.c" "$root/engine/hash.c" -o "$scratch/cand.so"
"$cc" -O2 -I"$root/engine" "$root/benchmarks/c/ab_epochs.c" -o "$scratch/ab_epochs" -ldl
for n in ${procs//,/ }; do
  for i in $(seq "$rounds"); do
    $nice "$scratch/ab_epochs" "$scratch/base.so" "$scratch/cand.so" "$n" 2 "$reads" | sed 's/^/fwd /'
    $nice "$scratch/ab_epochs" "$scratch/cand.so" "$scratch/base.so" "$n" 2 "$reads" | sed 's/^/rev /'
  done
done > "$scratch/epochs"
"$py" - "$scratch/epochs" <<'PY'
import json, math, statistics, sys
by = {}
for line in open(sys.argv[1]):
    d, js = line.split(" ", 1)
    r = json.loads(js)
    by.setdefault(r["procs"], {"fwd": [], "rev": []})[d].append(r)
for n, rs in sorted(by.items()):
    fwd = statistics.median(r["b_over_a"] for r in rs["fwd"])        # cand/base, cand second
    rev = statistics.median(r["b_over_a"] for r in rs["rev"])        # base/cand, base second
    loads = ",".join("%.1f" % r["load"] for r in rs["fwd"] + rs["rev"])
    print(f"{n}p: cand/base = {math.sqrt(fwd / rev):.3f} (medians: {fwd:.3f} cand second, "
          f"{1 / rev:.3f} base second; load {loads})")
PY

echo "== Python level: alternating mp_cpu.py runs"
out="$scratch/results"
for i in $(seq "$rounds"); do
  for arm in base cand; do
    src="$root/src"; [ "$arm" = base ] && src="$scratch/src"
    (cd /tmp && PYTHONPATH="$src" $nice "$py" "$root/benchmarks/mp_cpu.py" "$procs" "$reads" "$secs" 1) \
      | grep -v MEDIAN | sed "s/^/$arm /" >> "$out"
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
