"""Turn benchmarks/data/results.json into RESULTS.md and the PNG plots.

    python benchmarks/report.py [DIR]      # DIR holds data/results.json (default: benchmarks/)

bench.py calls this at the end of a run; it can be re-run alone after editing FINDINGS.md.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
OPS = ("get_hit", "get_miss", "set", "delete")
OP_LABEL = {"get_hit": "get (hit)", "get_miss": "get (miss)", "set": "set", "delete": "delete"}
COLORS = {"uwcache": "#1f77b4", "uwcache-compat": "#6baed6", "uwcache-wyhash": "#08519c",
          "uwcache-compat-named": "#9ecae1", "uwsgi-named": "#ff7f0e", "uwsgi": "#d62728", "uwsgi-mules": "#ff9896",
          "dict": "#7f7f7f", "cachetools": "#bcbd22", "diskcache": "#9467bd", "redis": "#8c564b",
          "memcached": "#2ca02c"}


# ---- number formatting -----------------------------------------------------------------

def ns(x: float) -> str:
    if x >= 100000:
        return f"{x / 1000:.0f} µs"
    if x >= 10000:
        return f"{x / 1000:.1f} µs"
    if x >= 1000:
        return f"{x / 1000:.2f} µs"
    return f"{x:.0f} ns"


def mops(x: float) -> str:
    return f"{x / 1e6:.2f}" if x >= 1e5 else f"{x / 1e6:.3f}"


def ratio(x: Optional[float]) -> str:
    if x is None:
        return "–"
    return f"{x:.2f}x" if x < 10 else f"{x:.0f}x"


def table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ---- data access -------------------------------------------------------------------------

def latency_by_size(data: Dict[str, Any]) -> Dict[int, Dict[str, Any]]:
    return {res["value_size"]: res["results"] for res in data.get("latency", [])}


def throughput_median(data: Dict[str, Any], field: str = "total_ops_s") -> Dict[Tuple[str, str, int], float]:
    """(system, mix, procs) -> median over repeats of total ops/s (or another field)."""
    acc: Dict[Tuple[str, str, int], List[float]] = {}
    for res in data.get("throughput", []) + data.get("mules", []):
        for run in res["runs"]:
            if field in run:
                acc.setdefault((run["system"], run["mix"], run["procs"]), []).append(run[field])
    return {k: statistics.median(v) for k, v in acc.items()}


def control_ratio(data: Dict[str, Any], mix: str = "90/10") -> Optional[float]:
    """2-process / 1-process throughput of the control (a private dict per process)."""
    tp = throughput_median(data)
    one, two = tp.get(("dict", mix, 1)), tp.get(("dict", mix, 2))
    return two / one if one and two else None


def throughput_spread(data: Dict[str, Any]) -> Dict[Tuple[str, str, int], Tuple[float, float]]:
    acc: Dict[Tuple[str, str, int], List[float]] = {}
    for res in data.get("throughput", []) + data.get("mules", []):
        for run in res["runs"]:
            acc.setdefault((run["system"], run["mix"], run["procs"]), []).append(run["total_ops_s"])
    return {k: (min(v), max(v)) for k, v in acc.items()}


# ---- targets -------------------------------------------------------------------------------

def targets(data: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every target of the two issues, with the measured value and met/missed."""
    out: List[Dict[str, Any]] = []
    lat = latency_by_size(data)

    def med(vs: int, system: str, op: str) -> Optional[float]:
        try:
            return lat[vs][system][op]["median"]
        except KeyError:
            return None

    def add(name: str, value: Optional[float], goal: str, ok: Optional[bool], detail: str = "",
            status: Optional[str] = None) -> None:
        out.append({"target": name, "value": value, "goal": goal, "met": ok, "detail": detail,
                    "status": status or ("met" if ok else "**missed**")})

    for vs in sorted(lat):
        for op, uop in (("get_hit", "cache_get hit"), ("get_miss", "cache_get miss"), ("set", "cache_update")):
            a, b = med(vs, "uwcache", op), med(vs, "uwsgi", op)
            if a and b:
                add(f"native {OP_LABEL[op]} ≤ uWSGI {uop}, {vs} B", a / b, "≤ 1.00x",
                    a <= b, f"{ns(a)} vs {ns(b)}")
        for op in ("get_hit", "get_miss", "set"):
            a, b = med(vs, "uwcache-compat", op), med(vs, "uwsgi", op)
            if a and b:
                add(f"compat {OP_LABEL[op]} within 1.3x of uWSGI, {vs} B", a / b, "≤ 1.30x", a <= 1.3 * b,
                    f"{ns(a)} vs {ns(b)}")
        a, d, r = med(vs, "uwcache", "get_hit"), med(vs, "diskcache", "get_hit"), med(vs, "redis", "get_hit")
        if a and d:
            add(f"get ≥ 30x faster than diskcache, {vs} B", d / a, "≥ 30x", d / a >= 30, f"{ns(a)} vs {ns(d)}")
        if a and r:
            add(f"get ≥ 100x faster than redis-py, {vs} B", r / a, "≥ 100x", r / a >= 100, f"{ns(a)} vs {ns(r)}")
    # issue 16 (single-operation speed), 100-byte values
    for op, goal in (("get_hit", 0.33), ("get_miss", 0.28), ("set", 0.30)):
        a, b = med(100, "uwcache", op), med(100, "uwsgi", op)
        if a and b:
            add(f"issue 16: native {OP_LABEL[op]} ≤ {goal:.2f}x uWSGI, 100 B", a / b, f"≤ {goal:.2f}x",
                a <= goal * b, f"{ns(a)} vs {ns(b)}")
    a, n = med(100, "uwcache-compat-named", "get_hit"), med(100, "uwcache", "get_hit")
    b, b0 = med(100, "uwsgi-named", "get_hit"), med(100, "uwsgi", "get_hit")
    if a and (b or b0):
        base = b or b0
        other = f"; {a / b0:.2f}x uWSGI's unnamed call ({ns(b0)})" if b and b0 else ""
        add("issue 16: named compat get (hit) ≤ 0.40x uWSGI's named call, 100 B", a / base, "≤ 0.40x",
            a <= 0.40 * base, f"{ns(a)} vs {ns(base)}{other}")
    if a and n:
        add("issue 16: named compat get (hit) within 1.15x of the native get, 100 B", a / n, "≤ 1.15x",
            a <= 1.15 * n, f"{ns(a)} vs {ns(n)}")
    for res in data.get("scaling", []):
        if res.get("items") == 1000000 and res.get("hash_size") == 1000000:
            u, w = res["results"].get("uwcache"), res["results"].get("uwsgi")
            if u and w:
                a, b = u["get_hit"]["median"], w["get_hit"]["median"]
                add("issue 16: get at 1M items (random keys) ≤ 0.50x uWSGI", a / b, "≤ 0.50x", a <= 0.5 * b,
                    f"{ns(a)} vs {ns(b)}")
    tp = throughput_median(data)
    cpu = throughput_median(data, "ops_per_cpu_s")
    ctl = control_ratio(data)
    one, two = tp.get(("uwcache", "90/10", 1)), tp.get(("uwcache", "90/10", 2))
    if one and two:
        c1, c2 = cpu.get(("uwcache", "90/10", 1)), cpu.get(("uwcache", "90/10", 2))
        extra = f"; control (private dict) 2p/1p {ctl:.2f}x" if ctl else ""
        if c1 and c2:
            extra += f"; ops per CPU-second 2p/1p {c2 / c1:.2f}x"
        for goal, which in ((1.7, "core issue"), (1.8, "benchmarks issue")):
            ok = two / one >= goal
            # a box that cannot run two processes at once cannot show the target either way
            status = None if ok or ctl is None or ctl >= goal else "inconclusive (no 2nd core free)"
            add(f"2 processes ≥ {goal}x one ({which}), 90/10", two / one, f"≥ {goal:.2f}x", ok,
                f"{mops(two)} vs {mops(one)} M ops/s{extra}", status)
    for usys in ("uwsgi", "uwsgi-mules"):
        u2 = tp.get((usys, "90/10", 2))
        if two and u2:
            how = "forked in --pyrun" if usys == "uwsgi" else "2 mules"
            add(f"2-process total ≥ 10x uWSGI's ({how}), 90/10", two / u2, "≥ 10x", two / u2 >= 10,
                f"{mops(two)} vs {mops(u2)} M ops/s")
    mem = data.get("memory", [])
    for res in mem[:1]:
        u, w = res["results"].get("uwcache"), res["results"].get("uwsgi")
        if u and w and "cache_size" in w:
            n = res["items"]
            add(f"memory per item ≤ uWSGI's (allocated), {n:,} items", u["mapping_size"] / w["cache_size"],
                "≤ 1.00x", u["mapping_size"] <= w["cache_size"],
                f"{u['mapping_size'] / n:.2f} vs {w['cache_size'] / n:.2f} B "
                f"(+{u['mapping_size'] - w['cache_size']:,} B in all)")
            add(f"memory per item ≤ uWSGI's (resident after fill), {n:,} items", u["rss"] / max(1, w["cache_rss"]),
                "≤ 1.00x", u["rss"] <= w["cache_rss"], f"{u['rss'] / n:.2f} vs {w['cache_rss'] / n:.2f} B")
    marg = marginal_memory(data)
    if marg:
        mu, mw = marg["uwcache"], marg["uwsgi"]
        # both sides map whole pages: allow two pages of rounding over the item difference
        dn = mem[1]["items"] - mem[0]["items"]
        add("memory per additional item ≤ uWSGI's (allocated, 100k → 200k items)", mu / mw, "≤ 1.00x",
            mu <= mw + 2 * 4096 / dn, f"{mu:.2f} vs {mw:.2f} B (page rounding: ±{2 * 4096 / dn:.2f} B)")
    return out


LOCK_WORDS = ("uwc_lock", "pthread_mutex", "pthread_rwlock", "futex", "lll_lock", "lll_unlock", "schedule",
              "__lock", "rwlock", "uwsgi_lock", "uwsgi_rwlock", "uwsgi_unlock", "sched_yield")


def lock_share(symbols: Dict[str, float]) -> float:
    return sum(v for k, v in symbols.items() if any(w in k for w in LOCK_WORDS))


def marginal_memory(data: Dict[str, Any]) -> Optional[Dict[str, float]]:
    """Allocated bytes per additional item between the two memory runs."""
    mem = data.get("memory", [])
    if len(mem) < 2:
        return None
    a, b = mem[0], mem[1]
    try:
        dn = b["items"] - a["items"]
        return {"uwcache": (b["results"]["uwcache"]["mapping_size"] - a["results"]["uwcache"]["mapping_size"]) / dn,
                "uwsgi": (b["results"]["uwsgi"]["cache_size"] - a["results"]["uwsgi"]["cache_size"]) / dn}
    except KeyError:
        return None


# ---- plots -----------------------------------------------------------------------------------

# ---- scaling with cores (the "cores" phase) ----------------------------------------------

def cores_median(data: Dict[str, Any]) -> Dict[Tuple[str, str, int], float]:
    """(system, mix, procs) -> median total ops/s of the cores phase."""
    acc: Dict[Tuple[str, str, int], List[float]] = {}
    for res in data.get("cores", []):
        for run in res["runs"]:
            acc.setdefault((run["system"], run["mix"], run["procs"]), []).append(run["total_ops_s"])
    return {k: statistics.median(v) for k, v in acc.items()}


def cores_plot(data: Dict[str, Any], pdir: str, plt: Any) -> Optional[str]:
    cm = cores_median(data)
    if not cm:
        return None
    procs = sorted({k[2] for k in cm})
    mixes = [m for m in ("100/0", "90/10", "50/50") if any(k[1] == m for k in cm)]
    fig, axes = plt.subplots(1, len(mixes), figsize=(4.6 * len(mixes), 4.2), squeeze=False)
    for col, mix in enumerate(mixes):
        ax = axes[0][col]
        for s in ("uwcache", "uwsgi", "dict"):
            one = cm.get((s, mix, 1))
            pts = [(n, cm[(s, mix, n)] / one) for n in procs if one and (s, mix, n) in cm]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=s, color=COLORS.get(s),
                        linestyle="--" if s == "dict" else "-")
        ax.plot(procs, procs, color="#bbb", linewidth=1, linestyle=":", label="linear")
        ax.set_xscale("log", base=2)
        ax.set_xticks(procs)
        ax.set_xticklabels([str(n) for n in procs])
        ax.set_xlabel(f"processes ({data.get('cores', [{}])[0].get('cpus', '?')} cores)")
        ax.set_ylabel("total ÷ 1-process total")
        ax.set_title(f"{mix} get/set")
        ax.grid(alpha=0.3)
        if col == 0:
            ax.legend(fontsize=8)
    fig.suptitle("Scaling with processes: one shared cache, 1000 keys, 100-byte values")
    fig.tight_layout()
    p = os.path.join(pdir, "cores.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def cores_section(data: Dict[str, Any], out: str, made: List[str]) -> List[str]:
    cm = cores_median(data)
    if not cm:
        return []
    res = data["cores"][0]
    procs = sorted({k[2] for k in cm})
    m = data.get("machine", {})
    L = ["## Scaling with cores\n",
         f"Machine: {m.get('cpu', '?')}, {res.get('cpus', '?')} cores. N processes forked after the cache is "
         f"open, released together, {res.get('duration')} s per run, median of the repeats; 1000 keys, "
         "100-byte values, all gets hit. `dict` (a private dict per process) is the control: how much "
         "parallelism the machine gave. Beyond the core count the processes are oversubscribed.\n"]
    rows = []
    for mix in ("100/0", "90/10", "50/50"):
        for s in ("uwcache", "uwsgi", "dict"):
            one = cm.get((s, mix, 1))
            if one is None:
                continue
            cells = [mops(cm[(s, mix, n)]) + (f" ({cm[(s, mix, n)] / one:.2f}x)" if n > 1 else "")
                     if (s, mix, n) in cm else "–" for n in procs]
            rows.append([mix, f"`{s}`"] + cells)
    L.append(table(["reads/writes", "system"] + [f"{n} proc{'s' if n > 1 else ''} (M ops/s)" for n in procs], rows))
    L.append("")
    p = os.path.join(out, "plots", "cores.png")
    if p in made:
        L.append(f"![scaling with cores]({os.path.relpath(p, out)})\n")
    return L


def plots(data: Dict[str, Any], out: str) -> List[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    pdir = os.path.join(out, "plots")
    os.makedirs(pdir, exist_ok=True)
    made = []
    lat = latency_by_size(data)
    for vs, res in sorted(lat.items()):
        systems = list(res)
        fig, ax = plt.subplots(figsize=(9, 4.8))
        width = 0.8 / len(systems)
        for i, s in enumerate(systems):
            meds = [res[s][op]["median"] for op in OPS]
            p90 = [res[s][op]["p90"] - res[s][op]["median"] for op in OPS]
            xs = [j + i * width for j in range(len(OPS))]
            ax.bar(xs, meds, width, yerr=[[0] * len(OPS), p90], label=s, color=COLORS.get(s), capsize=2)
        ax.set_yscale("log")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(OPS))])
        ax.set_xticklabels([OP_LABEL[o] for o in OPS])
        ax.set_ylabel("ns per operation (median, bar to p90; log)")
        ax.set_title(f"Per-operation latency, 1000 keys, {vs}-byte values")
        ax.grid(axis="y", which="both", alpha=0.3)
        fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=len(systems), fontsize=8,
                   frameon=False)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        p = os.path.join(pdir, f"latency_{vs}.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)
    tp = throughput_median(data)
    spread = throughput_spread(data)
    mixes = [m for m in ("90/10", "50/50") if any(k[1] == m for k in tp)]
    if mixes:
        fig, axes = plt.subplots(2, len(mixes), figsize=(5.2 * len(mixes), 7.5), squeeze=False)
        handles: Dict[str, Any] = {}
        for col, mix in enumerate(mixes):
            ax = axes[0][col]
            for s in ("uwcache", "uwcache-compat", "uwsgi", "uwsgi-mules", "dict", "memcached", "redis", "diskcache"):
                pts = sorted((k[2], v) for k, v in tp.items() if k[0] == s and k[1] == mix)
                if not pts:
                    continue
                lo = [tp[(s, mix, n)] - spread[(s, mix, n)][0] for n, _ in pts]
                hi = [spread[(s, mix, n)][1] - tp[(s, mix, n)] for n, _ in pts]
                h = ax.errorbar([p[0] for p in pts], [p[1] / 1e6 for p in pts], yerr=[[x / 1e6 for x in lo],
                                [x / 1e6 for x in hi]], marker="o", label=s, color=COLORS.get(s), capsize=3)
                handles.setdefault(s, h)
            ax.set_yscale("log")
            ax.set_xticks([1, 2, 4])
            ax.set_ylabel("total M ops/s (log; bars: min-max of repeats)")
            ax.set_title(f"{mix} get/set: aggregate throughput")
            ax.grid(alpha=0.3, which="both")
            ax = axes[1][col]
            for s in ("uwcache", "uwcache-compat", "uwsgi", "uwsgi-mules", "dict"):
                one = tp.get((s, mix, 1))
                pts = sorted((k[2], v / one) for k, v in tp.items() if one and k[0] == s and k[1] == mix)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=COLORS.get(s),
                            linestyle="--" if s == "dict" else "-")
            ax.axhline(1.8, color="#444", linestyle=":", linewidth=1)
            ax.text(1.02, 1.82, "target 1.8x at 2 procs", fontsize=7, color="#444")
            ax.set_xticks([1, 2, 4])
            ax.set_ylim(0, max(2.2, ax.get_ylim()[1]))
            ax.set_xlabel("processes (2 cores; dashed: private-dict control)")
            ax.set_ylabel("total ÷ 1-process total")
            ax.set_title(f"{mix} get/set: scaling")
            ax.grid(alpha=0.3)
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles), fontsize=8,
                   frameon=False)
        fig.suptitle("One shared cache, 100-byte values, N forked processes")
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        p = os.path.join(pdir, "throughput.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)
    cp = cores_plot(data, pdir, plt)
    if cp:
        made.append(cp)
    sc = data.get("scaling", [])
    if sc:
        isc = data.get("iscale", [])
        has_ir = bool(isc and isc[0]["rows"])
        fig, axes = plt.subplots(1, 3 if has_ir else 2, figsize=(15 if has_ir else 10, 4))
        if has_ir:
            ax = axes[2]
            for system in ("uwcache", "uwsgi"):
                for key, style in (("get_ir", "-"), ("set_ir", "--")):
                    pts = sorted((x["items"], x[key]) for x in isc[0]["rows"]
                                 if x["system"] == system and x["hash_size"] >= x["items"])
                    if pts:
                        ax.plot([q[0] for q in pts], [q[1] for q in pts], marker="o", linestyle=style,
                                color=COLORS.get(system), label=f"{system} {key[:3]}")
                    dflt = [(x["items"], x[key]) for x in isc[0]["rows"]
                            if x["system"] == system and x["hash_size"] < x["items"]]
                    if dflt:
                        ax.plot([q[0] for q in dflt], [q[1] for q in dflt], marker="x", linestyle="none",
                                markersize=9, color=COLORS.get(system))
            ax.set_xscale("log")
            ax.set_ylim(bottom=0)
            ax.set_xlabel("items in the cache")
            ax.set_ylabel("instructions per op (callgrind)")
            ax.set_title("instructions per op (flat = O(1))")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        for ax, op in zip(axes, ("get_hit", "set")):
            for s in ("uwcache", "uwsgi", "dict"):
                pts = sorted((r["items"], r["results"][s][op]["median"]) for r in sc
                             if s in r["results"] and r["hash_size"] >= min(r["items"], 65536)
                             and not r["hash_size"] < r["items"])
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{s}, uniform",
                            color=COLORS.get(s))
                hot_op = "get_hot" if op == "get_hit" else "set_hot"
                pts = sorted((r["items"], r["results"][s][hot_op]["median"]) for r in sc
                             if s in r["results"] and hot_op in r["results"][s] and not r["hash_size"] < r["items"])
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", linestyle=":",
                            label=f"{s}, hot 1000", color=COLORS.get(s))
                dflt = [(r["items"], r["results"][s][op]["median"]) for r in sc
                        if s in r["results"] and r["hash_size"] < r["items"] and s != "dict"]
                if dflt:
                    ax.plot([p[0] for p in dflt], [p[1] for p in dflt], marker="x", linestyle="none",
                            color=COLORS.get(s), markersize=9, label=f"{s}, hash_size 65536")
            ax.set_xscale("log")
            ax.set_ylim(bottom=0)
            ax.set_xlabel("items in the cache")
            ax.set_ylabel("ns per op (median)")
            ax.set_title(OP_LABEL[op])
            ax.grid(alpha=0.3, which="both")
        axes[0].legend(fontsize=8)
        fig.suptitle("Cost per operation vs number of items (hash_size = max(65536, items))")
        fig.tight_layout()
        p = os.path.join(pdir, "scaling.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)
    mem = data.get("memory", [])
    if mem:
        res = mem[0]
        n = res["items"]
        vals = []
        for s, m in res["results"].items():
            if s == "uwcache":
                vals.append((s + " (allocated)", m["mapping_size"] / n))
                vals.append((s + " (resident)", m["rss"] / n))
            elif s == "uwsgi" and "cache_size" in m:
                vals.append((s + " (allocated)", m["cache_size"] / n))
                vals.append((s + " (resident)", m["cache_rss"] / n))
            elif "bytes" in m:
                vals.append((s, m["bytes"] / n))
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.barh([v[0] for v in vals], [v[1] for v in vals],
                color=[COLORS.get(v[0].split(" ")[0], "#999") for v in vals])
        for i, v in enumerate(vals):
            ax.text(v[1], i, f" {v[1]:.0f}", va="center", fontsize=8)
        ax.set_xlabel("bytes per item")
        ax.set_title(f"Memory for {n} items (keys 16-32 B, values {res['value_size']} B)")
        ax.invert_yaxis()
        fig.tight_layout()
        p = os.path.join(pdir, "memory.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)
    prof = data.get("profile", [])
    if prof and prof[0]["rows"]:
        rows = prof[0]["rows"]
        systems = list(dict.fromkeys(r["system"] for r in rows))
        ops = list(dict.fromkeys(r["op"] for r in rows))
        fig, ax = plt.subplots(figsize=(7, 3.8))
        width = 0.8 / len(systems)
        for i, s in enumerate(systems):
            v = [next((r["ir_per_op"] for r in rows if r["system"] == s and r["op"] == op), 0) for op in ops]
            ax.bar([j + i * width for j in range(len(ops))], v, width, label=s, color=COLORS.get(s))
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(ops))])
        ax.set_xticklabels([OP_LABEL[o] for o in ops])
        ax.set_ylabel("instructions per op (callgrind)")
        ax.set_title("Instructions per operation, call included, loop excluded")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        p = os.path.join(pdir, "instructions.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)
    return made


# ---- RESULTS.md --------------------------------------------------------------------------------

def write_report(data: Dict[str, Any], out: str) -> str:
    made = plots(data, out)
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731
    L: List[str] = []
    L.append("# uwcache benchmark results\n")
    L.append("Generated by `benchmarks/report.py` from `benchmarks/data/results.json` "
             "(CSV files beside it). Do not edit by hand: re-run the suite.\n")
    if data.get("mode") == "quick":
        L.append("> **Quick run** (`--quick`): tiny repetition counts, for checking the suite only. "
                 "These numbers are not results.\n")
    m, v = data["machine"], data["versions"]
    L.append("## How these numbers were made\n")
    L.append(f"Command (from the repository root): `{data.get('command')}`  ")
    L.append(f"Started {data.get('started')}, took {data.get('seconds', '?')} s. Load average at start "
             f"{' '.join(m.get('loadavg_start', []))}, at end {' '.join(m.get('loadavg_end', []))} "
             "(other jobs on the box make every timing noisier; ratios measured in the same run are the "
             "numbers to trust).\n")
    for rr in data.get("reruns", []):
        L.append(f"Phases {', '.join(rr['phases'])} re-run later: `{rr['command']}` ({rr['started']}, "
                 f"uwcache {rr.get('uwcache_commit')}, load average {' '.join(rr.get('loadavg_start', []))}).\n")
    L.append(table(["machine", ""], [
        ["CPU", f"{m['cpu']} ({m['cores']} cores{', virtual machine' if m.get('virtualized') else ''})"],
        ["memory", m["memory"]], ["OS / kernel", f"{m.get('os', '')} / {m['kernel']}"]]))
    L.append("")
    L.append(table(["software", "version"], [[k, str(x)] for k, x in v.items() if x]))
    w = data["workload"]
    L.append("\n**Workload.** "
             f"{w['keys']} keys of {w['key_bytes'][0]}–{w['key_bytes'][1]} bytes, values of "
             f"{' and '.join(str(s) for s in w['value_sizes'])} bytes. uwcache and uWSGI get the same cache "
             f"geometry (`--cache2 {w['cache2'].get('100', w['cache2'].get(100, ''))}`; blocksize 4096 for the "
             "4 KiB values). Every system is called through bound functions from the same Python loop "
             "(`for k in keys: get(k)`), so the loop's own cost (a few tens of ns, see `dict`) is in every "
             "number. Per-op times are batch times / 1000 ops; median, p90 and p99 are over batches. "
             "Latency batches of all systems are interleaved round by round **inside one "
             "`uwsgi --pyrun` process** (uWSGI's cache can only be called there), so they share conditions. "
             "`set` = create-or-overwrite (`Cache.set`, `cache_update`, Redis/memcached `SET`); `delete` "
             "deletes an existing key. Redis and memcached are local servers on unix sockets, diskcache lives "
             "on /dev/shm. uWSGI and the compat functions are called without a cache name (default cache), "
             "except in the `-named` rows.\n")

    # targets
    tg = targets(data)
    if tg:
        L.append("## Targets\n")
        rows = []
        for t in tg:
            mark = t["status"]
            rows.append([t["target"], ratio(t["value"]) if t["value"] is not None else "–", t["goal"], mark,
                         t["detail"]])
        L.append(table(["target", "measured", "goal", "", "numbers"], rows))
        L.append("")

    lat = latency_by_size(data)
    if lat:
        L.append("## Per-operation latency\n")
        for vs, res in sorted(lat.items()):
            L.append(f"### {vs}-byte values\n")
            rows = []
            u = res.get("uwsgi")
            for s, r in res.items():
                row = [f"`{s}`"]
                for op in OPS:
                    row.append(f"{ns(r[op]['median'])} / {ns(r[op]['p90'])} / {ns(r[op]['p99'])}")
                # named calls (cache name as last argument) divide by uWSGI's named call
                base = res.get("uwsgi-named", u) if s.endswith("-named") else u
                if base:
                    row.append(" · ".join(ratio(r[op]["median"] / base[op]["median"]) for op in OPS))
                elif u:
                    row.append("")
                rows.append(row)
            hdr = ["system"] + [f"{OP_LABEL[o]} med / p90 / p99" for o in OPS]
            if u:
                hdr.append("÷ uWSGI (get hit · miss · set · del)")
            L.append(table(hdr, rows))
            n_fast = max((r["get_hit"]["n"] for r in res.values()), default=0)
            n_slow = min((r["get_hit"]["n"] for r in res.values()), default=0)
            L.append(f"\n{n_fast} batches of 1000 ops per op for the in-process systems, {n_slow} for the "
                     "slower ones.\n")
            if any(name.endswith("-named") for name in res):
                L.append("The `-named` rows call uWSGI's functions with the cache name as last argument "
                         "(`cache_get(key, name)`, `cache_update(key, value, 0, name)`, `cache_del(key, name)`), "
                         "in `uwcache.uwsgi` and in uWSGI alike; their ratios are to `uwsgi-named`.\n")
            p = os.path.join(out, "plots", f"latency_{vs}.png")
            if p in made:
                L.append(f"![latency {vs}]({rel(p)})\n")

    tp = throughput_median(data)
    if tp:
        L.append("## Multi-process throughput (one shared cache)\n")
        dur = data.get("settings", {}).get("tp_duration")
        L.append(f"N processes forked after the cache is open (uWSGI: forked from the `--pyrun` script, "
                 "which is how workers share its cache; `uwsgi-mules`: N mules of one `uwsgi --master` "
                 f"instance), released together, {dur} s each; total = sum of every process's ops/s, "
                 "median of the repeats. Keys drawn at random from the 1000, 100-byte values, all gets hit. "
                 "The box has 2 cores: 4 processes are oversubscribed.\n")
        ctl = control_ratio(data)
        if ctl is not None:
            L.append(f"**Control**: `dict` is a private dict in each process (nothing shared). Its 2-process "
                     f"total reached **{ctl:.2f}x** its 1-process total on 90/10 in this run: that is how much "
                     "parallelism the box actually offered (2.0x on an idle 2-core machine). The last columns "
                     "divide ops by the CPU time the processes got (user + system), which does not depend on "
                     "how busy the box was: it drops when processes spin, sleep-and-wake or bounce cache "
                     "lines.\n")
        cpu = throughput_median(data, "ops_per_cpu_s")
        rows = []
        systems = list(dict.fromkeys(k[0] for k in tp))
        mixes = [m for m in ("90/10", "50/50", "100/0", "0/100") if any(k[1] == m for k in tp)]
        for mix in mixes:
            for s in systems:
                one = tp.get((s, mix, 1))
                if one is None:
                    continue
                cells = []
                for n in (1, 2, 4):
                    x = tp.get((s, mix, n))
                    cells.append(f"{mops(x)}" + (f" ({x / one:.2f}x)" if n > 1 and x else "") if x else "–")
                u2 = tp.get(("uwsgi", mix, 2))
                x2 = tp.get((s, mix, 2))
                c1 = cpu.get((s, mix, 1))
                ccells = []
                for n in (1, 2, 4):
                    c = cpu.get((s, mix, n))
                    ccells.append("–" if not c else (f"{mops(c)}" if n == 1 or not c1 else f"{c / c1:.2f}x"))
                rows.append([mix, f"`{s}`"] + cells + [ratio(x2 / u2) if (x2 and u2) else "–"] + ccells)
        L.append(table(["get/set mix", "system", "1 proc (M ops/s)", "2 procs (÷1)", "4 procs (÷1)",
                        "2 procs ÷ uWSGI's 2", "M ops per CPU-s, 1 proc", "per CPU-s, 2 ÷ 1", "per CPU-s, 4 ÷ 1"],
                       rows))
        L.append("")
        p = os.path.join(out, "plots", "throughput.png")
        if p in made:
            L.append(f"![throughput]({rel(p)})\n")

    L.extend(cores_section(data, out, made))

    sc = data.get("scaling", [])
    if sc:
        L.append("## Cost per operation vs number of items\n")
        L.append("One cache per size (uwcache and uWSGI with the same geometry, `hash_size = max(65536, "
                 "items)`, plus a million items with uWSGI's default 65536 buckets), filled, then batches of 1000 "
                 "random keys over all items.\n")
        rows = []
        for r in sc:
            for s, x in r["results"].items():
                hot = lambda op: ns(x[op]["median"]) if op in x else "–"  # noqa: E731
                rows.append([f"{r['items']:,}", f"{r['hash_size']:,}", f"`{s}`", ns(x["get_hit"]["median"]),
                             ns(x["set"]["median"]), hot("get_hot"), hot("set_hot"), f"{x['fill_s']:.2f} s"])
        L.append(table(["items", "hash buckets", "system", "get, uniform", "set, uniform", "get, hot 1000",
                        "set, hot 1000", "fill time"], rows))
        L.append("\n*uniform*: random keys over all items (mostly CPU-cache and TLB misses once the cache "
                 "outgrows the CPU caches: a 1M-item region is 280 MB); *hot 1000*: the same 1000 keys whatever "
                 "the size, spread over the whole region (their records and blocks still sit on ~3000 different pages, so TLB misses remain). The instruction counts below are the size-independent measure.\n")
        isc = data.get("iscale", [])
        if isc and isc[0]["rows"]:
            L.append("**Instructions per operation vs items** (callgrind, collected inside the get/set C "
                     "function, callees included; uniform random keys; deterministic):\n")
            rows = []
            for x in isc[0]["rows"]:
                rows.append([f"{x['items']:,}", f"{x['hash_size']:,}", f"`{x['system']}`", f"{x['get_ir']:.0f}",
                             f"{x['set_ir']:.0f}"])
            L.append(table(["items", "hash buckets", "system", "get", "set"], rows))
            L.append("\nThe work per operation does not grow with the number of items as long as the hash "
                     "table is sized for them; what grows in the timings above is the memory hierarchy "
                     "(cache and TLB misses), which hits uWSGI and a plain dict alike.\n")
        p = os.path.join(out, "plots", "scaling.png")
        if p in made:
            L.append(f"![scaling]({rel(p)})\n")

    mem = data.get("memory", [])
    if mem:
        res = mem[0]
        n = res["items"]
        L.append(f"## Memory for {n:,} items\n")
        L.append(f"Keys of 16–32 bytes, {res['value_size']}-byte values; uwcache and uWSGI with "
                 f"`items={res['max_items']},blocksize={res['block_size']},keysize=64` (their memory is "
                 "preallocated from the geometry, not from the data: `allocated` is the mapping, `resident` the "
                 "pages touched after the fill). uWSGI's figure is its shared anonymous mappings minus those of an "
                 "instance with a tiny cache.\n")
        rows = []
        for s, mm in res["results"].items():
            if s == "uwcache":
                rows.append([f"`{s}`", f"{mm['mapping_size'] / n:.1f}", f"{mm['rss'] / n:.1f}",
                             f"region file {mm['file_size']:,} B"])
            elif s == "uwsgi" and "cache_size" in mm:
                rows.append([f"`{s}`", f"{mm['cache_size'] / n:.1f}", f"{mm['cache_rss'] / n:.1f}",
                             "shared anonymous mappings"])
            else:
                rows.append([f"`{s}`", "–", f"{mm['bytes'] / n:.1f}", mm.get("note", "")])
        L.append(table(["system", "allocated B/item", "used B/item", "how measured"], rows))
        L.append("")
        marg = marginal_memory(data)
        if marg:
            L.append(f"Per additional item (allocated, {mem[0]['items']:,} → {mem[1]['items']:,} items): "
                     f"uwcache {marg['uwcache']:.2f} B, uWSGI {marg['uwsgi']:.2f} B. The same geometry costs the same "
                     "per item; uwcache adds a fixed header (16 KiB: geometry, lock, sequence counter, per-process "
                     "counters) and rounds the region to whole pages.\n")
        p = os.path.join(out, "plots", "memory.png")
        if p in made:
            L.append(f"![memory]({rel(p)})\n")

    prof = data.get("profile", [])
    if prof and prof[0]["rows"]:
        pr = prof[0]
        L.append("## Instruction counts (callgrind)\n")
        L.append(f"Instructions per operation, from `valgrind --tool=callgrind` runs of {pr['ops']:,} ops inside "
                 "`uwsgi --pyrun` (100-byte values), minus the same run looping over a trivial C call: the "
                 "call into the cache and everything under it, without the loop. Deterministic, unlike the "
                 "timings on a shared box.\n")
        rows = []
        systems = list(dict.fromkeys(r["system"] for r in pr["rows"]))
        ops = list(dict.fromkeys(r["op"] for r in pr["rows"]))
        for s in systems:
            rows.append([f"`{s}`"] + [f"{next(r['ir_per_op'] for r in pr['rows'] if r['system'] == s and r['op'] == o):.0f}"
                                      for o in ops])
        L.append(table(["system"] + [OP_LABEL[o] for o in ops], rows))
        L.append("")
        p = os.path.join(out, "plots", "instructions.png")
        if p in made:
            L.append(f"![instructions]({rel(p)})\n")
        L.append("Where the instructions go (exclusive instructions per op by function, top 12; "
                 "`get (hit)` and `set`):\n")
        for op in ("get_hit", "set"):
            cols = [s for s in systems if op in pr["breakdown"].get(s, {})]
            tops = {s: list(pr["breakdown"][s][op].items())[:12] for s in cols}
            depth = max((len(t) for t in tops.values()), default=0)
            rows = []
            for i in range(depth):
                row = []
                for s in cols:
                    row.append(f"{tops[s][i][1]:.0f} `{tops[s][i][0]}`" if i < len(tops[s]) else "")
                rows.append(row)
            L.append(f"**{OP_LABEL[op]}**\n")
            L.append(table([f"`{s}`" for s in cols], rows))
            L.append("")

    perf = data.get("perf", [])
    if perf and perf[0]["runs"]:
        L.append("## Where the CPU goes with one and two processes (perf)\n")
        L.append("`perf record -e cpu-clock` (sampling; this VM has no hardware counters) over a "
                 f"{data.get('settings', {}).get('perf_duration')} s run of 1 and of 2 forked processes; "
                 "share of all samples by function (self time), and the sum for the lock functions "
                 "(`uwc_lock`, `pthread_mutex_*`, `pthread_rwlock_*`, futex and scheduler work in the kernel).\n")
        runs = perf[0]["runs"]
        for system in dict.fromkeys(x["system"] for x in runs):
            for mix in dict.fromkeys(x["mix"] for x in runs if x["system"] == system):
                by_n = {x["procs"]: x for x in runs if x["system"] == system and x["mix"] == mix}
                if 1 not in by_n or 2 not in by_n:
                    continue
                one, two = by_n[1], by_n[2]
                L.append(f"**`{system}`, {mix}**: 1 process {mops(one['total_ops_s'])} M ops/s "
                         f"({mops(one['ops_per_cpu_s'])} per CPU-s); 2 processes {mops(two['total_ops_s'])} M ops/s "
                         f"({two['total_ops_s'] / one['total_ops_s']:.2f}x, {mops(two['ops_per_cpu_s'])} per CPU-s). "
                         f"Lock functions: {lock_share(one['symbols']):.1f}% of the CPU with 1 process, "
                         f"{lock_share(two['symbols']):.1f}% with 2.\n")
                names = sorted(set(one["symbols"]) | set(two["symbols"]),
                               key=lambda k: -(two["symbols"].get(k, 0) + one["symbols"].get(k, 0)))[:10]
                rows = [[f"`{k}`", f"{one['symbols'].get(k, 0):.1f}%", f"{two['symbols'].get(k, 0):.1f}%"]
                        for k in names]
                L.append(table(["function", "1 process", "2 processes"], rows))
                L.append("")

    findings = os.path.join(HERE, "FINDINGS.md")
    if os.path.exists(findings) and os.path.abspath(out) == HERE:
        with open(findings) as f:
            L.append(f.read())
    path = os.path.join(out, "RESULTS.md")
    L.extend(kept_sections(path))
    text = "\n".join(L).rstrip() + "\n"
    with open(path, "w") as f:
        f.write(text)
    return path


# Sections other scripts write into RESULTS.md (benchmarks/create_large.py by hand, and
# benchmarks/near.py, which replaces its own section and expects it last): carried over.
KEPT_SECTIONS = ("## Creating a large cache with its memory reserved", "## Near cache")


def kept_sections(path: str) -> List[str]:
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    found = []
    for title in KEPT_SECTIONS:
        start = text.find("\n" + title + "\n")
        if start < 0:
            continue
        end = text.find("\n## ", start + 1)
        found.append(text[start + 1: end if end >= 0 else len(text)].rstrip() + "\n")
    return found


def main(argv: List[str]) -> int:
    out = argv[1] if len(argv) > 1 else HERE
    with open(os.path.join(out, "data", "results.json")) as f:
        data = json.load(f)
    print(write_report(data, out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
