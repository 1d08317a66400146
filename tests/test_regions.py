"""How regions are found, created and opened: directory trust with a second Unix user, memory
reserved at creation (SharedMemoryFull in a small tmpfs), generations across deploys, store
paths as identity, damaged header names (issues 9 and 10)."""
import contextlib
import json
import os
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap

import pytest

import uwcache
from uwcache import cache as cache_mod
from second_user import exit_code_as, throwaway_user

# where the uwcache under test is imported from (the installed package in CI, src/ in a checkout)
SRC = os.path.dirname(os.path.dirname(os.path.abspath(uwcache.__file__)))


# --------------------------------------------------------------------------- a second user


@pytest.fixture(scope="module")
def other_user():
    """(uid, gid) of a throw-away Unix user, created with useradd and removed afterwards."""
    yield from throwaway_user("uwcatk")


def as_user(user, action):
    """Run ``action()`` as the other user in a forked child; fail the test if it raised."""
    assert exit_code_as(user, action) == 0


@pytest.fixture
def shared_tmp(monkeypatch):
    """A /dev/shm-like directory (mode 1777) every user can create entries in, as UWCACHE_SHM_DIR."""
    root = tempfile.mkdtemp(prefix="uwcache-trust-")
    os.chmod(root, 0o1777)
    monkeypatch.setenv("UWCACHE_SHM_DIR", root)
    yield root
    subprocess.run(["rm", "-rf", root])


@pytest.fixture
def victim(tmp_path):
    """A root-owned file an attacker would like a root process to overwrite."""
    path = tmp_path / "precious"
    path.write_bytes(b"do not touch")
    return path


def test_namespace_directory_made_by_another_user_is_refused(other_user, shared_tmp, namespace, victim):
    ns_path = os.path.join(shared_tmp, "uwcache-" + namespace)

    def attacker():
        os.mkdir(ns_path, 0o777)
        os.chmod(ns_path, 0o777)
        os.symlink(str(victim), os.path.join(ns_path, "c.cache"))
        os.symlink(str(victim), os.path.join(ns_path, "c.cache.udp-lock"))

    as_user(other_user, attacker)
    with pytest.raises(uwcache.CacheError, match=rf"refusing the namespace directory {ns_path}: .*owned by uwcatk"):
        uwcache.open_cache("c", namespace=namespace, max_items=10, block_size=64)
    with pytest.raises(uwcache.CacheError, match="refusing the namespace directory"):
        uwcache.attach("c", namespace=namespace)
    with pytest.raises(uwcache.CacheError, match="refusing the namespace directory"):
        uwcache.list_caches(namespace)
    assert victim.read_bytes() == b"do not touch"
    assert sorted(os.listdir(ns_path)) == ["c.cache", "c.cache.udp-lock"]  # nothing created in it


def test_namespace_directory_that_is_a_link_is_refused(other_user, shared_tmp, namespace, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    ns_path = os.path.join(shared_tmp, "uwcache-" + namespace)
    as_user(other_user, lambda: os.symlink(str(target), ns_path))
    with pytest.raises(uwcache.CacheError, match=rf"{ns_path}: it is a symbolic link \(owned by uwcatk"):
        uwcache.open_cache("c", namespace=namespace, max_items=10, block_size=64)
    assert os.listdir(target) == []


def test_shm_dir_others_can_write_without_sticky_bit_is_refused(other_user, tmp_path, namespace, monkeypatch):
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    monkeypatch.setenv("UWCACHE_SHM_DIR", str(loose))
    with pytest.raises(uwcache.CacheError, match=rf"shared-memory directory {loose}: other users can write"):
        uwcache.open_cache("c", namespace=namespace, max_items=10, block_size=64)
    os.chmod(loose, 0o755)
    os.chown(loose, other_user[0], other_user[1])
    with pytest.raises(uwcache.CacheError, match=rf"shared-memory directory {loose}: it is owned by uwcatk"):
        uwcache.open_cache("c", namespace=namespace, max_items=10, block_size=64)
    assert os.listdir(loose) == []


def test_our_directory_with_a_loose_mode_is_refused(shared_tmp, namespace):
    ns_path = os.path.join(shared_tmp, "uwcache-" + namespace)
    os.mkdir(ns_path)
    os.chmod(ns_path, 0o755)
    with pytest.raises(uwcache.CacheError, match=rf"{ns_path}: its mode is 0755, not 0700"):
        uwcache.open_cache("c", namespace=namespace, max_items=10, block_size=64)
    os.chmod(ns_path, 0o700)
    uwcache.open_cache("c", namespace=namespace, max_items=10, block_size=64).close()


def test_a_new_namespace_directory_is_ours_and_0700(shared_tmp, namespace):
    c = uwcache.open_cache("c", namespace=namespace, max_items=10, block_size=64)
    st = os.lstat(os.path.join(shared_tmp, "uwcache-" + namespace))
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o700
    for entry in os.listdir(os.path.dirname(c.path)):
        est = os.lstat(os.path.join(os.path.dirname(c.path), entry))
        assert stat.S_ISREG(est.st_mode) and stat.S_IMODE(est.st_mode) == 0o600, entry
    c.close()


def test_a_link_in_our_directory_is_refused_not_followed(namespace, victim):
    first = uwcache.open_cache("c", namespace=namespace, max_items=10, block_size=64)
    ns_dir = os.path.dirname(first.path)
    region = first.path
    first.close()
    os.unlink(region)
    os.symlink(str(victim), region)  # the region's name now points at a file of ours elsewhere
    with pytest.raises(uwcache.CacheError, match="is a symbolic link.*never follows links"):
        uwcache.open_cache("c", namespace=namespace, max_items=10, block_size=64)
    os.unlink(region)
    entry = os.path.join(ns_dir, "c.cache")
    os.unlink(entry)
    os.symlink(str(victim), entry)  # the name entry too (older uwcache versions made links)
    with pytest.raises(uwcache.UnknownCache):  # a link entry is never followed
        uwcache.attach("c", namespace=namespace)
    again = uwcache.open_cache("c", namespace=namespace, max_items=10, block_size=64)
    assert not os.path.islink(entry)  # replaced by a regular entry, the link's target untouched
    again.close()
    assert victim.read_bytes() == b"do not touch"


def test_a_region_file_owned_by_another_user_is_refused(other_user, namespace):
    c = uwcache.open_cache("c", namespace=namespace, max_items=10, block_size=64)
    c.set("k", b"v")
    path = c.path
    c.close()
    os.chown(path, other_user[0], other_user[1])  # as if the attacker had swapped in its own region
    with pytest.raises(uwcache.CacheError, match=rf"refusing the region {path}: it is owned by uwcatk"):
        uwcache.open_cache("c", namespace=namespace, max_items=10, block_size=64)
    with pytest.raises(uwcache.CacheError, match="owned by uwcatk"):
        uwcache.attach("c", namespace=namespace)


def test_udp_lock_file_link_is_refused(namespace, victim):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    caching = uwcache.Caching(namespace).add_cache("u", max_items=10, block_size=64,
                                                   udp_servers=f"127.0.0.1:{port}")
    lock = cache_mod.region_path("u", namespace) + ".udp-lock"
    os.makedirs(os.path.dirname(lock), mode=0o700, exist_ok=True)
    os.symlink(str(victim), lock)
    with pytest.raises(uwcache.CacheError, match="UDP receiver lock file.*symbolic link"):
        caching.start(sweeper=False)
    assert victim.read_bytes() == b"do not touch"


def test_store_in_a_directory_others_can_write_is_refused(other_user, shared_tmp, namespace):
    import pathlib

    open_dir = pathlib.Path(shared_tmp) / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)  # not sticky: anyone could replace the store
    with pytest.raises(uwcache.CacheError, match=r"other users can write to it \(mode 0777, not sticky\)"):
        uwcache.open_cache("s", namespace=namespace, max_items=10, block_size=64, store=str(open_dir / "s.store"))
    assert os.listdir(open_dir) == []
    # sticky like /tmp: allowed, but a store file the other user planted there is refused
    os.chmod(open_dir, 0o1777)
    planted = str(open_dir / "p.store")
    as_user(other_user, lambda: open(planted, "wb").close())
    with pytest.raises(uwcache.CacheError, match="refusing the store file .*owned by uwcatk"):
        uwcache.open_cache("p", namespace=namespace, max_items=10, block_size=64, store=planted)
    mine = uwcache.open_cache("s", namespace=namespace, max_items=10, block_size=64, store=str(open_dir / "s.store"))
    mine.close()


def test_store_link_is_refused(tmp_path, namespace, victim):
    link = tmp_path / "s.store"
    os.symlink(str(victim), link)
    with pytest.raises(uwcache.CacheError, match="store file .* is a symbolic link"):
        uwcache.open_cache("s", namespace=namespace, max_items=10, block_size=64, store=str(link))
    assert victim.read_bytes() == b"do not touch"


def test_persistent_entry_is_a_regular_file_naming_the_store(tmp_path, namespace):
    store = tmp_path / "p.store"
    c = uwcache.open_cache("p", namespace=namespace, max_items=10, block_size=64, store=str(store))
    c.set("k", b"v")
    c.close()
    entry = cache_mod.region_path("p", namespace)
    assert not os.path.islink(entry) and stat.S_ISREG(os.lstat(entry).st_mode)
    with open(entry) as f:
        assert f.read() == f"store {store}\n"
    again = uwcache.attach("p", namespace=namespace)
    assert again.get("k") == b"v" and again.options.store == str(store)
    again.close()


# --------------------------------------------------------------------------- memory reserved


def test_space_arithmetic_names_size_directory_free_space_and_fixes():
    assert cache_mod._space_problem("c", 100, "/dev/shm", 100) is None
    message = cache_mod._space_problem("c", 67_960_832, "/dev/shm", 64 * 1024 * 1024)
    assert "67960832 bytes" in message and "/dev/shm" in message and "67108864 bytes" in message
    for fix in ("docker run --shm-size", "UWCACHE_SHM_DIR", "smaller"):
        assert fix in message


def test_statvfs_too_small_raises_before_touching_anything(namespace, monkeypatch):
    real = os.fstatvfs

    class Tiny:
        def __init__(self, st):
            self.f_frsize, self.f_bavail = st.f_frsize, 1

    monkeypatch.setattr(os, "fstatvfs", lambda fd: Tiny(real(fd)))
    with pytest.raises(uwcache.SharedMemoryFull, match=r"cache 'big' needs .* bytes\) of memory, but .* free"):
        uwcache.open_cache("big", namespace=namespace, max_items=100, block_size=65536)
    assert issubclass(uwcache.SharedMemoryFull, uwcache.CacheError)
    assert uwcache.cache.generations("big", namespace) == []  # no half-made region left


def test_region_is_fully_allocated_at_creation(namespace):
    c = uwcache.open_cache("full", namespace=namespace, max_items=50, block_size=65536)
    st = os.stat(c.path)
    assert st.st_blocks * 512 >= st.st_size == c.region_size  # not sparse: committed now
    c.close()


_SMALL_TMPFS_SCRIPT = textwrap.dedent("""
    import uwcache
    big = dict(max_items=80, block_size=65536)           # about 5.2 MiB each in an 8 MiB tmpfs
    try:
        uwcache.open_cache("huge", namespace="m", max_items=200, block_size=65536)
        print("huge: created")
    except uwcache.SharedMemoryFull as exc:
        print("huge: SharedMemoryFull:", exc)
    first = uwcache.open_cache("first", namespace="m", **big)
    for i in range(1, first.capacity + 1):              # touch every block: no SIGBUS
        first.set(f"k{i}", b"x" * 60000)
    try:
        uwcache.open_cache("second", namespace="m", **big)
        print("second: created")
    except uwcache.SharedMemoryFull as exc:
        print("second: SharedMemoryFull:", exc)
    for i in range(1, first.capacity + 1):
        first.set(f"k{i}", b"y" * 60000)
    assert all(first.get(f"k{i}") == b"y" * 60000 for i in range(1, first.capacity + 1))
    print("first: still works", len(first))
""")


@pytest.mark.slow
def test_small_tmpfs_refuses_what_does_not_fit_and_keeps_the_rest(tmp_path):
    mount_point = tmp_path / "small-shm"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        # the arithmetic is still checked by the statvfs tests above; say why this one cannot run
        print(f"mount of a tmpfs refused ({done.stderr.strip()}): checking the statvfs arithmetic only")
        assert cache_mod._space_problem("x", 9 << 20, str(mount_point), 8 << 20) is not None
        return
    try:
        env = dict(os.environ, UWCACHE_SHM_DIR=str(mount_point), PYTHONPATH=SRC)
        run = subprocess.run([sys.executable, "-c", _SMALL_TMPFS_SCRIPT], env=env, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, run.stderr  # -7 would be the SIGBUS of old
        out = run.stdout
        assert "huge: SharedMemoryFull: cache 'huge' needs" in out and str(mount_point) in out
        assert "second: SharedMemoryFull" in out and "docker run --shm-size" in out
        assert "first: still works 79" in out
        ns_dir = mount_point / "uwcache-m"
        assert sorted(f.split("@")[0] for f in os.listdir(ns_dir) if f.endswith(".region")) == ["first"]
        # `uwcache run` exits non-zero with the message
        cli = subprocess.run([sys.executable, "-m", "uwcache", "run", "--namespace", "r", "--cache2",
                              "name=big,items=300,blocksize=65536"], env=env, capture_output=True, text=True,
                             timeout=60)
        assert cli.returncode != 0
        assert "needs" in cli.stderr and "docker run --shm-size" in cli.stderr and "Traceback" not in cli.stderr
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True)


# --------------------------------------------------------------------------- generations


_OLD_PROCESS = textwrap.dedent("""
    import sys, uwcache
    c = uwcache.open_cache("gen", namespace=sys.argv[1], max_items=20, block_size=64)
    print(c.path, flush=True)
    for line in sys.stdin:
        if line.strip() == "exit":
            break
        c.set("k", line.strip())
        print(c.get("k").decode(), flush=True)
    c.close()
""")


@pytest.mark.slow
def test_deploy_with_other_options_overlaps_without_errors(namespace):
    env = dict(os.environ, PYTHONPATH=SRC)
    old = subprocess.Popen([sys.executable, "-c", _OLD_PROCESS, namespace], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, env=env)
    try:
        old_path = old.stdout.readline().strip()
        new = uwcache.open_cache("gen", namespace=namespace, max_items=40, block_size=128)
        assert new.path != old_path
        for i in range(20):  # both sides read and write, no error on either
            new.set("k", f"new{i}")
            old.stdin.write(f"old{i}\n")
            old.stdin.flush()
            assert old.stdout.readline().strip() == f"old{i}"
            assert new.get("k") == f"new{i}".encode()
        listed = uwcache.cache.generations("gen", namespace)
        assert [(g["path"], g["current"], g["in_use"]) for g in listed] == [(new.path, True, True),
                                                                           (old_path, False, True)]
        # `uwcache stats` shows both generations while they overlap
        stats = subprocess.run([sys.executable, "-m", "uwcache", "stats", "--namespace", namespace],
                               capture_output=True, text=True, env=env, timeout=60)
        assert stats.returncode == 0, stats.stderr
        assert "gen (old generation)" in stats.stdout and stats.stdout.count("gen") >= 2
        assert uwcache.attach("gen", namespace=namespace).max_items == 40  # attach: the newest
        old.stdin.write("exit\n")
        old.stdin.flush()
        assert old.wait(30) == 0
        assert not os.path.exists(old_path)  # its last user left: memory freed, no rm needed
        assert new.get("k") == b"new19"
        new.close()
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()


def test_stats_lists_an_old_generation_of_another_release(namespace):
    """An upgrade of uwcache that changes the region format starts a new generation; while
    processes of the old release still use theirs, `uwcache stats` names it (its format, size
    and path) instead of leaving it out, although it cannot read its counters."""
    env = dict(os.environ, PYTHONPATH=SRC)
    old = uwcache.open_cache("gen", namespace=namespace, max_items=20, block_size=64)
    old_path = old.path
    older = uwcache._engine.FORMAT_VERSION - 1
    with open(old_path, "r+b") as f:  # what the previous release would have written
        f.seek(8)
        f.write(struct.pack("=I", older))
    new = uwcache.open_cache("gen", namespace=namespace, max_items=40, block_size=128)
    try:
        assert uwcache.cache.region_format(old_path) == older
        assert uwcache.cache.region_format(new.path) == uwcache._engine.FORMAT_VERSION
        text = subprocess.run([sys.executable, "-m", "uwcache", "stats", "--namespace", namespace],
                              capture_output=True, text=True, env=env, timeout=60)
        assert text.returncode == 0, text.stderr
        assert f"gen (old generation): made by another uwcache release (region format {older};" in text.stdout
        assert old_path in text.stdout and "1 cache" in text.stdout
        as_json = subprocess.run([sys.executable, "-m", "uwcache", "stats", "--namespace", namespace, "--json"],
                                 capture_output=True, text=True, env=env, timeout=60)
        caches = json.loads(as_json.stdout)["caches"]
        assert [c["path"] for c in caches] == [new.path, old_path]
        assert caches[1] == {"name": "gen", "generation": "old", "readable": False, "format": older,
                             "path": old_path, "memory": os.stat(old_path).st_size}
    finally:
        new.close()
        old.close()
    assert not os.path.exists(old_path)  # its last user left: freed as any old generation


def test_killed_old_generation_is_freed_by_the_next_open(namespace):
    env = dict(os.environ, PYTHONPATH=SRC)
    old = subprocess.Popen([sys.executable, "-c", _OLD_PROCESS, namespace], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, env=env)
    old_path = old.stdout.readline().strip()
    new = uwcache.open_cache("gen", namespace=namespace, max_items=40, block_size=128)
    old.kill()
    old.wait()
    assert os.path.exists(old_path)  # nobody closed it
    uwcache.open_cache("gen", namespace=namespace, max_items=40, block_size=128).close()
    assert not os.path.exists(old_path)
    new.close()


# --------------------------------------------------------------------------- store identity


def test_relative_store_path_is_absolute_and_another_store_is_a_mismatch(tmp_path, namespace, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    opts = uwcache.CacheOptions(name="s", max_items=10, block_size=64, store="data.store")
    assert opts.store == str(tmp_path / "a" / "data.store")
    first = uwcache.open_cache("s", namespace=namespace, max_items=10, block_size=64, store="data.store")
    first.set("k", b"kept")
    first.close()
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(uwcache.RegionMismatch) as info:
        uwcache.open_cache("s", namespace=namespace, max_items=10, block_size=64, store="data.store")
    assert str(tmp_path / "a" / "data.store") in str(info.value)
    assert str(tmp_path / "b" / "data.store") in str(info.value)
    assert not (tmp_path / "b" / "data.store").exists()  # no second store made
    assert uwcache.attach("s", namespace=namespace).get("k") == b"kept"


# --------------------------------------------------------------------------- damaged header


def _damage_name(path, name):
    with open(path, "r+b") as f:
        head = f.read(4096)
        at = head.index(name.encode() + b"\0")
        f.seek(at)
        f.write(b"\xff")


def test_bad_byte_in_header_name_is_corrupt_store(namespace, tmp_path):
    c = uwcache.open_cache("named", namespace=namespace, max_items=10, block_size=64)
    path = c.path
    c.close()
    _damage_name(path, "named")
    with pytest.raises(uwcache.CorruptStore):
        uwcache.attach("named", namespace=namespace)
    holder = uwcache.open_cache("held", namespace=namespace, max_items=10, block_size=64)
    _damage_name(holder.path, "held")
    with pytest.raises(uwcache.CorruptStore, match="not valid UTF-8"):  # in use: not recreated under its users
        uwcache.open_cache("held", namespace=namespace, max_items=10, block_size=64)
    holder.close()
    env = dict(os.environ, PYTHONPATH=SRC)
    stats = subprocess.run([sys.executable, "-m", "uwcache", "stats", "--namespace", namespace, "named"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert stats.returncode != 0 and "Traceback" not in stats.stderr and "not valid UTF-8" in stats.stderr
    store = tmp_path / "n.store"
    s = uwcache.open_cache("named2", namespace=namespace, max_items=10, block_size=64, store=str(store))
    s.close()
    _damage_name(str(store), "named2")
    with pytest.raises(uwcache.CorruptStore):
        uwcache.open_cache("named2", namespace=namespace, max_items=10, block_size=64, store=str(store))


# --------------------------------------------------------------------------- truncated regions


_TRUNCATED_CHILD = textwrap.dedent("""
    import logging, sys, time, uwcache
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    caching = uwcache.Caching(sys.argv[1]).set_basic_params(expire_scan_interval=1)
    caching.add_cache("t", max_items=100, block_size=4096).add_cache("w", max_items=100, block_size=4096)
    with caching.start() as node:
        t, w = node.cache("t"), node.cache("w")
        for i in range(1, 50):
            t.set(f"k{i}", b"v" * 3000)
        w.set("a", b"1")
        print(t.path, w.path, flush=True)
        sys.stdin.readline()                     # the parent truncates t, and wipes w
        t.get("k40")                             # touches a page past the new end: SIGBUS of old
        try:
            t.get("k1")
            print("t: no error")
        except uwcache.CorruptStore as exc:
            print("t: CorruptStore:", exc)
        try:
            for i in range(200):
                w.set(f"x{i}", b"z")
            print("w: no error")
        except uwcache.CacheError as exc:
            print("w:", type(exc).__name__, exc)
        time.sleep(2.5)                          # the sweeper meets the broken cache and logs it
        print("alive", flush=True)
""")


@pytest.mark.slow
def test_truncated_region_does_not_kill_attached_processes(namespace):
    env = dict(os.environ, PYTHONPATH=SRC)
    child = subprocess.Popen([sys.executable, "-c", _TRUNCATED_CHILD, namespace], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        t_path, w_path = child.stdout.readline().split()
        os.truncate(t_path, 0)                   # another process truncates a live region
        size = os.stat(w_path).st_size
        os.truncate(w_path, 0)                   # ... and truncates and re-extends another
        os.truncate(w_path, size)
        child.stdin.write("go\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, (child.returncode, err)  # -7 (SIGBUS) on the old code
    assert "t: CorruptStore: the region of cache 't' was truncated by another process" in out
    assert "w: CorruptStore" in out and "wiped" in out      # not a misleading "cache is full"
    assert "alive" in out
    assert "cache 't' is unusable in this node" in err
    assert "cache 'w' is unusable in this node" in err and "wiped" in err


def test_threads_opening_a_new_cache_at_once_create_it_once(namespace, monkeypatch):
    import threading
    import time

    real_ftruncate = os.ftruncate

    def slow_ftruncate(fd, size):  # widen the window between "the file is empty" and "created"
        time.sleep(0.05)
        real_ftruncate(fd, size)

    monkeypatch.setattr(os, "ftruncate", slow_ftruncate)
    barrier = threading.Barrier(8)
    opened = []

    def opener(i):
        barrier.wait()
        time.sleep(0.03 * i)  # staggered: each starts while the one before is still creating
        c = uwcache.open_cache("race", namespace=namespace, max_items=64, block_size=64)
        c.set(f"k{i}", f"v{i}")
        opened.append(c)

    threads = [threading.Thread(target=opener, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # a second "create" by another thread would have wiped the items set before it
    assert sorted(opened[0].keys()) == sorted(f"k{i}".encode() for i in range(8))
    for c in opened:
        c.close()
