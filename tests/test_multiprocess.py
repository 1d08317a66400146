"""Many processes, one cache: exact totals, fork and spawn, and crashes inside the lock.

Like py-lmdb's tests, children die mid-change (SIGKILL while holding the cache's mutex)
and the survivors must recover: no hang, no corruption, nothing lost but the dead write.
"""
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import uwcache
from forks import wait_child

pytestmark = pytest.mark.slow


def _options(namespace, **extra):
    opts = dict(namespace=namespace, max_items=200, block_size=64, key_size=32, hash_size=16)
    opts.update(extra)
    return opts


def _wait_child(pid, timeout=30):
    return wait_child(pid, timeout, "hung")


@pytest.mark.parametrize("bitmap", [False, True])
def test_forked_children_increment_to_the_exact_total(namespace, bitmap):
    extra = dict(mode_bitmap=True, block_size=8, block_count=400) if bitmap else {}
    cache = uwcache.open_cache("ctr", **_options(namespace, **extra))
    children, per_child = 4, 3000
    pids = []
    for _ in range(children):
        pid = os.fork()
        if pid == 0:  # child: use the inherited mapping directly
            code = 0
            try:
                for i in range(per_child):
                    cache.incr("total")
                    cache.set(f"k{i % 50}", b"x" * (i % 30 + 1))
                    cache.get(f"k{(i * 7) % 50}")
            except BaseException:
                code = 1
            os._exit(code)
        pids.append(pid)
    for pid in pids:
        assert os.waitstatus_to_exitcode(_wait_child(pid)) == 0
    stats = cache.stats()
    assert stats["hits"] + stats["miss"] == children * per_child  # per-process counters, summed
    assert cache.get_int("total") == children * per_child
    assert cache.check() is None
    cache.close()


_INDEPENDENT = textwrap.dedent(
    """
    import sys, uwcache
    ns, n = sys.argv[1], int(sys.argv[2])
    c = uwcache.open_cache("shared", namespace=ns, max_items=200, block_size=64, key_size=32, hash_size=16)
    for i in range(n):
        c.incr("total")
    print("done", flush=True)
    """
)


def test_independently_started_processes_share_one_cache(namespace):
    cache = uwcache.open_cache("shared", **_options(namespace))
    cache.set("hello", b"from the parent")
    procs = [
        subprocess.Popen([sys.executable, "-c", _INDEPENDENT, namespace, "2000"], stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0 and out.strip() == b"done"
    assert cache.get_int("total") == 6000
    # the children attached without clearing what was there
    assert cache.get("hello") == b"from the parent"
    cache.close()


def _spawn_child(namespace, queue):
    c = uwcache.attach("spawned", namespace=namespace)
    queue.put(c.get("k"))
    c.set("from-child", b"hi")
    c.close()


def test_spawned_process_attaches_by_name(namespace):
    cache = uwcache.open_cache("spawned", **_options(namespace))
    cache.set("k", b"v")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_spawn_child, args=(namespace, queue))
    p.start()
    assert queue.get(timeout=60) == b"v"
    p.join(60)
    assert p.exitcode == 0
    assert cache.get("from-child") == b"hi"
    cache.close()


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_writer_killed_inside_the_lock_leaves_the_cache_usable(namespace, stage):
    cache = uwcache.open_cache("crash", **_options(namespace))
    for i in range(20):
        cache.set(f"k{i}", f"v{i}")
    pid = os.fork()
    if pid == 0:
        # takes the mutex, starts a change (stage 1: half an insert; stage 2: also corrupts
        # a counter and a chain head), then SIGKILLs itself while holding the lock
        cache._debug_crash_in_lock(stage)
        os._exit(3)  # not reached
    status = _wait_child(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL

    # the next locker repairs the structure instead of hanging
    cache.set("after", b"crash")
    assert cache.get("after") == b"crash"
    assert all(cache.get(f"k{i}") == f"v{i}".encode() for i in range(20))
    assert b"half" not in cache.keys()  # the half-written item was dropped
    assert len(cache) == 21
    assert cache.check() is None
    assert cache.stats()["repairs"] == 1
    cache.close()


def test_readers_fall_back_when_a_writer_died(namespace):
    # an optimistic reader sees the odd sequence counter of the dead writer: it must not
    # spin forever, but fall back to the mutex and get the repair
    cache = uwcache.open_cache("crashread", **_options(namespace))
    cache.set("k", b"v")
    pid = os.fork()
    if pid == 0:
        cache._debug_crash_in_lock(0)
        os._exit(3)
    _wait_child(pid)
    assert cache.get("k") == b"v"
    assert "k" in cache
    assert cache.check() is None
    cache.close()


@pytest.mark.parametrize("mode", ["single-block", "bitmap"])
def test_writers_killed_at_random_moments(namespace, mode):
    # single-block overwrites run under their bucket's stripe only (no mutex): a writer killed
    # there leaves the stripe held by a dead pid, which the next writer or reader takes over
    extra = dict(mode_bitmap=True, block_size=8, block_count=600) if mode == "bitmap" else dict(block_size=40)
    cache = uwcache.open_cache("chaos", **_options(namespace, **extra))
    rng = random.Random(1234)
    for round_ in range(6):
        pids = []
        for child in range(2):
            pid = os.fork()
            if pid == 0:
                r = random.Random(round_ * 10 + child)
                while True:
                    k = f"k{r.randrange(150)}"
                    op = r.random()
                    try:
                        if op < 0.5:
                            cache.set(k, b"v" * r.randint(1, 40))
                        elif op < 0.7:
                            cache.delete(k)
                        elif op < 0.8:
                            cache.incr("n")
                        else:
                            cache.get(k)
                    except uwcache.CacheFull:
                        cache.clear()
            pids.append(pid)
        time.sleep(rng.uniform(0.05, 0.25))
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            _wait_child(pid)
        # whatever state the children died in, the cache is consistent and usable
        for i in range(150):
            cache.get(f"k{i}")  # every stripe must be free (or taken back) for readers too
        cache.set("probe", b"ok")
        assert cache.get("probe") == b"ok"
        problem = cache.check()
        assert problem is None, problem
    cache.close()


def test_region_survives_all_processes_exiting(namespace):
    cache = uwcache.open_cache("left", **_options(namespace))
    cache.set("k", b"kept in shared memory")
    cache.close()
    # nobody is attached now: the next opener recovers the cold region and keeps the data
    again = uwcache.open_cache("left", **_options(namespace))
    assert again.get("k") == b"kept in shared memory"
    again.close()


def test_other_configuration_gets_its_own_generation_while_in_use(namespace):
    cache = uwcache.open_cache("mm", **_options(namespace))
    cache.set("k", b"old")
    # a deploy that changes the options: no RegionMismatch, a new (cold) generation
    other = uwcache.open_cache("mm", **_options(namespace, max_items=300))
    assert other.max_items == 300 and other.path != cache.path and other.get("k") is None
    other.set("k", b"new")
    assert cache.get("k") == b"old"  # the old configuration keeps its region
    old_path = cache.path
    cache.close()  # its last user left: the old generation is freed
    assert not os.path.exists(old_path)
    assert [g["path"] for g in uwcache.cache.generations("mm", namespace)] == [other.path]
    other.close()
    # with nobody attached the current generation stays for the next opener
    again = uwcache.open_cache("mm", **_options(namespace, max_items=300))
    assert again.get("k") == b"new"
    again.close()


def test_namespaces_do_not_collide(namespace):
    a = uwcache.open_cache("same", **_options(namespace + "a"))
    b = uwcache.open_cache("same", **_options(namespace + "b"))
    a.set("k", b"A")
    b.set("k", b"B")
    assert (a.get("k"), b.get("k")) == (b"A", b"B")
    assert uwcache.list_caches(namespace + "a") == ["same"]
    a.close()
    b.close()


def test_namespace_from_environment(namespace, monkeypatch):
    monkeypatch.setenv("UWCACHE_NAMESPACE", namespace)
    c = uwcache.open_cache("env", max_items=4, block_size=8)
    assert c.namespace == namespace
    assert uwcache.list_caches() == ["env"]
    c.close()


def test_region_files_are_owner_only(namespace, shm_dir):
    c = uwcache.open_cache("perm", **_options(namespace))
    assert os.stat(c.path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(c.path)).st_mode & 0o777 == 0o700
    c.close()


def test_hit_counters_stay_exact_past_the_per_process_slots(namespace):
    # every handle claims a counter slot; past 159 they share one overflow slot
    handles = [uwcache.open_cache("many", **_options(namespace)) for _ in range(170)]
    try:
        handles[0].set("k", b"v")
        for h in handles:
            assert h.get("k") == b"v"
            assert h.get("missing") is None
        stats = handles[0].stats()
        assert (stats["hits"], stats["miss"]) == (170, 170)
    finally:
        for h in handles:
            h.close()
    again = uwcache.open_cache("many", **_options(namespace))
    assert again.get("k") == b"v"
    again.close()


def test_overwriter_killed_holding_its_stripe(namespace):
    cache = uwcache.open_cache("stripe", **_options(namespace))
    cache.set("k", b"v1")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        # hammer overwrites of one key; the parent kills us at some point, often mid-write
        os.write(w, b"go")
        while True:
            cache.set("k", b"v2")
            cache.incr("n")
    os.read(r, 2)
    time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    _wait_child(pid)
    # no hang: the stripe of "k" is free or taken back from the dead pid
    start = time.time()
    assert cache.get("k") in (b"v1", b"v2")
    cache.set("k", b"v3")
    assert cache.get("k") == b"v3"
    assert time.time() - start < 5
    assert cache.check() is None
    cache.close()
