"""Multi-process write scaling with CPU time per operation.

The workload is benchmarks/mp_scale.py's (a cache of 2000 items, block 128, key_size 64; 1000 hot
keys; 100-byte values; N forked processes), and besides the aggregate ops/s it reports the CPU
time (user + sys of each child over its measured loop, from getrusage) per operation. Cache-line contention shows up
as more CPU per op at 2 processes than at 1, whatever CPU other users of the machine leave us.

usage: python mp_cpu.py PROCS READS SECS REPEATS   e.g. 1,2,4,8 0 1.5 3
Prints one JSON line per run: {"procs": N, "reads": R, "ops_s": ..., "cpu_ns_op": ..., "load": ...}
and the medians per process count at the end (line starting with MEDIAN).
Run it with PYTHONPATH pointing at the uwcache build under test (benchmarks/scaling_ab.sh).
"""
import json
import os
import random
import resource
import statistics
import sys
import time

KEYS = ["key:%08d:abcdefgh" % i for i in range(1000)]


def worker(get, put, reads, secs, wfd, start_at):
    rnd = random.Random(os.getpid())
    ops = [(rnd.random() * 100 < reads, rnd.choice(KEYS)) for _ in range(4096)]
    val = b"v" * 100
    while time.time() < start_at:
        pass
    n = 0
    end = start_at + secs
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    while time.time() < end:
        for is_get, k in ops:
            if is_get:
                get(k)
            else:
                put(k, val)
        n += len(ops)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    os.write(wfd, b"%d %.6f\n" % (n, cpu))
    os._exit(0)


def run(nproc, get, put, reads, secs):
    r, w = os.pipe()
    start_at = time.time() + 0.2 + 0.02 * nproc
    pids = []
    for _ in range(nproc):
        pid = os.fork()
        if pid == 0:
            os.close(r)
            worker(get, put, reads, secs, w, start_at)
        pids.append(pid)
    os.close(w)
    for p in pids:
        os.waitpid(p, 0)
    lines = [x.split() for x in os.read(r, 1 << 20).decode().splitlines()]
    os.close(r)
    total = sum(int(n) for n, _ in lines)
    cpu = sum(float(c) for _, c in lines)  # measured loop only, not the busy wait before the start
    return total / secs, cpu, total


def main():
    procs = [int(x) for x in sys.argv[1].split(",")]
    reads = int(sys.argv[2])
    secs = float(sys.argv[3])
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    import uwcache

    # a namespace of its own: another benchmark of the same geometry must not share the region
    ns = "mpcpu%d" % os.getpid()
    caching = uwcache.Caching(ns)
    caching.add_cache("tp", max_items=2000, block_size=128, key_size=64)
    node = caching.start()
    c = node.cache("tp")
    for k in KEYS:
        c.set(k, b"v" * 100)
    res = {n: [] for n in procs}
    for _ in range(repeats):
        for n in procs:
            ops_s, cpu, total = run(n, c.get, c.set, reads, secs)
            load = os.getloadavg()[0]
            row = {"procs": n, "reads": reads, "ops_s": round(ops_s), "cpu_ns_op": round(cpu * 1e9 / max(total, 1), 1),
                   "cpu_share": round(cpu / secs, 2), "load": load}
            res[n].append(row)
            print(json.dumps(row), flush=True)
    med = {n: {"ops_s": statistics.median(r["ops_s"] for r in rows),
               "cpu_ns_op": statistics.median(r["cpu_ns_op"] for r in rows)} for n, rows in res.items()}
    base = med[procs[0]]["ops_s"]
    print("MEDIAN " + json.dumps({n: dict(m, x=round(m["ops_s"] / base, 2)) for n, m in med.items()}), flush=True)
    node.close()
    from uwcache.cache import destroy

    destroy("tp", namespace=ns)
    try:
        os.rmdir(os.path.join(os.environ.get("UWCACHE_SHM_DIR", "/dev/shm"), "uwcache-" + ns))
    except OSError:
        pass


if __name__ == "__main__":
    main()
