"""Benchmark worker: runs one job (a JSON file) and writes its results (a JSON file).

Run by bench.py inside uWSGI, so that uWSGI's cache, uwcache and every other system are
measured by the same interpreter in the same process, interleaved round by round:

    uwsgi -H VENV --cache2 name=b100,... --pyrun benchmarks/worker.py --pyargv JOB.json

It also runs under plain Python (``python worker.py JOB.json``), without the uWSGI backend.
Phases (job["phase"]): latency, throughput, scaling, memory, profile.
"""

from __future__ import annotations

import gc
import json
import os
import random
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0] if sys.argv and sys.argv[0] else __file__)))

import backends as bk  # noqa: E402
import workload as wl  # noqa: E402

perf_ns = time.perf_counter_ns


# ---- timing loops (identical for every backend: bound callables, no wrappers) ------------

def t_get(get: Callable, keys: Sequence[bytes]) -> int:
    t0 = perf_ns()
    for k in keys:
        get(k)
    return perf_ns() - t0


def t_set(set_: Callable, keys: Sequence[bytes], value: bytes) -> int:
    t0 = perf_ns()
    for k in keys:
        set_(k, value)
    return perf_ns() - t0


def t_delete(delete: Callable, keys: Sequence[bytes]) -> int:
    t0 = perf_ns()
    for k in keys:
        delete(k)
    return perf_ns() - t0


# the same loops for uWSGI-style calls that name their cache (Ops.cache_arg): used alike by
# uwcache-compat-named and uwsgi-named, so the extra argument costs both sides the same

def t_get_named(get: Callable, keys: Sequence[bytes], cache: str) -> int:
    t0 = perf_ns()
    for k in keys:
        get(k, cache)
    return perf_ns() - t0


def t_set_named(set_: Callable, keys: Sequence[bytes], value: bytes, cache: str) -> int:
    t0 = perf_ns()
    for k in keys:
        set_(k, value, 0, cache)
    return perf_ns() - t0


def t_delete_named(delete: Callable, keys: Sequence[bytes], cache: str) -> int:
    t0 = perf_ns()
    for k in keys:
        delete(k, cache)
    return perf_ns() - t0


def time_get(ops: bk.Ops, keys: Sequence[bytes]) -> int:
    return t_get(ops.get, keys) if ops.cache_arg is None else t_get_named(ops.get, keys, ops.cache_arg)


def time_set(ops: bk.Ops, keys: Sequence[bytes], value: bytes) -> int:
    if ops.cache_arg is None:
        return t_set(ops.set, keys, value)
    return t_set_named(ops.set, keys, value, ops.cache_arg)


def time_delete(ops: bk.Ops, keys: Sequence[bytes]) -> int:
    return t_delete(ops.delete, keys) if ops.cache_arg is None else t_delete_named(ops.delete, keys, ops.cache_arg)


def op_get(ops: bk.Ops, k: bytes) -> Any:
    return ops.get(k) if ops.cache_arg is None else ops.get(k, ops.cache_arg)


def fill(ops: bk.Ops, keys: Sequence[bytes], value: bytes) -> None:
    if ops.cache_arg is not None:
        for k in keys:
            ops.set(k, value, 0, ops.cache_arg)
        return
    for k in keys:
        ops.set(k, value)


def verify(ops: bk.Ops, keys: Sequence[bytes], miss: Sequence[bytes], value: bytes) -> None:
    """Make sure we time real hits, real misses and writes that happened."""
    bad = [k for k in keys if op_get(ops, k) != value]
    if bad:
        raise RuntimeError(f"{ops.name}: {len(bad)} of {len(keys)} keys not readable after set (full cache?)")
    if any(op_get(ops, k) is not None for k in miss[:50]):
        raise RuntimeError(f"{ops.name}: a miss key returned a value")


def summarize(samples: Sequence[float]) -> Dict[str, float]:
    s = sorted(samples)
    n = len(s)

    def q(p: float) -> float:
        if n == 1:
            return s[0]
        x = p * (n - 1)
        i = int(x)
        f = x - i
        return s[i] + (s[min(i + 1, n - 1)] - s[i]) * f

    return {"n": n, "min": s[0], "median": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": s[-1],
            "mean": sum(s) / n}


# ---- phase: per-op latency ---------------------------------------------------------------

LAT_OPS = ("get_hit", "get_miss", "set", "delete")


def phase_latency(job: Dict[str, Any], env: bk.Env) -> Dict[str, Any]:
    vs = job["value_size"]
    name = wl.cache_name(vs)
    keys = wl.shuffled(wl.make_keys(), 1)
    miss = wl.shuffled(wl.make_keys(prefix="m"), 2)
    value = wl.make_value(vs)
    names = [b for b in job["backends"] if b in bk.available(env)]
    if {"uwcache", "uwcache-compat", "uwcache-compat-named", "uwcache-wyhash"} & set(names):
        bk.uwcache_node(env, [(name, wl.MAX_ITEMS, wl.block_size_for(vs), 65536)], wyhash="uwcache-wyhash" in names)
    systems: Dict[str, bk.Ops] = {}
    batches: Dict[str, int] = {}
    for b in names:
        ops = bk.FACTORIES[b](env, name)
        fill(ops, keys, value)
        verify(ops, keys, miss, value)
        # warm-up, and decide how many batches per round this system can afford
        time_get(ops, keys)
        time_get(ops, miss)
        time_set(ops, keys, value)
        per_op = time_get(ops, keys) / len(keys)
        batches[b] = job["fast_batches"] if per_op < 2000 else 1
        systems[b] = ops

    samples: Dict[str, Dict[str, List[float]]] = {b: {op: [] for op in LAT_OPS} for b in systems}
    rng = random.Random(3)
    order = list(systems)
    gc.disable()
    try:
        for r in range(job["rounds"]):
            rng.shuffle(order)  # no system always runs right after the same neighbour
            for b in order:
                ops = systems[b]
                s = samples[b]
                for _ in range(batches[b]):
                    s["get_hit"].append(time_get(ops, keys) / len(keys))
                    s["get_miss"].append(time_get(ops, miss) / len(miss))
                    s["set"].append(time_set(ops, keys, value) / len(keys))
                    s["delete"].append(time_delete(ops, keys) / len(keys))
                    fill(ops, keys, value)  # untimed: put back what delete removed
    finally:
        gc.enable()
    for b, ops in systems.items():
        verify(ops, keys, miss, value)
    out = {"value_size": vs, "results": {}}
    for b in systems:
        out["results"][b] = {op: summarize(samples[b][op]) for op in LAT_OPS}
        out["results"][b]["batches_per_round"] = batches[b]
    for ops in systems.values():
        ops.close()
    bk.close_nodes()
    return out


# ---- phase: multi-process throughput ------------------------------------------------------

def child_loop(get: Callable, set_: Callable, blocks: Sequence[Tuple[Tuple[bytes, ...], Optional[bytes]]],
               value: bytes, duration: float) -> Tuple[int, float]:
    per = wl.ops_per_pass(blocks)
    n = 0
    clock = time.perf_counter
    t0 = clock()
    end = t0 + duration
    while True:
        for gk, sk in blocks:
            for k in gk:
                get(k)
            if sk is not None:
                set_(sk, value)
        n += per
        t = clock()
        if t >= end:
            return n, t - t0


def run_procs(n: int, make_ops: Callable[[], bk.Ops], gets_per_set: int, keys: Sequence[bytes], value: bytes,
              duration: float, seed: int) -> Dict[str, Any]:
    """Fork n processes (after the cache is open), release them together, sum their ops/s."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                os.close(ready_r)
                os.close(go_w)
                os.close(res_r)
                ops = make_ops()
                blocks = wl.mix_blocks(keys, gets_per_set, 1000, seed * 100 + i)
                child_loop(ops.get, ops.set, blocks, value, 0.02)  # warm-up
                gc.disable()
                os.write(ready_w, b"r")
                os.read(go_r, 1)
                cpu0 = time.process_time()
                done, elapsed = child_loop(ops.get, ops.set, blocks, value, duration)
                # CPU time too: on a box shared with other jobs the wall-clock total mostly shows
                # how much CPU we got; ops per CPU-second shows what contention costs
                msg = {"ops": done, "elapsed": elapsed, "cpu": time.process_time() - cpu0}
            except BaseException as exc:  # report, never fall back into the parent's code
                msg = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
                code = 1
            os.write(res_w, (json.dumps(msg) + "\n").encode())
            os._exit(code)
        pids.append(pid)
    os.close(ready_w)
    os.close(go_r)
    os.close(res_w)
    got = 0
    while got < n:
        chunk = os.read(ready_r, n - got)
        if not chunk:
            break
        got += len(chunk)
    os.write(go_w, b"g" * n)
    buf = b""
    while True:
        chunk = os.read(res_r, 65536)
        if not chunk:
            break
        buf += chunk
    for pid in pids:
        os.waitpid(pid, 0)
    for fd in (ready_r, go_w, res_r):
        os.close(fd)
    per_proc = [json.loads(line) for line in buf.decode().splitlines() if line.strip()]
    errors = [p["error"] for p in per_proc if "error" in p]
    if errors or len(per_proc) != n:
        raise RuntimeError(f"throughput run failed: {errors or per_proc}")
    return {"total_ops_s": sum(p["ops"] / p["elapsed"] for p in per_proc),
            "per_proc_ops_s": [p["ops"] / p["elapsed"] for p in per_proc],
            "ops_per_cpu_s": sum(p["ops"] for p in per_proc) / max(1e-9, sum(p["cpu"] for p in per_proc))}


def phase_throughput(job: Dict[str, Any], env: bk.Env) -> Dict[str, Any]:
    vs = job["value_size"]
    name = wl.cache_name(vs)
    keys = wl.make_keys()
    value = wl.make_value(vs)
    names = [b for b in job["backends"] if b in bk.available(env)]
    if {"uwcache", "uwcache-compat", "uwcache-compat-named", "uwcache-wyhash"} & set(names):
        bk.uwcache_node(env, [(name, wl.MAX_ITEMS, wl.block_size_for(vs), 65536)], wyhash="uwcache-wyhash" in names)
    makers: Dict[str, Callable[[], bk.Ops]] = {}
    closers = []
    for b in names:
        ops = bk.FACTORIES[b](env, name)  # fresh: create + fill once, in the parent
        fill(ops, keys, value)
        if b in bk.CONNECT_AFTER_FORK:
            closers.append(ops.close)
            makers[b] = (lambda f=bk.CONNECT_AFTER_FORK[b]: f(env, name, fresh=False))
        else:
            makers[b] = (lambda o=ops: o)  # opened before fork: children inherit it
    runs: List[Dict[str, Any]] = []
    seed = 0
    for rep in range(job["repeats"]):
        for mix in job["mixes"]:
            for n in job["procs"]:
                for b in names:  # innermost: systems side by side under the same conditions
                    seed += 1
                    r = run_procs(n, makers[b], wl.MIXES[mix], keys, value, job["duration"], seed)
                    runs.append({"system": b, "mix": mix, "procs": n, "repeat": rep, **r})
                    print(f"[bench] {b:15s} {mix:6s} x{n}: {r['total_ops_s'] / 1e6:7.3f} M ops/s", flush=True)
    for c in closers:
        c()
    bk.close_nodes()
    return {"value_size": vs, "duration": job["duration"], "runs": runs}


# ---- phase: scaling with the number of items --------------------------------------------

def phase_scaling(job: Dict[str, Any], env: bk.Env) -> Dict[str, Any]:
    n_items = job["items"]
    hash_size = job["hash_size"]
    vs = job["value_size"]
    name = job["cache"]
    value = wl.make_value(vs)
    keys = wl.make_keys(n_items, prefix="s")
    rng = random.Random(5)
    # random access over the whole key set: what a large cache really sees
    batches = [[keys[rng.randrange(n_items)] for _ in range(wl.BATCH)] for _ in range(50)]
    # and the same 1000 "hot" keys whatever the size: the algorithmic cost without the
    # memory hierarchy (uniform access over 1M items is mostly cache and TLB misses)
    hot = rng.sample(keys, min(n_items, wl.BATCH))
    hot_batches = [rng.sample(hot, len(hot)) for _ in range(6)]
    names = [b for b in job["backends"] if b in bk.available(env)]
    if "uwcache" in names:
        bk.uwcache_node(env, [(name, job["max_items"], wl.block_size_for(vs), hash_size)])
    systems = {}
    for b in names:
        ops = bk.FACTORIES[b](env, name)
        t0 = time.perf_counter()
        fill(ops, keys, value)
        fill_s = time.perf_counter() - t0
        bad = sum(1 for k in batches[0] if ops.get(k) != value)
        if bad:
            raise RuntimeError(f"{b}: {bad} keys missing after filling {n_items} items")
        systems[b] = (ops, fill_s)
    samples = {b: {"get_hit": [], "set": [], "get_hot": [], "set_hot": []} for b in systems}
    order = list(systems)
    gc.disable()
    try:
        for r in range(job["rounds"]):
            rng.shuffle(order)
            for b in order:
                ops = systems[b][0]
                # different keys for gets and sets: a set right after a get of the same keys
                # would find them in the CPU caches
                picked = rng.sample(batches, 6)
                for batch in picked[:3]:
                    samples[b]["get_hit"].append(t_get(ops.get, batch) / len(batch))
                for batch in picked[3:]:
                    samples[b]["set"].append(t_set(ops.set, batch, value) / len(batch))
                for batch in rng.sample(hot_batches, 2):
                    samples[b]["get_hot"].append(t_get(ops.get, batch) / len(batch))
                    samples[b]["set_hot"].append(t_set(ops.set, batch, value) / len(batch))
    finally:
        gc.enable()
    out = {"items": n_items, "hash_size": hash_size, "value_size": vs, "results": {}}
    for b, (ops, fill_s) in systems.items():
        out["results"][b] = {op: summarize(s) for op, s in samples[b].items()}
        out["results"][b]["fill_s"] = fill_s
        ops.close()
    bk.close_nodes()
    return out


# ---- phase: memory per item ---------------------------------------------------------------

def smaps() -> List[Dict[str, Any]]:
    """Mappings of this process with their Size/Rss in bytes."""
    maps = []
    cur: Optional[Dict[str, Any]] = None
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if parts and "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                cur = {"range": parts[0], "perms": parts[1], "path": " ".join(parts[5:]), "size": hi - lo,
                       "rss": 0}
                maps.append(cur)
            elif cur is not None and parts and parts[0] == "Rss:":
                cur["rss"] = int(parts[1]) * 1024
    return maps


def shared_anon(maps: List[Dict[str, Any]]) -> Tuple[int, int]:
    """Size and Rss of the shared anonymous mappings (where uWSGI puts its caches)."""
    sel = [m for m in maps if m["perms"].endswith("s") and m["path"].startswith(("/dev/zero", "[anon_shmem"))]
    return sum(m["size"] for m in sel), sum(m["rss"] for m in sel)


def phase_memory(job: Dict[str, Any], env: bk.Env) -> Dict[str, Any]:
    """Fill n items and measure what each system uses for them."""
    n_items = job["items"]
    vs = job["value_size"]
    name = job["cache"]
    keys = wl.make_keys(n_items, prefix="s")
    value = wl.make_value(vs)
    out: Dict[str, Any] = {"items": n_items, "value_size": vs, "max_items": job["max_items"],
                           "block_size": wl.block_size_for(vs), "results": {}}
    names = [b for b in job["backends"] if b in bk.available(env)]
    if "uwsgi" in names:
        size0, rss0 = shared_anon(smaps())
        ops = bk.FACTORIES["uwsgi"](env, name)
        fill(ops, keys, value)
        size1, rss1 = shared_anon(smaps())
        # the baseline (tiny cache) instance's numbers are subtracted by bench.py
        out["results"]["uwsgi"] = {"shared_size": size1, "shared_rss": rss1, "shared_rss_before_fill": rss0}
    if "uwcache" in names:
        node = bk.uwcache_node(env, [(name, job["max_items"], wl.block_size_for(vs), 65536)])
        c = node.cache(name)
        path = c.path
        ops = bk.FACTORIES["uwcache"](env, name)
        rss0 = sum(m["rss"] for m in smaps() if m["path"] == path)
        fill(ops, keys, value)
        m = [m for m in smaps() if m["path"] == path]
        out["results"]["uwcache"] = {"region_size": c.region_size, "mapping_size": sum(x["size"] for x in m),
                                     "rss": sum(x["rss"] for x in m), "rss_before_fill": rss0,
                                     "file_size": os.path.getsize(path)}
        bk.close_nodes()
    if "dict" in names and job.get("others", True):
        import tracemalloc

        def build() -> int:
            a = tracemalloc.get_traced_memory()[0]
            # one distinct value object per item, as an application would hold them
            fresh_keys = wl.make_keys(n_items, prefix="s")
            d = {k: value[:-1] + bytes([i & 255]) for i, k in enumerate(fresh_keys)}
            del fresh_keys  # the list is not part of the storage, the key objects are
            assert len(d) == n_items
            return tracemalloc.get_traced_memory()[0] - a

        tracemalloc.start()
        used = build()
        tracemalloc.stop()
        out["results"]["dict"] = {"bytes": used, "note": "keys + values + dict (tracemalloc)"}
    if "redis" in names and job.get("others", True):
        import redis

        r = redis.Redis(unix_socket_path=env.redis_socket)
        r.flushall()
        before = r.info("memory")["used_memory"]
        p = r.pipeline(transaction=False)
        for i, k in enumerate(keys):
            p.set(k, value)
            if i % 1000 == 999:
                p.execute()
        p.execute()
        after = r.info("memory")["used_memory"]
        out["results"]["redis"] = {"bytes": after - before, "note": "INFO used_memory delta"}
        r.flushall()
        r.close()
    if "memcached" in names and job.get("others", True):
        from pymemcache.client.base import Client

        c = Client(env.memcached_socket, default_noreply=False)
        c.flush_all()
        time.sleep(1.1)  # flush_all marks items invalid as of the current second
        s0 = c.stats("slabs")
        malloc0 = int(s0.get(b"total_malloced", 0))
        for i in range(0, n_items, 500):
            c.set_many({k: value for k in keys[i:i + 500]}, noreply=False)
        s1 = c.stats()
        malloc1 = int(c.stats("slabs").get(b"total_malloced", 0))
        out["results"]["memcached"] = {"bytes": malloc1 - malloc0, "item_bytes": int(s1[b"bytes"]),
                                       "curr_items": int(s1[b"curr_items"]),
                                       "note": "slab memory malloced (total_malloced delta)"}
        c.flush_all()
        c.close()
    if "diskcache" in names and job.get("others", True):
        ops = bk.FACTORIES["diskcache"](env, name)
        fill(ops, keys, value)
        path = ops.info["path"]
        total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(path) for f in fs)
        out["results"]["diskcache"] = {"bytes": total, "note": "files on tmpfs (sqlite + WAL)"}
        ops.close()
    return out


# ---- phase: a fixed number of ops, for callgrind's instruction counts ---------------------

def phase_profile(job: Dict[str, Any], env: bk.Env) -> Dict[str, Any]:
    vs = job["value_size"]
    name = wl.cache_name(vs)
    keys = wl.shuffled(wl.make_keys(), 1)
    miss = wl.shuffled(wl.make_keys(prefix="m"), 2)
    value = wl.make_value(vs)
    b = job["backend"]
    if b in ("uwcache", "uwcache-compat", "uwcache-wyhash"):
        bk.uwcache_node(env, [(name, wl.MAX_ITEMS, wl.block_size_for(vs), 65536)], wyhash=b == "uwcache-wyhash")
    ops = bk.FACTORIES[b](env, name)
    fill(ops, keys, value)
    t_get(ops.get, keys)  # every code path warm (first-call setup is not per-op cost)
    t_get(ops.get, miss)
    t_set(ops.set, keys, value)
    passes = job["ops"] // len(keys)
    op = job["op"]
    for _ in range(passes):
        if op == "get_hit":
            t_get(ops.get, keys)
        elif op == "get_miss":
            t_get(ops.get, miss)
        elif op == "set":
            t_set(ops.set, keys, value)
        elif op == "none":
            t_get(len, keys)  # the loop itself with a trivial C call: the baseline
    ops.close()
    bk.close_nodes()
    return {"backend": b, "op": op, "ops": passes * len(keys)}


def phase_iscale(job: Dict[str, Any], env: bk.Env) -> Dict[str, Any]:
    """Instructions per get/set vs number of items, under callgrind started with
    instrumentation off: fill at near-native speed, then switch it on for the measured ops
    (bench.py collects only inside the get/set C functions)."""
    import subprocess

    n_items = job["items"]
    name = job["cache"]
    value = wl.make_value(job["value_size"])
    keys = wl.make_keys(n_items, prefix="s")
    b = job["backend"]
    if b == "uwcache":
        bk.uwcache_node(env, [(name, job["max_items"], wl.block_size_for(job["value_size"]), job["hash_size"])])
    ops = bk.FACTORIES[b](env, name)
    fill(ops, keys, value)
    rng = random.Random(9)
    sample = [keys[rng.randrange(n_items)] for _ in range(job["ops"])]
    subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True, check=True)
    t = time.perf_counter()
    while time.perf_counter() - t < 0.5:  # let valgrind pick the command up before measuring
        pass
    t_get(ops.get, sample)
    t_set(ops.set, sample, value)
    ops.close()
    bk.close_nodes()
    return {"ops": len(sample)}


PHASES = {"iscale": phase_iscale, "latency": phase_latency, "throughput": phase_throughput, "scaling": phase_scaling,
          "memory": phase_memory, "profile": phase_profile}


def main(argv: List[str]) -> int:
    job_path = argv[-1]
    with open(job_path) as f:
        job = json.load(f)
    env = bk.Env.from_dict(job["env"])
    env.in_uwsgi = bk.uwsgi_available()
    result: Dict[str, Any]
    try:
        result = PHASES[job["phase"]](job, env)
        result["ok"] = True
    except BaseException as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
    result["in_uwsgi"] = env.in_uwsgi
    result["pid"] = os.getpid()
    with open(job["out"], "w") as f:
        json.dump(result, f)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
