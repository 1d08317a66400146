"""uWSGI's multi-process throughput measured the way a deployment runs: N mules of ONE
uWSGI instance (they share its caches, like workers do), started together through a
barrier of files, each reporting its ops/s through a file:

    UWCACHE_BENCH_JOB=job.json uwsgi --master --die-on-term --socket DIR/u.sock \\
        --cache2 name=b100,... --mule=benchmarks/uwsgi_mule.py --mule=... (N times)

bench.py waits for DIR/ready.<i> from every mule, creates DIR/go, collects
DIR/result.<i> and stops the instance. A mule whose script returns is respawned by the
master, so after reporting the mule just waits to be stopped.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

import uwsgi

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import workload as wl  # noqa: E402
from worker import child_loop  # noqa: E402


def main() -> None:
    with open(os.environ["UWCACHE_BENCH_JOB"]) as f:
        job = json.load(f)
    mid = uwsgi.mule_id()
    d = job["dir"]
    result = os.path.join(d, f"result.{mid}")
    if os.path.exists(result):  # respawned after reporting: nothing left to do
        while True:
            time.sleep(3600)
    keys = wl.make_keys()
    value = wl.make_value(job["value_size"])
    get, set_ = uwsgi.cache_get, uwsgi.cache_update
    for k in keys:
        set_(k, value)
    blocks = wl.mix_blocks(keys, wl.MIXES[job["mix"]], 1000, job["seed"] * 100 + mid)
    child_loop(get, set_, blocks, value, 0.02)  # warm-up
    gc.disable()
    with open(os.path.join(d, f"ready.{mid}"), "w") as f:
        f.write(str(os.getpid()))
    go = os.path.join(d, "go")
    while not os.path.exists(go):
        time.sleep(0.0002)
    cpu0 = time.process_time()
    n, elapsed = child_loop(get, set_, blocks, value, job["duration"])
    cpu = time.process_time() - cpu0
    tmp = result + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"ops": n, "elapsed": elapsed, "cpu": cpu, "pid": os.getpid()}, f)
    os.rename(tmp, result)
    while True:
        time.sleep(3600)


main()
