"""uwcache benchmark driver: runs every phase, writes the data, RESULTS.md and the plots.

Normally started by ``benchmarks/run.sh`` (which builds the venv and starts Redis and
memcached). Direct use, from a venv that has uwcache, uWSGI and the peers installed::

    python benchmarks/bench.py [--quick] [--phases latency,throughput,cores,mules,scaling,iscale,memory,profile,perf]
        [--redis-socket PATH] [--memcached-socket PATH] [--out DIR]

Every measurement that involves uWSGI runs inside ``uwsgi --pyrun benchmarks/worker.py``
(the same interpreter then measures uWSGI's cache, uwcache and the others side by side);
uWSGI's multi-process throughput is also measured with N mules of one instance
(benchmarks/uwsgi_mule.py).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import workload as wl  # noqa: E402

ALL_PHASES = ("latency", "throughput", "cores", "mules", "scaling", "iscale", "memory", "profile", "perf")
LATENCY_SYSTEMS = ["uwcache", "uwcache-compat", "uwcache-compat-named", "uwcache-wyhash", "uwsgi", "uwsgi-named", "dict",
                   "cachetools", "diskcache", "redis", "memcached"]

SETTINGS = {
    # full: what RESULTS.md is made of; quick: the same phases with small counts (debugging)
    "full": dict(lat_rounds=100, lat_fast_batches=5, tp_duration=2.0, tp_repeats=3, mule_repeats=3,
                 scale_rounds=60, scale_sizes=[1000, 10000, 100000, 1000000], prof_ops=100000, perf_duration=3.0,
                 iscale_ops=20000, cores_duration=1.5, cores_repeats=2),
    "quick": dict(lat_rounds=4, lat_fast_batches=2, tp_duration=0.4, tp_repeats=1, mule_repeats=1,
                  scale_rounds=2, scale_sizes=[1000, 10000, 100000, 1000000], prof_ops=10000, perf_duration=0.5,
                  iscale_ops=5000, cores_duration=0.3, cores_repeats=1),
}
PROCS = [1, 2, 4]
CORE_MIXES = ["90/10", "50/50"]
DIAG_MIXES = ["100/0", "0/100"]   # uwcache and uWSGI only: which side of the mix scales
CONTEXT_SYSTEMS = ["redis", "memcached", "diskcache"]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Runner:
    """Starts uWSGI processes for jobs and collects their JSON results."""

    def __init__(self, args: argparse.Namespace, workdir: str) -> None:
        self.args = args
        self.workdir = workdir
        self.venv = sys.prefix
        self.uwsgi = args.uwsgi or os.path.join(sys.prefix, "bin", "uwsgi")
        self.env_vars = dict(os.environ, UWCACHE_SHM_DIR=workdir, PYTHONHASHSEED="0")
        self.n = 0

    def job_env(self) -> Dict[str, Any]:
        return {"redis_socket": self.args.redis_socket, "memcached_socket": self.args.memcached_socket,
                "workdir": self.workdir, "namespace": "bench"}

    def run(self, job: Dict[str, Any], cache2: List[str], *, prefix: Optional[List[str]] = None,
            timeout: float = 3600) -> Dict[str, Any]:
        self.n += 1
        tag = f"{self.n:03d}-{job['phase']}"
        job = dict(job, env=self.job_env(), out=os.path.join(self.workdir, tag + ".out.json"))
        job_path = os.path.join(self.workdir, tag + ".job.json")
        with open(job_path, "w") as f:
            json.dump(job, f)
        cmd = list(prefix or []) + [self.uwsgi, "-H", self.venv]
        for spec in cache2:
            cmd += ["--cache2", spec]
        cmd += ["--pyrun", os.path.join(HERE, "worker.py"), "--pyargv", job_path]
        log_path = os.path.join(self.workdir, tag + ".log")
        with open(log_path, "w") as lf:
            proc = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, env=self.env_vars, timeout=timeout,
                                  cwd=self.workdir)
        try:
            with open(job["out"]) as f:
                res = json.load(f)
        except (OSError, ValueError):
            res = {"ok": False, "error": f"no result (uwsgi exit {proc.returncode})"}
        if not res.get("ok"):
            with open(log_path, errors="replace") as f:
                tail = "".join(f.readlines()[-30:])
            raise RuntimeError(f"{tag} failed: {res.get('error')}\n{res.get('trace', '')}\n--- log ---\n{tail}")
        res["_log"] = log_path
        res["_cmd"] = " ".join(cmd)
        return res


# ---- phases --------------------------------------------------------------------------------

def spec_for(value_size: int, max_items: int = wl.MAX_ITEMS, hash_size: int = 65536) -> str:
    return wl.cache2(wl.cache_name(value_size), max_items, wl.block_size_for(value_size), hash_size)


def phase_latency(r: Runner, st: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    for vs in wl.VALUE_SIZES:
        log(f"latency, {vs}-byte values, {st['lat_rounds']} rounds")
        res = r.run({"phase": "latency", "value_size": vs, "backends": LATENCY_SYSTEMS,
                     "rounds": st["lat_rounds"], "fast_batches": st["lat_fast_batches"]}, [spec_for(vs)])
        out.append(res)
    return out


def phase_throughput(r: Runner, st: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    vs = 100
    log(f"throughput (fork after open), {st['tp_duration']} s per run, {st['tp_repeats']} repeats")
    # "dict" is the control: a private dict per process shares nothing, so its 2-process
    # ratio is the parallelism the box really offered during the run
    out.append(r.run({"phase": "throughput", "value_size": vs,
                      "backends": ["uwcache", "uwcache-compat", "uwsgi", "dict"],
                      "procs": PROCS, "mixes": CORE_MIXES + DIAG_MIXES, "duration": st["tp_duration"],
                      "repeats": st["tp_repeats"]}, [spec_for(vs)]))
    ctx = [s for s in CONTEXT_SYSTEMS if (s != "redis" or r.args.redis_socket)
           and (s != "memcached" or r.args.memcached_socket)]
    if ctx:
        log(f"throughput of the peers ({', '.join(ctx)})")
        out.append(r.run({"phase": "throughput", "value_size": vs, "backends": ctx, "procs": PROCS,
                          "mixes": CORE_MIXES, "duration": st["tp_duration"], "repeats": 1}, [spec_for(vs)]))
    return out


CORES_MIXES = ["100/0", "90/10", "50/50"]


def cores_procs(spec: Optional[str] = None) -> List[int]:
    """Process counts of the cores phase: 1, 2, 4, ... up to the core count (and the count
    itself); on a machine of 2 cores or fewer, 1, 2, 4 and 8 (oversubscribed on purpose)."""
    if spec:
        return sorted({int(x) for x in spec.split(",") if x.strip()})
    ncpu = os.cpu_count() or 1
    if ncpu <= 2:
        return [1, 2, 4, 8]
    procs, n = [], 1
    while n < ncpu:
        procs.append(n)
        n *= 2
    return procs + [ncpu]


def phase_cores(r: Runner, st: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Aggregate ops/s of 1..N processes on one shared cache, for 100/90/50 % reads."""
    procs = cores_procs(r.args.procs)
    log(f"cores: {procs} processes x {CORES_MIXES}, {st['cores_duration']} s per run, "
        f"{st['cores_repeats']} repeats")
    res = r.run({"phase": "throughput", "value_size": 100, "backends": ["uwcache", "uwsgi", "dict"],
                 "procs": procs, "mixes": CORES_MIXES, "duration": st["cores_duration"],
                 "repeats": st["cores_repeats"]}, [spec_for(100)])
    res["procs"] = procs
    res["cpus"] = os.cpu_count()
    return [res]


def run_mules(r: Runner, n: int, mix: str, duration: float, seed: int, vs: int = 100) -> Dict[str, Any]:
    d = tempfile.mkdtemp(prefix="mules-", dir=r.workdir)
    job = {"mix": mix, "duration": duration, "dir": d, "value_size": vs, "seed": seed}
    with open(os.path.join(d, "job.json"), "w") as f:
        json.dump(job, f)
    cmd = [r.uwsgi, "-H", r.venv, "--master", "--die-on-term", "--socket", os.path.join(d, "u.sock"),
           "--cache2", spec_for(vs)]
    cmd += [f"--mule={os.path.join(HERE, 'uwsgi_mule.py')}"] * n
    env = dict(r.env_vars, UWCACHE_BENCH_JOB=os.path.join(d, "job.json"))
    with open(os.path.join(d, "uwsgi.log"), "w") as lf:
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, cwd=d, start_new_session=True)
    try:
        deadline = time.time() + 120
        while sum(1 for i in range(1, n + 1) if os.path.exists(os.path.join(d, f"ready.{i}"))) < n:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"uWSGI mules did not get ready: see {d}/uwsgi.log")
            time.sleep(0.01)
        open(os.path.join(d, "go"), "w").close()
        results = []
        deadline = time.time() + duration + 60
        for i in range(1, n + 1):
            p = os.path.join(d, f"result.{i}")
            while not os.path.exists(p):
                if time.time() > deadline:
                    raise RuntimeError(f"mule {i} did not report: see {d}/uwsgi.log")
                time.sleep(0.01)
            with open(p) as f:
                results.append(json.load(f))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    rates = [x["ops"] / x["elapsed"] for x in results]
    return {"total_ops_s": sum(rates), "per_proc_ops_s": rates,
            "ops_per_cpu_s": sum(x["ops"] for x in results) / max(1e-9, sum(x["cpu"] for x in results)),
            "cmd": " ".join(cmd)}


def phase_mules(r: Runner, st: Dict[str, Any]) -> List[Dict[str, Any]]:
    log("uWSGI throughput with N mules of one instance")
    runs = []
    seed = 1000
    for rep in range(st["mule_repeats"]):
        for mix in CORE_MIXES:
            for n in PROCS:
                seed += 1
                res = run_mules(r, n, mix, st["tp_duration"], seed)
                runs.append({"system": "uwsgi-mules", "mix": mix, "procs": n, "repeat": rep, **res})
                log(f"uwsgi-mules {mix} x{n}: {res['total_ops_s'] / 1e6:.3f} M ops/s")
    return [{"value_size": 100, "runs": runs}]


def phase_scaling(r: Runner, st: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    vs = 100
    cases = [(n, max(65536, n)) for n in st["scale_sizes"]]
    if 1000000 in st["scale_sizes"]:
        cases.append((1000000, 65536))  # uWSGI's default hash size with a million items
    for n, hs in cases:
        log(f"scaling: {n} items, hash_size {hs}")
        max_items = n + 1
        name = f"s{n}"
        out.append(r.run({"phase": "scaling", "items": n, "max_items": max_items, "hash_size": hs,
                          "value_size": vs, "cache": name, "backends": ["uwcache", "uwsgi", "dict"],
                          "rounds": st["scale_rounds"]},
                         [wl.cache2(name, max_items, wl.block_size_for(vs), hs)]))
    return out


def phase_memory(r: Runner, st: Dict[str, Any]) -> List[Dict[str, Any]]:
    n = 100000
    vs = 100
    name = "m100"
    log(f"memory: {n} items of {vs} bytes")
    base = r.run({"phase": "memory", "items": 0, "max_items": 2, "value_size": vs, "cache": "tiny",
                  "backends": ["uwsgi"], "others": False}, ["name=tiny,items=2,blocksize=1,keysize=1,hashsize=1"])
    res = r.run({"phase": "memory", "items": n, "max_items": n + 1, "value_size": vs, "cache": name,
                 "backends": ["uwcache", "uwsgi", "dict", "redis", "memcached", "diskcache"]},
                [wl.cache2(name, n + 1, wl.block_size_for(vs))])
    # a second size gives the marginal cost of one more item, without the fixed overheads
    n2 = 2 * n
    log(f"memory: {n2} items of {vs} bytes (uwcache and uWSGI only)")
    res2 = r.run({"phase": "memory", "items": n2, "max_items": n2 + 1, "value_size": vs, "cache": name,
                  "backends": ["uwcache", "uwsgi"], "others": False},
                 [wl.cache2(name, n2 + 1, wl.block_size_for(vs))])
    b = base["results"].get("uwsgi")
    for x in (res, res2):
        u = x["results"].get("uwsgi")
        if u and b:
            u["cache_size"] = u["shared_size"] - b["shared_size"]
            u["cache_rss"] = u["shared_rss"] - b["shared_rss"]
    return [res, res2]


def callgrind_total(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def callgrind_functions(path: str) -> Dict[str, int]:
    """Exclusive instruction counts per function (callgrind_annotate's table)."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=no", "--auto=no", path],
                         capture_output=True, text=True, check=True).stdout
    funcs: Dict[str, int] = {}
    for line in out.splitlines():
        line = line.strip()
        if not line or not line[0].isdigit():
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            continue
        try:
            ir = int(parts[0].replace(",", ""))
        except ValueError:
            continue
        rest = parts[1]
        if rest.startswith("("):  # "(12.34%)" column of newer versions
            rest = rest.split(")", 1)[1].strip()
        if "PROGRAM TOTALS" in rest:
            continue
        fn = rest.split(":", 1)[1] if ":" in rest else rest
        fn = fn.split(" [")[0].strip()
        funcs[fn] = funcs.get(fn, 0) + ir
    return funcs


def perf_symbols(path: str) -> Dict[str, float]:
    """Share of CPU samples per symbol (perf report, self time)."""
    out = subprocess.run(["perf", "report", "-i", path, "--no-children", "--sort", "symbol", "--stdio",
                          "--percent-limit", "0.5"], capture_output=True, text=True).stdout
    shares: Dict[str, float] = {}
    for line in out.splitlines():
        parts = line.split()  # "24.89%  [.] get_optimistic"
        if len(parts) < 3 or not parts[0].endswith("%") or parts[1] not in ("[.]", "[k]"):
            continue
        try:
            share = float(parts[0].rstrip("%"))
        except ValueError:
            continue
        name = parts[2] + (" [kernel]" if parts[1] == "[k]" else "")
        shares[name] = shares.get(name, 0.0) + share
    return shares


def phase_perf(r: Runner, st: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Where the CPU goes with 1 and 2 processes (perf sampling of cpu-clock: works in VMs
    without hardware counters). Shows what contention costs, function by function."""
    if not shutil.which("perf"):
        log("perf: not found, skipped")
        return []
    vs = 100
    runs = []
    for system in ("uwcache", "uwsgi"):
        for mix in ("90/10", "0/100"):
            for n in (1, 2):
                log(f"perf: {system} {mix} x{n}")
                data = os.path.join(r.workdir, f"perf.{system}.{mix.replace('/', '-')}.{n}.data")
                try:
                    res = r.run({"phase": "throughput", "value_size": vs, "backends": [system], "procs": [n],
                                 "mixes": [mix], "duration": st["perf_duration"], "repeats": 1}, [spec_for(vs)],
                                prefix=["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-o", data, "--"])
                except RuntimeError as exc:
                    log(f"perf failed: {str(exc).splitlines()[0]}")
                    return []
                run = res["runs"][0]
                runs.append({"system": system, "mix": mix, "procs": n, "total_ops_s": run["total_ops_s"],
                             "ops_per_cpu_s": run["ops_per_cpu_s"], "symbols": perf_symbols(data)})
    return [{"runs": runs, "note": "perf record -e cpu-clock -F 2000 over the whole run (fork + measure)"}]


def phase_profile(r: Runner, st: Dict[str, Any]) -> List[Dict[str, Any]]:
    if not shutil.which("valgrind"):
        log("profile: valgrind not found, skipped")
        return []
    vs = 100
    n_ops = st["prof_ops"]
    rows = []
    breakdown: Dict[str, Dict[str, Dict[str, float]]] = {}
    for backend in ["uwcache", "uwcache-compat", "uwsgi"]:
        totals: Dict[str, int] = {}
        funcs: Dict[str, Dict[str, int]] = {}
        for op in ["none", "get_hit", "get_miss", "set"]:
            log(f"callgrind: {backend} {op} x{n_ops}")
            out_file = os.path.join(r.workdir, f"callgrind.{backend}.{op}")
            res = r.run({"phase": "profile", "value_size": vs, "backend": backend, "op": op, "ops": n_ops},
                        [spec_for(vs)], prefix=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"])
            totals[op] = callgrind_total(out_file)
            funcs[op] = callgrind_functions(out_file)
            n = res["ops"]
        for op in ["get_hit", "get_miss", "set"]:
            per_op = (totals[op] - totals["none"]) / n
            rows.append({"system": backend, "op": op, "ir_per_op": per_op, "ops": n})
            diff = {fn: (ir - funcs["none"].get(fn, 0)) / n for fn, ir in funcs[op].items()}
            breakdown.setdefault(backend, {})[op] = {fn: v for fn, v in sorted(diff.items(), key=lambda x: -x[1])
                                                     if v >= 1.0}
    return [{"rows": rows, "breakdown": breakdown, "ops": n_ops,
             "note": "instructions per op = (Ir(run with N ops) - Ir(same run, loop over a trivial C call)) / N"}]


def callgrind_inclusive(path: str, functions: List[str]) -> Dict[str, int]:
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", "--auto=no", path],
                         capture_output=True, text=True, check=True).stdout
    found: Dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if not parts or not parts[0][:1].isdigit():
            continue
        for fn in functions:
            if any(p.endswith(":" + fn) for p in parts[1:]):
                found[fn] = max(found.get(fn, 0), int(parts[0].replace(",", "")))
    return found


ISCALE_FUNCS = {"uwcache": ("Cache_get", "Cache_set"), "uwsgi": ("py_uwsgi_cache_get", "py_uwsgi_cache_update")}


def phase_iscale(r: Runner, st: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Instructions per get and set (inside the C function, callees included) as the cache
    grows: the algorithmic cost, which the memory hierarchy hides in the timings."""
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        log("iscale: valgrind not found, skipped")
        return []
    vs = 100
    rows = []
    cases = [(n, max(65536, n)) for n in st["scale_sizes"]]
    if 1000000 in st["scale_sizes"]:
        cases.append((1000000, 65536))
    for n, hs in cases:
        for system, (fget, fset) in ISCALE_FUNCS.items():
            log(f"callgrind vs size: {system}, {n} items, hash_size {hs}")
            out_file = os.path.join(r.workdir, f"callgrind.iscale.{system}.{n}.{hs}")
            name = f"s{n}"
            res = r.run({"phase": "iscale", "items": n, "max_items": n + 1, "hash_size": hs, "value_size": vs,
                         "cache": name, "backend": system, "ops": st["iscale_ops"]},
                        [wl.cache2(name, n + 1, wl.block_size_for(vs), hs)],
                        prefix=["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
                                f"--toggle-collect={fget}", f"--toggle-collect={fset}",
                                f"--callgrind-out-file={out_file}"])
            inc = callgrind_inclusive(out_file, [fget, fset])
            rows.append({"system": system, "items": n, "hash_size": hs, "ops": res["ops"],
                         "get_ir": inc.get(fget, 0) / res["ops"], "set_ir": inc.get(fset, 0) / res["ops"]})
    return [{"rows": rows, "note": "instructions inside the get/set C function per call, uniform random keys"}]


PHASE_FUNCS = {"latency": phase_latency, "throughput": phase_throughput, "cores": phase_cores, "mules": phase_mules,
               "scaling": phase_scaling, "memory": phase_memory, "profile": phase_profile, "perf": phase_perf,
               "iscale": phase_iscale}


# ---- machine and versions ------------------------------------------------------------------

def sh(cmd: List[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> Dict[str, Any]:
    cpu = ""
    flags = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    mem = ""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024 // 1024} GiB"
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
            "virtualized": " hypervisor" in flags, "os": sh(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
            "loadavg_start": open("/proc/loadavg").read().split()[:3]}


def versions(args: argparse.Namespace) -> Dict[str, str]:
    from importlib import metadata

    v = {"python": platform.python_version()}
    for pkg in ["uwcache", "uWSGI", "redis", "pymemcache", "diskcache", "cachetools", "matplotlib"]:
        try:
            v["redis-py" if pkg == "redis" else pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    v["uwcache_commit"] = sh(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    if sh(["git", "-C", REPO, "status", "--porcelain", "--", "src"]):
        v["uwcache_commit"] += "+dirty"
    v["redis-server"] = sh(["redis-server", "--version"]).split(" sha=")[0]
    v["memcached"] = sh(["memcached", "-V"])
    v["valgrind"] = sh(["valgrind", "--version"])
    v["gcc"] = sh(["sh", "-c", "gcc --version | head -1"])
    return v


# ---- data files ----------------------------------------------------------------------------

def write_csvs(data: Dict[str, Any], out: str) -> None:
    def dump(name: str, rows: List[Dict[str, Any]]) -> None:
        if not rows:
            return
        keys: List[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        with open(os.path.join(out, name), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    rows = []
    for res in data.get("latency", []):
        for system, ops in res["results"].items():
            for op in ("get_hit", "get_miss", "set", "delete"):
                s = ops[op]
                rows.append({"value_size": res["value_size"], "system": system, "op": op, "batches": s["n"],
                             **{k: round(s[k], 1) for k in ("median", "p90", "p99", "min", "mean")}})
    dump("latency.csv", rows)
    rows = []
    for res in data.get("throughput", []) + data.get("mules", []):
        for run in res["runs"]:
            rows.append({"system": run["system"], "mix": run["mix"], "procs": run["procs"], "repeat": run["repeat"],
                         "total_ops_s": round(run["total_ops_s"]),
                         "ops_per_cpu_s": round(run.get("ops_per_cpu_s", 0)),
                         "per_proc_ops_s": " ".join(str(round(x)) for x in run["per_proc_ops_s"])})
    dump("throughput.csv", rows)
    rows = []
    for res in data.get("scaling", []):
        for system, ops in res["results"].items():
            for op in ("get_hit", "set", "get_hot", "set_hot"):
                if op not in ops:
                    continue
                s = ops[op]
                rows.append({"items": res["items"], "hash_size": res["hash_size"], "system": system, "op": op,
                             **{k: round(s[k], 1) for k in ("median", "p90", "p99")}})
    dump("scaling.csv", rows)
    rows = []
    for res in data.get("memory", []):
        for system, m in res["results"].items():
            rows.append({"system": system, "items": res["items"], "value_size": res["value_size"], **m})
    dump("memory.csv", rows)
    rows = []
    for res in data.get("profile", []):
        rows += res["rows"]
    dump("profile.csv", rows)
    rows = []
    for res in data.get("iscale", []):
        rows += [{k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()} for row in res["rows"]]
    dump("instructions_vs_items.csv", rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small repetition counts (debugging); default output "
                    "then goes to benchmarks/.quick/")
    ap.add_argument("--phases", default=",".join(ALL_PHASES), help=f"comma list out of {', '.join(ALL_PHASES)}")
    ap.add_argument("--redis-socket")
    ap.add_argument("--memcached-socket")
    ap.add_argument("--procs", help="process counts of the cores phase, e.g. 1,2,4,8,16 (default: 1, 2, 4, "
                    "... up to the core count)")
    ap.add_argument("--uwsgi", help="uwsgi binary (default: the one of this venv)")
    ap.add_argument("--out", help="output directory (default benchmarks/, or benchmarks/.quick with --quick)")
    ap.add_argument("--command", default=None, help="the command line to record in RESULTS.md")
    ap.add_argument("--keep-workdir", action="store_true")
    args = ap.parse_args()
    mode = "quick" if args.quick else "full"
    st = SETTINGS[mode]
    out = args.out or (os.path.join(HERE, ".quick") if args.quick else HERE)
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    phases = [p for p in args.phases.split(",") if p]
    for p in phases:
        if p not in PHASE_FUNCS:
            ap.error(f"unknown phase {p!r}")
    workdir = tempfile.mkdtemp(prefix="uwcache-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    runner = Runner(args, workdir)
    data_path = os.path.join(out, "data", "results.json")
    data: Dict[str, Any] = {}
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    command = args.command or " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])
    if set(phases) != set(ALL_PHASES) and os.path.exists(data_path):
        with open(data_path) as f:
            data = json.load(f)  # re-running some phases keeps the others' results
    if data.get("command") and data.get("mode") == mode:
        # a partial re-run: the header keeps describing the full run; say what was redone
        data.setdefault("reruns", []).append({"phases": phases, "command": command, "started": started,
                                              "uwcache_commit": versions(args).get("uwcache_commit"),
                                              "loadavg_start": machine_info()["loadavg_start"]})
    else:
        data = {k: v for k, v in data.items() if k in ALL_PHASES}
        data.update({"started": started, "command": command, "machine": machine_info(),
                     "versions": versions(args), "reruns": []})
    data.update({
        "mode": mode, "settings": st,
        "workload": {"keys": wl.N_KEYS, "key_bytes": [wl.KEY_MIN, wl.KEY_MAX], "value_sizes": list(wl.VALUE_SIZES),
                     "batch": wl.BATCH, "key_size": wl.KEY_SIZE, "max_items": wl.MAX_ITEMS,
                     "cache2": {vs: spec_for(vs) for vs in wl.VALUE_SIZES}},
        "servers": {"redis": args.redis_socket, "memcached": args.memcached_socket},
    })
    t0 = time.time()
    try:
        for p in phases:
            t = time.time()
            results = PHASE_FUNCS[p](runner, st)
            for res in results:
                res.pop("_log", None)
            data[p] = results
            data.setdefault("phase_seconds", {})[p] = round(time.time() - t, 1)
            with open(data_path, "w") as f:
                json.dump(data, f, indent=1)
    finally:
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"work directory kept: {workdir}")
    if data.get("reruns"):
        data["reruns"][-1]["seconds"] = round(time.time() - t0, 1)
    else:
        data["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        data["seconds"] = round(time.time() - t0, 1)
    with open(data_path, "w") as f:
        json.dump(data, f, indent=1)
    write_csvs(data, os.path.join(out, "data"))
    import report

    report.write_report(data, out)
    log(f"done in {round(time.time() - t0, 1)} s: {os.path.join(out, 'RESULTS.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
