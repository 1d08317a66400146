"""Differential tests: the same operation sequences in real uWSGI and in uwcache.

Each sequence (seeded, so every run is identical) is run once inside a real ``uwsgi`` process
(tests/oracle.py) and once through ``uwcache.uwsgi`` on a Node started in-process from the
same ``--cache2`` strings; every result must be equal. A failing sequence is minimised (ops
removed while the results still differ) so the report is a short reproduction.

Left out, because uwcache deliberately differs (src/uwcache/uwsgi.py, reference section 12):
TTLs (uWSGI returns expired items), math ops in bitmap caches (uWSGI loses the counter),
``INT64_MIN / -1`` (uWSGI dies) and bitmap caches with ``purge_lru`` (uwcache evicts until a
value fits; pinned in test_caveats_uwsgi.py). Everything else is in: set on an existing key, update,
too-long keys and values, empty values, bitmap first-fit and its blind spot, LRU eviction,
``cache_keys`` order, full caches (and ``clear_on_full``), murmur2, ``math_initial``, stale
bytes read by math.
"""

from __future__ import annotations

import os
import pathlib
import random
import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

import oracle
import uwcache
import uwcache.uwsgi as uwsgi
from uwcache import parse_cache2

pytestmark = [pytest.mark.uwsgi, pytest.mark.usefixtures("uwsgi_bin")]

Op = Tuple[Any, ...]


@dataclass(frozen=True)
class Config:
    id: str
    cache2: Tuple[str, ...]

    @property
    def options(self) -> List[uwcache.CacheOptions]:
        return [parse_cache2(c) for c in self.cache2]


CONFIGS = [
    Config("single-block", ("name=c,items=8,blocksize=8,keysize=16",)),
    Config("single-block-12", ("name=c,items=6,blocksize=12,keysize=8,hashsize=3",)),
    Config("bitmap-bs2", ("name=c,items=6,blocks=16,blocksize=2,bitmap=1,keysize=16",)),
    Config("bitmap-bs1", ("name=c,items=10,blocks=12,blocksize=1,bitmap=1,keysize=16",)),
    Config("bitmap-bs16", ("name=c,items=5,blocks=9,blocksize=16,bitmap=1,keysize=16,hashsize=4",)),
    Config("purge-lru", ("name=c,items=5,blocksize=8,purge_lru=1,keysize=16",)),
    Config("purge-lru-h2", ("name=c,items=4,blocksize=10,purge_lru=1,keysize=16,hashsize=2",)),
    Config("hashsize-1", ("name=c,items=8,blocksize=8,hashsize=1,keysize=16",)),
    Config("murmur2", ("name=c,items=8,blocksize=8,hash=murmur2,hashsize=7,keysize=16",)),
    Config("math-initial", ("name=c,items=8,blocksize=8,math_initial=10,hashsize=3,keysize=16",)),
    Config("blocksize-4", ("name=c,items=6,blocksize=4,hashsize=2,keysize=16",)),  # math always fails
    Config("two-caches", ("name=c,items=5,blocksize=8,keysize=16,hashsize=2",
                          "name=d,items=4,blocksize=16,keysize=16,math_initial=-5")),
    Config("clear-on-full", ("name=c,items=5,blocksize=8,keysize=16,clear_on_full=1",)),
    Config("bitmap-clear-on-full", ("name=c,items=6,blocks=10,blocksize=2,bitmap=1,keysize=16,clear_on_full=1",)),
]
SEEDS = (0, 1, 2)
N_OPS = 60

BASE_KEYS = [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"k1", b"\xc3\xa9", b"\xff\x80", b"hello"]
KEY_WEIGHTS = [10] * 7 + [3, 3, 3, 3, 1, 1]  # last two: key_size bytes, key_size + 1 bytes
MATH_OPERANDS = {
    "inc": [1, 2, -3, 100, 2**40, -(2**33)],
    "dec": [1, 5, -7, 2**50],
    "mul": [2, 3, -1, 0, 7],
    "div": [2, 3, -2, 0, 5],  # never -1: INT64_MIN / -1 kills uWSGI
}


def generate(config: Config, seed: int, n_ops: int = N_OPS, clear: bool = True) -> List[Op]:
    """A random but reproducible op sequence for ``config``, then a read of the final state."""
    rng = random.Random(f"{config.id}/{seed}")
    options = config.options
    names: List[Optional[str]] = [None] + [o.name for o in options]
    key_size = min(o.key_size for o in options)
    keys = BASE_KEYS + [b"K" * key_size, b"L" * (key_size + 1)]

    def key() -> bytes:
        return rng.choices(keys, KEY_WEIGHTS)[0]

    def value(opts: uwcache.CacheOptions) -> bytes:
        top = opts.max_item_size
        r = rng.random()
        if r < 0.04:
            n = 0
        elif r < 0.10:
            n = top + 1
        elif r < 0.18:
            n = top
        elif r < 0.30:
            n = min(8, top)
        elif opts.mode_bitmap and r < 0.8:
            n = rng.randint(1, min(top, opts.block_size * 3))
        else:
            n = rng.randint(1, top)
        return bytes(rng.choice(b"ABCxyz\x00\xff") for _ in range(n))

    kinds = ["set", "update", "del", "get", "exists", "keys", "num"] + (["clear"] if clear else [])
    weights = [20, 15, 10, 15, 5, 4, 4] + ([1] if clear else [])
    if not any(o.mode_bitmap for o in options):
        kinds += ["inc", "dec", "mul", "div"]
        weights += [5, 3, 3, 3]

    ops: List[Op] = []
    for _ in range(n_ops):
        kind = rng.choices(kinds, weights)[0]
        name = rng.choice(names) if rng.random() < 0.3 else None
        opts = options[0] if name is None else next(o for o in options if o.name == name)
        tail: Tuple[Any, ...] = (name,) if name else ()
        if kind in ("set", "update"):
            ops.append((f"cache_{kind}", key(), value(opts)) + ((0, name) if name else ()))
        elif kind in ("del", "get", "exists", "num"):
            ops.append((f"cache_{kind}", key()) + tail)
        elif kind in ("keys", "clear"):
            ops.append((f"cache_{kind}",) + tail)
        elif rng.random() < 0.2:  # the default operand (1 or 2), default cache
            ops.append((f"cache_{kind}", key()))
        else:
            ops.append((f"cache_{kind}", key(), rng.choice(MATH_OPERANDS[kind])) + ((0, name) if name else ()))
    for opts in options:
        ops.append(("cache_keys", opts.name))
        ops.extend(("cache_get", k, opts.name) for k in keys)
    return ops


def run_uwcache(config: Config, ops: Sequence[Op], namespace: str) -> Tuple[List[Any], List[Optional[str]]]:
    """Results of ``ops`` through the compat functions, and cache.check() of every cache."""
    caching = uwcache.Caching.from_cache2(*config.cache2, namespace=namespace)
    node = caching.start(sweeper=False)
    results: List[Any] = []
    try:
        for op in ops:
            try:
                results.append(getattr(uwsgi, op[0])(*op[1:]))
            except Exception as exc:  # the oracle reports exceptions the same way
                results.append({"raises": type(exc).__name__})
        checks = [cache.check() for cache in node.caches.values()]
    finally:
        node.close()
    return results, checks


def first_difference(expected: Sequence[Any], got: Sequence[Any]) -> Optional[int]:
    for i, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            return i
    return None if len(expected) == len(got) else min(len(expected), len(got))


class _Namespaces:
    """Fresh namespaces derived from the test's own (each uwcache run needs empty caches)."""

    def __init__(self, base: str) -> None:
        self.base, self.n = base, 0

    def __call__(self) -> str:
        self.n += 1
        return f"{self.base}-{self.n}"


def differs(config: Config, ops: Sequence[Op], fresh: _Namespaces) -> bool:
    expected = oracle.run_ops(list(config.cache2), ops)
    got, _ = run_uwcache(config, ops, fresh())
    return first_difference(expected, got) is not None


def minimise(config: Config, ops: List[Op], fresh: _Namespaces, budget: int = 150) -> List[Op]:
    """Greedy one-op-at-a-time removal while the results still differ (bounded runs)."""
    current = list(ops)
    changed = True
    while changed and budget > 0:
        changed = False
        i = len(current) - 1
        while i >= 0 and budget > 0:
            candidate = current[:i] + current[i + 1:]
            budget -= 1
            if candidate and differs(config, candidate, fresh):
                current = candidate
                changed = True
            i -= 1
    return current


@pytest.mark.parametrize("config, seed", [(c, s) for c in CONFIGS for s in SEEDS],
                         ids=[f"{c.id}-{s}" for c in CONFIGS for s in SEEDS])
def test_sequence_matches_uwsgi(config: Config, seed: int, namespace: str) -> None:
    ops = generate(config, seed)
    expected = oracle.run_ops(list(config.cache2), ops)
    got, checks = run_uwcache(config, ops, namespace)
    assert checks == [None] * len(config.cache2)
    i = first_difference(expected, got)
    if i is None:
        return
    message = (f"{config.id} seed {seed}: op {i} {ops[i]!r}: uWSGI {expected[i]!r}, uwcache {got[i]!r}\n"
               f"cache2: {list(config.cache2)}")
    fresh = _Namespaces(namespace)
    small = minimise(config, ops[: i + 1], fresh)
    exp_small = oracle.run_ops(list(config.cache2), small)
    got_small, _ = run_uwcache(config, small, fresh())
    message += "\nminimal reproduction:\n" + "\n".join(
        f"  {op!r:70} uWSGI {a!r:30} uwcache {b!r}" for op, a, b in zip(small, exp_small, got_small))
    pytest.fail(message, pytrace=False)


def test_sequences_exercise_the_interesting_cases() -> None:
    """Guard against a generator change that silently stops covering what matters."""
    ops = [op for config in CONFIGS for seed in SEEDS for op in generate(config, seed)]
    names = {op[0] for op in ops}
    assert names >= {"cache_set", "cache_update", "cache_del", "cache_get", "cache_exists", "cache_keys",
                     "cache_inc", "cache_dec", "cache_mul", "cache_div", "cache_num", "cache_clear"}
    values = [op[2] for op in ops if op[0] in ("cache_set", "cache_update")]
    assert b"" in values and any(len(v) > 16 for v in values)
    assert any(len(op[1]) == 17 for op in ops if len(op) > 1 and isinstance(op[1], bytes))  # key too long
    assert not any(op[0] == "cache_div" and len(op) > 2 and op[2] == -1 for op in ops)


def test_clear_keeps_uwsgi_free_slot_order(namespace: str) -> None:
    """After a delete and a clear, uWSGI reuses slots in the order its clear pushed them."""
    config = Config("clear", ("name=c,items=4,blocksize=8",))
    ops: List[Op] = [("cache_set", "a", "AAAAAAAA"), ("cache_set", "b", "BBBBBBBB"), ("cache_del", "a"),
                     ("cache_clear",), ("cache_set", "c", "C"), ("cache_inc", "c", 0), ("cache_get", "c")]
    expected = oracle.run_ops(list(config.cache2), ops)
    assert expected[-1] == b"CBBBBBBB"  # c took b's old slot 2 (free stack after clear: 1, 3, 2)
    got, _ = run_uwcache(config, ops, namespace)
    assert got == expected


# --------------------------------------------------------------------------- raw slot layout

RECORD = ("flags", "keysize", "hash", "valsize", "first_block", "expires", "hits", "prev", "next",
          "lru_prev", "lru_next")
ALWAYS = ("keysize", "hash", "valsize", "expires", "prev", "next")  # zeroed on delete in both
LIVE = ("flags", "first_block")  # stale in free slots (uWSGI leaves first_block = -1 after a failed bitmap set)


def slot_fields(image: bytes, opts: uwcache.CacheOptions) -> List[Dict[str, Any]]:
    size = 88 + opts.key_size
    data = size * opts.max_items
    slots = []
    for s in range(opts.max_items):
        rec: Dict[str, Any] = dict(zip(RECORD, struct.unpack_from("<11Q", image, s * size)))
        rec["key"] = image[s * size + 88: s * size + 88 + rec["keysize"]]
        start = data + rec["first_block"] * opts.block_size if rec["keysize"] else 0
        rec["value"] = image[start: start + rec["valsize"]]
        # single-block: the whole block, stale tail included (math reads it)
        rec["block"] = image[start: start + opts.block_size] if rec["keysize"] and not opts.mode_bitmap else b""
        slots.append(rec)
    return slots


@pytest.mark.parametrize("config, seed", [
    (CONFIGS[1], 0),  # single-block, chains (hashsize=3)
    (CONFIGS[2], 1),  # bitmap
    (CONFIGS[6], 2),  # purge_lru, chains
], ids=["single-block", "bitmap", "purge-lru"])
def test_slot_layout_matches_uwsgi_store(config: Config, seed: int, namespace: str, tmp_path: pathlib.Path) -> None:
    """Item records and values of uWSGI's store file equal uwcache's _export_image() after the
    same ops. Clears are left out so the caches end full of items to compare; the slot order
    after a clear has its own test (test_clear_keeps_uwsgi_free_slot_order)."""
    (opts,) = config.options
    store = str(tmp_path / "uwsgi.store")
    ops = generate(config, seed, clear=False)
    theirs = oracle.run_ops(config.cache2[0] + f",store={store}", ops + [("read_file", store)])
    image_uwsgi = theirs[-1]

    node = uwcache.Caching.from_cache2(config.cache2[0], namespace=namespace).start(sweeper=False)
    try:
        ours = []
        for op in ops:
            ours.append(getattr(uwsgi, op[0])(*op[1:]))
        image_ours = node.cache()._export_image()
    finally:
        node.close()
    assert ours == theirs[:-1]
    assert len(image_ours) == len(image_uwsgi) == os.path.getsize(store)

    live = 0
    for s, (a, b) in enumerate(zip(slot_fields(image_uwsgi, opts), slot_fields(image_ours, opts))):
        assert {f: b[f] for f in ALWAYS} == {f: a[f] for f in ALWAYS}, f"slot {s}"
        if not a["keysize"]:
            continue
        live += 1
        fields = LIVE + ("key", "value", "block") + (("lru_prev", "lru_next") if opts.full_purge_lru else ())
        assert {f: b[f] for f in fields} == {f: a[f] for f in fields}, f"slot {s}"
    assert live >= 2  # the comparison saw real items


# --------------------------------------------------------------------------- stats counters

STATS_KEYS = ["name", "hash", "hashsize", "keysize", "max_items", "blocks", "blocksize", "items", "hits", "miss",
              "full", "last_modified_at"]
STATS_CONFIGS = [c for c in CONFIGS if c.id in ("bitmap-bs1", "purge-lru", "two-caches")]
_stats_runs: Dict[str, Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]] = {}


def stats_run(config: Config, namespace: str) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(uWSGI's stats-server ``caches`` list, uwcache's Node.stats()) after one sequence; run once
    per config (the stats pseudo-op needs a master, which costs about a second)."""
    if config.id not in _stats_runs:
        ops = generate(config, 0)
        theirs = oracle.run_ops(list(config.cache2), ops + [("stats",)])
        caching = uwcache.Caching.from_cache2(*config.cache2, namespace=namespace)
        with caching.start(sweeper=False) as node:
            ours_results = [getattr(uwsgi, op[0])(*op[1:]) for op in ops]
            ours = node.stats()
        assert ours_results == theirs[:-1]
        _stats_runs[config.id] = (theirs[-1]["caches"], ours)
    return _stats_runs[config.id]


@pytest.mark.parametrize("config", STATS_CONFIGS, ids=[c.id for c in STATS_CONFIGS])
def test_stats_counters_match_uwsgi(config: Config, namespace: str) -> None:
    theirs, ours = stats_run(config, namespace)
    assert len(theirs) == len(ours) == len(config.cache2)
    for a, b in zip(theirs, ours):
        assert list(a) == STATS_KEYS and list(b)[: len(STATS_KEYS)] == STATS_KEYS
        assert {k: b[k] for k in STATS_KEYS if k != "miss"} == {k: a[k] for k in STATS_KEYS if k != "miss"}
    assert any(a["full"] for a in theirs) and any(a["hits"] for a in theirs)  # counters were exercised


@pytest.mark.parametrize("config", STATS_CONFIGS, ids=[c.id for c in STATS_CONFIGS])
def test_stats_miss_counter_matches_uwsgi(config: Config, namespace: str) -> None:
    theirs, ours = stats_run(config, namespace)
    assert [b["miss"] for b in ours] == [a["miss"] for a in theirs]


def test_get_of_an_invalid_key_counts_a_miss(namespace: str) -> None:
    cache2 = "name=c,items=4,blocksize=8,keysize=4"
    ops: List[Op] = [("cache_get", "abcde"), ("cache_get", ""), ("cache_num", "abcde"), ("cache_get", "abcd"),
                     ("cache_exists", "abcde")]
    theirs = oracle.run_ops(cache2, ops + [("stats",)])
    assert theirs[-1]["caches"][0]["miss"] == 4  # exists never counts
    with uwcache.Caching.from_cache2(cache2, namespace=namespace).start(sweeper=False) as node:
        assert [getattr(uwsgi, op[0])(*op[1:]) for op in ops] == theirs[:-1]
        assert node.cache().stats()["miss"] == 4
