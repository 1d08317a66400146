"""Locks the kernel releases (issues 9 and 10): robust per-stripe mutexes, sleeping waiters,
no torn values after a kill, housekeeping in bounded chunks, and regions that no byte
pattern can crash.

Every test that could hang on a broken lock runs the risky part in a forked child with a
deadline, so a regression fails instead of stalling the suite.
"""
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import uwcache
from forks import wait_child


def _options(namespace, **extra):
    opts = dict(namespace=namespace, max_items=400, block_size=64, key_size=32, hash_size=256)
    opts.update(extra)
    return opts


def _wait(pid, timeout):
    return wait_child(pid, timeout)


def _in_child(fn, timeout):
    """Run fn() in a forked child; its exit code is fn's return value (0 = pass)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = fn() or 0
        except BaseException:  # noqa: BLE001 - report through the exit code
            import traceback

            traceback.print_exc()
        os._exit(code)
    status = _wait(pid, timeout)
    assert os.WIFEXITED(status), f"the checker child died of signal {os.WTERMSIG(status)}"
    return os.WEXITSTATUS(status)


def _is_zombie(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


def _dies_holding_everything(cache):
    """Fork a child that takes the header mutex and every stripe, then SIGKILLs itself.
    Returns its pid, NOT reaped: it stays a zombie until the caller reaps it."""
    pid = os.fork()
    if pid == 0:
        cache._debug_crash_in_lock(0)
        os._exit(3)
    deadline = time.time() + 10
    while not _is_zombie(pid):
        assert time.time() < deadline, "the child did not die"
        time.sleep(0.005)
    return pid


def test_unreaped_zombie_holder_is_recovered_at_once(namespace):
    # kill(pid, 0) says a zombie is alive: the old pid polling stalled 2 s per stripe
    cache = uwcache.open_cache("zombie", **_options(namespace))
    for i in range(50):
        cache.set(f"k{i}", f"v{i}")
    zombie = _dies_holding_everything(cache)
    try:
        def check():
            start = time.monotonic()
            ok = all(cache.get(f"k{i}") == f"v{i}".encode() for i in range(50))
            cache.set("k1", b"new")
            cache.set("fresh", b"x")
            ok = ok and cache.get("k1") == b"new" and cache.check() is None
            return 0 if ok and time.monotonic() - start < 1.0 else 1

        assert _in_child(check, timeout=20) == 0
        assert _is_zombie(zombie)  # still unreaped while the cache was used
    finally:
        os.waitpid(zombie, 0)
    assert cache.stats()["repairs"] == 1
    cache.close()


def test_zombie_overwriter_holding_one_stripe(namespace):
    # a stripe-only overwrite killed mid-copy, its process left unreaped: the next reader and
    # writer of that key go on at once, and the half-written value is never served
    cache = uwcache.open_cache("zstripe", **_options(namespace))
    cache.set("k", b"A" * 60)
    pid = os.fork()
    if pid == 0:
        cache._debug_crash_mid_write(b"k", b"B" * 60)
        os._exit(3)
    deadline = time.time() + 10
    while not _is_zombie(pid):
        assert time.time() < deadline
        time.sleep(0.005)
    try:
        def check():
            start = time.monotonic()
            got = cache.get("k")
            if got not in (None, b"A" * 60, b"B" * 60):
                return 2
            cache.set("k", b"C" * 10)
            return 0 if cache.get("k") == b"C" * 10 and time.monotonic() - start < 1.0 else 1

        assert _in_child(check, timeout=20) == 0
    finally:
        os.waitpid(pid, 0)
    assert cache.check() is None
    cache.close()


def test_holder_dead_in_another_pid_namespace(namespace, tmp_path):
    # containers sharing a volume: the holder's pid means nothing here (pid 1 or 2 in its own
    # namespace), yet the kernel releases its robust mutexes when it dies
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    probe = subprocess.run(["unshare", "-p", "-f", "true"], capture_output=True)
    if probe.returncode != 0:
        print("SKIP reason: unshare -p refused:", probe.stderr.decode().strip())
        pytest.skip("creating a PID namespace is refused here: " + probe.stderr.decode().strip())
    opts = _options(namespace)
    cache = uwcache.open_cache("pidns", **opts)
    cache.set("k", b"v")
    script = textwrap.dedent(f"""
        import os, uwcache
        c = uwcache.open_cache("pidns", **{opts!r})
        assert os.getpid() < 10, os.getpid()   # really inside a fresh PID namespace
        c._debug_crash_in_lock(0)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    # sh is the namespace's init (an init ignores the SIGKILL it sends itself); python is pid 2
    proc = subprocess.run(["unshare", "-p", "-f", "sh", "-c", '"$0" -c "$1"; echo "rc=$?"', sys.executable, script],
                          env=env, capture_output=True, timeout=60)
    assert b"rc=137" in proc.stdout, (proc.stdout, proc.stderr)

    def check():
        start = time.monotonic()
        ok = cache.get("k") == b"v"
        cache.set("k", b"w")
        ok = ok and cache.get("k") == b"w" and cache.check() is None
        return 0 if ok and time.monotonic() - start < 1.0 else 1

    assert _in_child(check, timeout=20) == 0
    cache.close()


def test_live_holder_is_waited_for_asleep_and_never_stolen(namespace):
    # a fresh cache, a stripe held legitimately for 1.5 s: the waiter sleeps (little CPU)
    # and gets the stripe when the holder lets go; nothing is taken over
    cache = uwcache.open_cache("live", **_options(namespace))
    cache.set("k", b"v1")
    r, w = os.pipe()
    holder = os.fork()
    if holder == 0:
        os.write(w, b"x")
        cache._debug_hold_lock(1500, True)
        os._exit(0)
    os.read(r, 1)
    time.sleep(0.1)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    cache.set("k", b"v2")  # an overwrite: waits for the key's stripe
    waited = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    assert os.WEXITSTATUS(_wait(holder, 20)) == 0
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    assert waited > 1.0, "the stripe was taken from a live holder"
    assert cpu < 0.3 * waited, f"the waiter burnt {cpu:.2f} s of CPU in {waited:.2f} s"
    assert cache.get("k") == b"v2"
    assert cache._stats_raw()["stripe_takeovers"] == 0
    assert cache.stats()["repairs"] == 0
    cache.close()


def test_stripe_waiters_never_set_the_futex_waiters_bit(namespace):
    # format 7: a stripe waiter polls instead of sleeping on the futex, so a lone stripe hold
    # can be let go with a plain store; a waiters bit on a stripe would be a lost wake-up
    from uwcache.cache import current_path

    cache = uwcache.open_cache("waiters", **_options(namespace))
    cache.set("k", b"v1")
    r, w = os.pipe()
    holder = os.fork()
    if holder == 0:
        os.write(w, b"x")
        cache._debug_hold_lock(1200, True)
        os._exit(0)
    os.read(r, 1)
    time.sleep(0.1)
    waiters = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            cache.set("k", b"v2")  # waits for the key's stripe, held by the holder
            os._exit(0)
        waiters.append(pid)
    time.sleep(0.6)
    with open(current_path("waiters", namespace), "rb") as f:
        header = f.read(32768)
    words = [int.from_bytes(header[i:i + 4], "little") for i in range(0, len(header), 4)]
    held = sum(1 for x in words if x == holder)
    with_waiters_bit = [hex(x) for x in words if x == holder | 0x80000000]
    for pid in [holder] + waiters:
        assert os.WEXITSTATUS(_wait(pid, 20)) == 0
    assert held >= 128, "the holder's thread id is not in every stripe's lock word"
    assert with_waiters_bit == [], "a waiter slept on a stripe's futex"
    assert cache.get("k") == b"v2"
    cache.close()


def test_writer_killed_mid_copy_never_leaves_a_torn_value(namespace):
    # deterministic: the copy stops halfway and the writer dies, many times over
    cache = uwcache.open_cache("torn", **_options(namespace, block_size=4096))
    for round_ in range(40):
        old, new = bytes([65 + round_ % 20]) * 4000, bytes([97 + round_ % 20]) * 4000
        cache.set("k", old)
        pid = os.fork()
        if pid == 0:
            cache._debug_crash_mid_write(b"k", new)
            os._exit(3)
        status = _wait(pid, 20)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        got = cache.get("k")
        assert got in (None, old, new), f"round {round_}: a torn value was served"
        assert cache.check() is None
    cache.close()


def test_a_store_whose_writer_died_mid_copy_reopens_cold_without_the_torn_value(namespace, tmp_path):
    # format 6: a stripe-only overwrite names the slot it copies into in its stripe, not in the
    # record. Its writer is killed halfway and every process goes before anyone takes that
    # stripe: reopened cold, the half-written item is dropped and the others are kept
    store = tmp_path / "torn.store"
    opts = _options(namespace, block_size=4096, store=str(store))
    cache = uwcache.open_cache("torncold", **opts)
    cache.set("k", b"A" * 4000)
    cache.set("other", b"keep")
    pid = os.fork()
    if pid == 0:
        cache._debug_crash_mid_write(b"k", b"B" * 4000)
        os._exit(3)
    status = _wait(pid, 20)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    cache.close()  # the last user: the store is cold now

    def check():
        again = uwcache.open_cache("torncold", **opts)
        ok = again.get("k") is None and again.get("other") == b"keep" and again.check() is None
        again.set("k", b"C" * 10)
        ok = ok and again.get("k") == b"C" * 10
        again.close()
        return 0 if ok else 1

    assert _in_child(check, timeout=20) == 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["single-block", "bitmap"])
def test_overwriters_killed_at_random_never_tear_values(namespace, mode):
    # writers overwrite large uniform values and are SIGKILLed at random moments; a reader
    # process checks every value it gets: old, new or nothing, never a mix
    extra = dict(mode_bitmap=True, block_size=1024, block_count=2000) if mode == "bitmap" else dict(block_size=65536)
    cache = uwcache.open_cache("torn2", **_options(namespace, max_items=20, **extra))
    size = 60000
    for i in range(4):
        cache.set(f"k{i}", b"a" * size)
    reader = os.fork()
    if reader == 0:
        end = time.time() + 60
        bad = 0
        while time.time() < end and not os.path.exists(f"/tmp/{namespace}.stop"):
            for i in range(4):
                v = cache.get(f"k{i}")
                if v is not None and v != v[:1] * len(v):
                    bad += 1
        os._exit(10 if bad else 0)
    rng = random.Random(7)
    kills = 0
    try:
        for round_ in range(60):
            pid = os.fork()
            if pid == 0:
                r = random.Random(round_)
                while True:
                    i = r.randrange(4)
                    try:
                        cache.set(f"k{i}", bytes([r.randrange(97, 123)]) * size)
                    except uwcache.CacheFull:
                        pass
            time.sleep(rng.uniform(0.001, 0.02))
            os.kill(pid, signal.SIGKILL)
            _wait(pid, 20)
            kills += 1
    finally:
        open(f"/tmp/{namespace}.stop", "w").close()
        status = _wait(reader, 60)
        os.unlink(f"/tmp/{namespace}.stop")
    assert os.WEXITSTATUS(status) == 0, "the reader saw a torn value"
    for i in range(4):
        v = cache.get(f"k{i}")
        assert v is None or v == v[:1] * len(v)
    assert cache.check() is None
    cache.close()


def test_stats_and_gets_do_not_wait_for_the_lock(namespace):
    # stats come from counters (no lock, no scan under the lock) and gets do not need the
    # header mutex: both answer while another process holds it
    cache = uwcache.open_cache("stats", **_options(namespace, block_size=128))
    for i in range(100):
        cache.set(f"k{i}", b"x" * (i + 1))
    r, w = os.pipe()
    holder = os.fork()
    if holder == 0:
        os.write(w, b"x")
        cache._debug_hold_lock(1500)
        os._exit(0)
    os.read(r, 1)
    time.sleep(0.1)
    t0 = time.monotonic()
    st = cache.stats()
    assert cache.get("k5") == b"x" * 6
    took = time.monotonic() - t0
    _wait(holder, 20)
    assert took < 0.5, f"stats()/get waited {took:.2f} s for the lock"
    assert st["items"] == 100
    assert st["bytes_used"] == sum(range(1, 101))
    cache.close()


@pytest.mark.parametrize("mode", ["single-block", "bitmap"])
def test_byte_and_block_counters_follow_every_write(namespace, mode):
    extra = dict(mode_bitmap=True, block_size=16, block_count=2000) if mode == "bitmap" else {}
    cache = uwcache.open_cache("counters", **_options(namespace, **extra))

    def expect():
        values = [cache.get(k) for k in cache.keys()]
        st = cache.stats()
        assert st["bytes_used"] == sum(len(v) for v in values)
        blocks = sum(-(-len(v) // 16) for v in values) if mode == "bitmap" else len(values)
        assert st["blocks_used"] == blocks

    for i in range(50):
        cache.set(f"k{i}", b"v" * (i + 1))
    expect()
    pid = os.fork()
    if pid == 0:  # overwrites of other lengths from another process (stripe-only path)
        for i in range(0, 50, 2):
            cache.set(f"k{i}", b"w" * (50 - i))
        cache.close()
        os._exit(0)
    assert os.WEXITSTATUS(_wait(pid, 30)) == 0
    expect()
    for i in range(0, 50, 3):
        cache.delete(f"k{i}")
    cache.incr("n", 5)
    expect()
    cache.clear()
    expect()
    assert cache.stats()["bytes_used"] == 0
    cache.close()


@pytest.mark.slow
def test_gets_do_not_wait_behind_a_sweep_of_a_large_cache(namespace):
    # 1M items, 10% with a TTL that the sweeper sees as expired: while the sweep frees them
    # in chunks, gets of the other items never wait for the whole sweep
    n = 1_000_000
    cache = uwcache.open_cache("sweep", **_options(namespace, max_items=n + 1, block_size=8, key_size=12,
                                                   hash_size=1 << 20))
    setter = cache.set
    for i in range(n):
        if i % 10:
            setter(f"k{i}", b"v")
        else:
            setter(f"k{i}", b"v", expires=3600)
    keys = [f"k{i}" for i in range(1, n, 7919) if i % 10]
    r, w = os.pipe()
    sweeper = os.fork()
    if sweeper == 0:
        os.write(w, b"x")
        freed, _ = cache._sweep(True, False, int(time.time()) + 7200)
        os._exit(0 if freed == n // 10 else 1)
    os.read(r, 1)
    get = cache.get
    clock = time.perf_counter
    usage, me = resource.getrusage, resource.RUSAGE_SELF
    lat, own_waits = [], []
    while True:
        for k in keys:
            preempted = usage(me).ru_nivcsw
            t = clock()
            get(k)
            took = clock() - t
            lat.append(took)
            # a get that took long because the scheduler ran someone else on a busy machine
            # (an involuntary switch) did not wait for the sweep; every other wait did
            if took > 0.002 and usage(me).ru_nivcsw == preempted:
                own_waits.append(took)
        done, status = os.waitpid(sweeper, os.WNOHANG)
        if done:
            break
    assert os.WEXITSTATUS(status) == 0
    assert len(cache) == n - n // 10
    lat.sort()
    p999 = lat[int(len(lat) * 0.999)]
    print(f"{len(lat)} gets during the sweep: p99.9 {p999 * 1e3:.3f} ms, max {lat[-1] * 1e3:.3f} ms, "
          f"waits over 2 ms without preemption: {[round(x * 1e3, 1) for x in own_waits]}")
    assert p999 < 0.002, f"p99.9 get latency {p999 * 1e3:.2f} ms during the sweep"
    # the old sweep held every stripe for the whole 1M-slot pass (30-150 ms here); a chunk
    # holds a stripe for one delete. The bound leaves room for a sweeper that is itself
    # descheduled for a scheduler tick (4 ms) on a shared machine.
    assert not own_waits or max(own_waits) < 0.009, f"gets waited {own_waits} s behind the sweep"
    cache.close()


def test_a_full_write_reclaims_expired_items_a_window_at_a_time(namespace):
    # no sweeper: a write that finds the cache full frees expired items itself, but only as
    # far as the first window that frees something, not the whole (possibly 1M-slot) cache
    n = 20_000
    cache = uwcache.open_cache("reclaim", **_options(namespace, max_items=n + 1, block_size=8, key_size=12,
                                                     hash_size=1 << 15))
    for i in range(n):
        cache._set_unreplicated(f"old{i}", b"v", 1)  # stored already expired
    assert len(cache) == n
    cache.set("new0", b"v")
    assert cache.get("new0") == b"v"
    assert n // 2 < len(cache) < n, "the write freed every expired item in one go"
    for i in range(1, n):  # later full writes go on where the last scan stopped
        cache.set(f"new{i}", b"v")
    assert len(cache) == n and cache.get("new1") == b"v" and cache.check() is None
    cache.close()


def test_a_full_write_finds_expired_items_anywhere(namespace):
    # the only expired items sit wherever their slots are: the scan goes all the way round
    n = 5_000
    cache = uwcache.open_cache("reclaim2", **_options(namespace, max_items=n + 1, block_size=8, key_size=12,
                                                      hash_size=1 << 13))
    for first_expired in (True, False):
        cache.clear()
        for i in range(n):
            expired = (i < 3) if first_expired else (i >= n - 3)
            cache._set_unreplicated(f"k{i}", b"v", 1 if expired else 0)
        for j in range(3):
            cache.set(f"fresh{j}", b"v")
        with pytest.raises(uwcache.CacheFull):
            cache.set("one-too-many", b"v")
        assert len(cache) == n and cache.check() is None
    cache.close()


def test_a_full_bitmap_write_reclaims_until_its_run_fits(namespace):
    # the first window's expired items (every other block) leave no run of 4 blocks; the
    # write must go on reclaiming (a run sits in the middle, more than a window from either
    # end of the slots) before it says the cache is full
    n = 20_000
    cache = uwcache.open_cache("reclaim3", **_options(namespace, max_items=n + 1, mode_bitmap=True, block_size=8,
                                                      block_count=n + 1, key_size=12, hash_size=1 << 15))
    for i in range(n):
        expired = 9500 <= i < 10500 or i % 2 == 1
        cache._set_unreplicated(f"k{i}", b"v", 1 if expired else 0)
    cache._set_unreplicated("last", b"v", 0)  # every slot and block taken
    cache.set("wide", b"w" * 32)  # 4 blocks
    assert cache.get("wide") == b"w" * 32
    assert all(cache.get(f"k{i}") == b"v" for i in range(0, n, 2) if not 9500 <= i < 10500)  # no live loss
    assert cache.check() is None
    cache.close()


def _fuzz_child(namespace, mode, seed):
    extra = {"single-block": {}, "bitmap": dict(mode_bitmap=True, block_size=16, block_count=3000),
             "lru": dict(full_purge_lru=True)}[mode]
    cache = uwcache.open_cache("fuzz" + mode, **_options(namespace, max_items=300, hash_size=512, **extra))
    layout = cache._debug_layout()
    path = None
    for root, _dirs, files in os.walk("/dev/shm"):
        for f in files:
            if namespace in root and ("fuzz" + mode) in f:
                path = os.path.join(root, f)
    assert path, "region file not found"
    fd = os.open(path, os.O_RDWR)
    rng = random.Random(seed)
    areas = [a for a in ("counters", "items", "table", "stack", "bitmap") if layout[a][1]]
    errors = (uwcache.CacheError, ValueError, KeyError, OverflowError)
    for round_ in range(150):
        for i in range(rng.randrange(20, 60)):
            try:
                cache.set(f"k{rng.randrange(120)}", b"v" * rng.randrange(1, 60),
                          expires=rng.choice([0, 0, 1, 3600]))
            except errors:
                pass
        for _ in range(rng.randrange(1, 6)):
            area = rng.choice(areas)
            off, length = layout[area]
            if rng.random() < 0.5:  # one aligned 8-byte field: a huge, small or random value
                pos = off + rng.randrange(max(1, length // 8)) * 8
                val = rng.choice([2**64 - 1, 2**63, 2**32 + 5, 299, 300, 301, 1, 0, rng.getrandbits(64)])
                os.pwrite(fd, val.to_bytes(8, "little"), pos)
            else:
                pos = off + rng.randrange(length)
                os.pwrite(fd, bytes([rng.randrange(256)]), pos)
        for _ in range(30):
            op = rng.random()
            k = f"k{rng.randrange(120)}"
            try:
                if op < 0.3:
                    cache.get(k)
                elif op < 0.5:
                    cache.set(k, b"w" * rng.randrange(1, 60))
                elif op < 0.6:
                    cache.delete(k)
                elif op < 0.65:
                    cache.incr("n")
                elif op < 0.7:
                    cache.keys()
                elif op < 0.75:
                    cache.stats()
                elif op < 0.8:
                    cache._sweep(True, True, int(time.time()) + 10)
                elif op < 0.85:
                    k in cache  # noqa: B015
                elif op < 0.9:
                    cache.add(k, b"a")
                else:
                    len(cache)
            except errors:
                pass
        problem = cache.check()
        if problem is not None or rng.random() < 0.2:
            cache._repair()
            assert cache.check() is None, cache.check()
    os.close(fd)
    cache.close()
    return 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["single-block", "bitmap", "lru"])
def test_patched_regions_never_crash_a_process(namespace, mode):
    # random bytes written into a live region's items, table, free stack, bitmap and header
    # counters: operations, check and repair go on; the process never dies of a signal
    for seed in range(3):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _fuzz_child(namespace + f"s{seed}", mode, seed)
            except BaseException:  # noqa: BLE001
                import traceback

                traceback.print_exc()
            os._exit(code)
        status = _wait(pid, 120)
        assert not os.WIFSIGNALED(status), f"seed {seed}: the process died of signal {os.WTERMSIG(status)}"
        assert os.WEXITSTATUS(status) == 0, f"seed {seed}: check() still failed after repair()"


def test_fresh_cache_slot_order_and_check(namespace):
    # the free stack is built lazily, in uWSGI's order: the first insert takes the highest slot
    cache = uwcache.open_cache("lazy", **_options(namespace, max_items=10))
    assert cache.check() is None
    for i in range(9):
        cache.set(f"k{i}", b"v")
    with pytest.raises(uwcache.CacheFull):
        cache.set("one-too-many", b"v")
    cache.delete("k3")
    cache.set("again", b"v")
    assert cache.check() is None
    assert len(cache) == 9
    cache.close()


@pytest.mark.parametrize("mode", ["single-block", "bitmap"])
def test_threads_and_processes_increment_to_the_exact_total(namespace, mode):
    # every thread has its own robust-list state; forked children start theirs afresh
    import threading

    extra = dict(mode_bitmap=True, block_size=8, block_count=800) if mode == "bitmap" else {}
    cache = uwcache.open_cache("threads", **_options(namespace, **extra))
    cache.set("n", (0).to_bytes(8, "little"))

    def work():
        for _ in range(2000):
            cache.incr("n")
            cache.set("other", b"x")
            cache.get("n")

    def run_threads():
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            run_threads()
            os._exit(0)
        pids.append(pid)
    run_threads()
    for pid in pids:
        assert os.WEXITSTATUS(_wait(pid, 120)) == 0
    assert int.from_bytes(cache.get("n"), "little") == 3 * 4 * 2000
    assert cache.check() is None
    cache.close()


@pytest.mark.slow
def test_expired_pending_is_exact_when_small_and_sampled_when_large(namespace):
    # stats() counts expired-but-unswept items without the lock: every slot in a cache of up
    # to 65536 items, an even sample of 65536 slots beyond (bounded cost at a million items)
    small = uwcache.open_cache("pend-small", namespace=namespace, max_items=101, block_size=16, key_size=16)
    large = uwcache.open_cache("pend-large", namespace=namespace, max_items=200_001, block_size=16, key_size=16,
                               hash_size=262144)
    # expires=2 (whole seconds from now) and each count read right after its writes: with
    # expires=1 a second boundary crossed on a slow runner counted the small cache's items
    # as already expired
    keys = [f"k{i:06d}" for i in range(150_000)]
    large.set_many({k: b"v" for k in keys[::3]})  # 50,000 that never expire
    large.set_many({k: b"v" for i, k in enumerate(keys) if i % 3}, expires=2)  # 100,000 that do
    assert large.stats()["expired_pending"] == 0
    small.set_many({f"f{i}": b"v" for i in range(20)})
    small.set_many({f"t{i}": b"v" for i in range(30)}, expires=2)
    assert small.stats()["expired_pending"] == 0
    deadline = time.time() + 6
    while small.get("t0") is not None and time.time() < deadline:
        time.sleep(0.1)
    assert small.stats()["expired_pending"] == 30
    estimate = large.stats()["expired_pending"]
    assert 95_000 <= estimate <= 105_000, estimate
    assert large.stats()["items"] == 150_000  # nothing swept: only counted
    small.close()
    large.close()
