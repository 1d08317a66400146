"""Near cache benchmarks (issue 11): L1 hit vs Cache.get vs redis-py GET vs redis-py's
client-side cache; invalidation latency; staleness after the listener dies; GETs per hot key
with 4 cold workers; listener invalidation throughput.

Run from the repository root (after building): ``PYTHONPATH=src python benchmarks/near.py``.
It starts private redis-server / valkey-server processes on free loopback ports, writes
benchmarks/data/near.json and replaces the "Near cache" section at the end of
benchmarks/RESULTS.md. Wall-clock numbers: take them as ratios within one run on a shared box.
"""
from __future__ import annotations

import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any, Callable, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
os.environ.setdefault("UWCACHE_SHM_DIR", tempfile.mkdtemp(prefix="uwcache-bench-near-"))

import redis  # noqa: E402

import uwcache  # noqa: E402
from near_servers import Server, redis_server_bin, valkey_server_bin  # noqa: E402


def per_op_ns(fn: Callable[[], Any], n: int, repeat: int = 7) -> float:
    best = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best.append((time.perf_counter_ns() - t0) / n)
    return statistics.median(best)


def pct(values: List[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


NODE = textwrap.dedent("""
    import sys, time, uwcache
    ns, url, lease_ms = sys.argv[1], sys.argv[2], int(sys.argv[3])
    node = (uwcache.Caching(namespace=ns).add_cache("pages", max_items=20000, block_size=256, key_size=64)
            .add_near("pages", redis=url, prefix="b:", lease_ms=lease_ms)).start()
    assert node._near.listeners[0].connected.wait(10)
    print("ready", flush=True)
    while True:
        time.sleep(1)
""")


def server_endpoint(server: Server) -> Any:
    from uwcache.near import parse_redis_url

    return parse_redis_url(server.url)


def start_node(ns: str, url: str, lease_ms: int = 300) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", NODE, ns, url, str(lease_ms)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def bench_server(kind: str, server: Server) -> Dict[str, Any]:
    out: Dict[str, Any] = {"server": kind}
    ns = f"bench-{kind.split()[0]}-{os.getpid()}"
    node = start_node(ns, server.url)
    try:
        near = uwcache.near("pages", namespace=ns)
        plain = server.client()
        plain.set("b:hot", b"v" * 100)
        near.sync()
        assert near.get("hot") == b"v" * 100
        cache = near.cache
        cache.set(b"plain", b"v" * 100)
        get, cget, rget = near.get, cache.get, plain.get
        out["l1_hit_ns"] = per_op_ns(lambda: get("hot"), 200_000)
        out["cache_get_ns"] = per_op_ns(lambda: cget(b"plain"), 200_000)
        out["redis_py_get_ns"] = per_op_ns(lambda: rget("b:hot"), 3_000, repeat=5)
        try:
            from redis.cache import CacheConfig

            csc = redis.Redis(host="127.0.0.1", port=server.port, protocol=3, cache_config=CacheConfig())
            csc.get("b:hot")
            out["redis_py_csc_ns"] = per_op_ns(lambda: csc.get("b:hot"), 20_000)
        except Exception as exc:  # refused on Redis < 7.4 and on Valkey
            out["redis_py_csc_ns"] = None
            out["redis_py_csc_refused"] = f"{type(exc).__name__}: {exc}"

        # a write by another client removes the L1 entry: time until it is gone
        delays = []
        for i in range(400):
            plain.set("b:inv", b"x%d" % i)
            near.sync()
            near.get("inv")
            t0 = time.perf_counter()
            plain.set("b:inv", b"y")
            while cache._near_peek(b"b:inv") is not None:
                time.sleep(0)  # yield the CPU: on a 2-core box a spinning poller delays the listener
            delays.append((time.perf_counter() - t0) * 1e6)
        out["invalidate_us_p50"], out["invalidate_us_p99"] = pct(delays, 0.5), pct(delays, 0.99)

        # 4 cold workers warming 2000 hot keys
        keys = [f"h{i}" for i in range(2000)]
        plain.mset({"b:" + k: b"v" * 100 for k in keys})
        near.sync()
        plain.config_resetstat()
        start = time.time() + 0.5
        pids = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    h = uwcache.near("pages", namespace=ns)
                    h.redis.ping()
                    time.sleep(max(0.0, start - time.time()))
                    code = 0 if all(h.get(k) is not None for k in keys) else 2
                finally:
                    os._exit(code)
            pids.append(pid)
        assert all(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) == 0 for p in pids)
        gets = plain.info("commandstats").get("cmdstat_get", {}).get("calls", 0)
        out["cold_workers_gets_per_key"] = gets / len(keys)
        out["per_process_caches_gets_per_key"] = 4.0  # each process fetches each key once

        # engine: batched invalidation throughput (what the listener calls per push batch)
        batch = [b"b:h%d" % i for i in range(2000)]
        t0 = time.perf_counter()
        rounds = 50
        for _ in range(rounds):
            cache._near_invalidate(batch)
        out["engine_invalidations_per_s"] = rounds * len(batch) / (time.perf_counter() - t0)
        # the listener's apply path without a socket: RESP pushes parsed, keys invalidated
        from uwcache.net.near_listener import NearListener
        from uwcache.net.resp import Parser

        keys_bytes = [b"b:e-%d" % i for i in range(5000)]
        push = (b">2\r\n$10\r\ninvalidate\r\n*5000\r\n"
                + b"".join(b"$%d\r\n%s\r\n" % (len(k), k) for k in keys_bytes))
        listener = NearListener(cache, server_endpoint(server), b"b:", 300)
        parser = Parser()
        t0 = time.perf_counter()
        for _ in range(40):
            for j in range(0, len(push), 1 << 18):
                parser.feed(push[j:j + (1 << 18)])
            listener._apply(list(parser))
        out["listener_apply_per_s"] = 40 * 5000 / (time.perf_counter() - t0)
        # end to end: redis-cli --pipe writes 200k keys; time until all were applied
        before = near.stats()["invalidations_received"]
        cmds = "".join(f"SET b:e{i} 1\r\n" for i in range(200_000)).encode()
        t0 = time.perf_counter()
        subprocess.run(["redis-cli", "-p", str(server.port), "--pipe"], input=cmds, capture_output=True, check=True)
        writer = time.perf_counter() - t0
        while near.stats()["invalidations_received"] - before < 200_000 and time.perf_counter() - t0 < 60:
            time.sleep(0.001)
        out["end_to_end_invalidations_per_s"] = 200_000 / (time.perf_counter() - t0)
        out["writer_sets_per_s"] = 200_000 / writer
        plain.close()
    finally:
        os.kill(node.pid, signal.SIGKILL)
        node.wait()

    # staleness after the listener dies (SIGKILL), lease_ms=300
    node = start_node(ns + "-kill", server.url, 300)
    near = uwcache.near("pages", namespace=ns + "-kill")
    plain = server.client()
    plain.set("b:k", b"v1")
    near.sync()
    near.get("k")
    os.kill(node.pid, signal.SIGKILL)
    node.wait()
    plain.set("b:k", b"v2")
    t0 = time.perf_counter()
    while near.get("k") == b"v1":
        time.sleep(0.0002)
    out["stale_after_listener_sigkill_ms"] = (time.perf_counter() - t0) * 1000
    out["lease_ms"] = 300
    plain.close()
    return out


def section(results: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    lines = ["## Near cache", "",
             f"Generated by `PYTHONPATH=src python benchmarks/near.py` ({meta['when']}, uwcache {meta['commit']}, "
             f"load average {meta['load']}; a shared 2-core box: ratios within the run are what to trust). "
             "`benchmarks/report.py` does not produce this section; re-run near.py to refresh it.", "",
             "| measure | " + " | ".join(r["server"] for r in results) + " | target |",
             "|---|" + "---|" * len(results) + "---|"]

    def row(label: str, key: str, fmt: str, target: str) -> None:
        cells = []
        for r in results:
            v = r.get(key)
            cells.append("refused" if v is None else fmt.format(v))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")

    row("L1 hit, `near.get` (ns)", "l1_hit_ns", "{:.0f}", "≤ 1.5 × Cache.get")
    row("`Cache.get` (ns)", "cache_get_ns", "{:.0f}", "")
    lines.append("| L1 hit / Cache.get | " + " | ".join(f"{r['l1_hit_ns'] / r['cache_get_ns']:.2f}×" for r in results)
                 + " | ≤ 1.5× |")
    row("redis-py `GET`, loopback TCP (ns)", "redis_py_get_ns", "{:.0f}", "")
    row("redis-py client-side cache hit (ns)", "redis_py_csc_ns", "{:.0f}", "")
    row("write elsewhere → L1 entry gone, p50 (µs)", "invalidate_us_p50", "{:.0f}", "")
    row("write elsewhere → L1 entry gone, p99 (µs)", "invalidate_us_p99", "{:.0f}", "p99 ≤ 1 ms")
    row("stale after the listener's SIGKILL, lease_ms=300 (ms)", "stale_after_listener_sigkill_ms", "{:.0f}",
        "≤ lease_ms + 50")
    row("4 cold workers: GETs per hot key (shared L1)", "cold_workers_gets_per_key", "{:.3f}", "≤ 1.05")
    row("4 cold workers: GETs per hot key (per-process caches)", "per_process_caches_gets_per_key", "{:.0f}", "")
    row("engine batched invalidate (keys/s)", "engine_invalidations_per_s", "{:,.0f}", "")
    row("listener: RESP pushes parsed + keys invalidated (keys/s)", "listener_apply_per_s", "{:,.0f}", "≥ 1M/s")
    row("end to end: 200k SETs by redis-cli --pipe, all applied (keys/s)", "end_to_end_invalidations_per_s",
        "{:,.0f}", "")
    row("… the writer alone (SETs/s; the end-to-end rate cannot exceed it)", "writer_sets_per_s", "{:,.0f}", "")
    lines.append("")
    lines.append("Every wall-clock number here shares 2 cores with other jobs (load average above): the invalidation "
                 "p99 and the staleness after SIGKILL include the time the listener's process waits for a CPU. "
                 "The end-to-end invalidation rate is bounded by what the server accepts from the writer on this "
                 "box; the listener's own path (parse + apply) is the row above it.")
    for r in results:
        if r.get("redis_py_csc_refused"):
            lines.append("")
            lines.append(f"redis-py's client-side cache on {r['server']}: {r['redis_py_csc_refused']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    results = []
    for kind, binary in (("redis 7.0", redis_server_bin), ("valkey 9", valkey_server_bin)):
        server = Server(binary())
        try:
            results.append(bench_server(kind, server))
        finally:
            server.close()
        print(json.dumps(results[-1], indent=1))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    meta = {"when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": commit,
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    with open(os.path.join(ROOT, "benchmarks", "data", "near.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    path = os.path.join(ROOT, "benchmarks", "RESULTS.md")
    text = open(path).read()
    cut = text.find("\n## Near cache")
    if cut >= 0:
        text = text[:cut + 1]
    with open(path, "w") as f:
        f.write(text.rstrip("\n") + "\n\n" + section(results, meta))


if __name__ == "__main__":
    main()
