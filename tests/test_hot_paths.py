"""Issue 16, second round: the short paths of Cache.set/Cache.get (bytes arguments, no
keywords) behave exactly like the general ones, and large memory-only regions are mapped
2 MiB-aligned and, where the kernel agrees, on 2 MiB pages (fewer TLB misses per get)."""
import os
import re
import subprocess
import sys

import pytest

import uwcache
from uwcache import _engine
from uwcache import cache as uc
from uwcache.errors import CacheClosed, KeyTooLong, ValueTooLarge


@pytest.fixture
def small(namespace):
    c = uwcache.open_cache("hot", namespace=namespace, max_items=16, block_size=64, key_size=16)
    yield c
    c.close()


class Key(bytes):
    pass


def test_set_and_get_with_bytes_and_with_other_types_agree(small):
    small.set(b"k", b"v1")
    assert small.get(b"k") == b"v1"
    small.set(b"k", b"v2")  # overwrite: the engine's fast overwrite
    assert small.get(b"k") == b"v2" and len(small) == 1
    # not plain bytes: the general path, same cache entry
    small.set("k", bytearray(b"v3"))
    assert small.get(Key(b"k")) == b"v3" and small.get("k") == b"v3"
    small.set(Key(b"k"), memoryview(b"v4"))
    assert small.get(b"k") == b"v4"
    assert small.get(b"absent") is None
    assert small.get(b"absent", b"dflt") == b"dflt" and small.get(b"absent", default=7) == 7
    small.set("ascii", b"s1")  # an ASCII str key is its bytes, on the short path too
    assert small.get(b"ascii") == b"s1" and small.get("ascii") == b"s1"
    small.set("ключ", b"s2")  # not ASCII: the general path encodes it as UTF-8
    assert small.get("ключ".encode()) == b"s2" and small.get("ключ") == b"s2"
    small.set(b"e", b"x", 1)  # positional expires takes the general path
    assert small.ttl(b"e") in (0, 1)
    small.set(key=b"kw", value=b"y")
    assert small.get(key=b"kw") == b"y"


def test_bad_arguments_raise_the_same_typed_errors(small):
    with pytest.raises(KeyTooLong):
        small.set(b"k" * 17, b"v")
    with pytest.raises(ValueTooLarge):
        small.set(b"k", b"v" * 65)
    with pytest.raises(KeyTooLong):
        small.get(b"k" * 17)
    with pytest.raises(TypeError, match="key must be bytes or str"):
        small.set(17, b"v")
    with pytest.raises(TypeError, match="value must be bytes or str"):
        small.set(b"k", 17)
    with pytest.raises(TypeError):
        small.set(b"k")
    with pytest.raises(TypeError):
        small.set(b"k", b"v", 0, 1)
    with pytest.raises(ValueError):  # empty key and empty value are refused as before
        small.set(b"", b"v")
    with pytest.raises(ValueError):
        small.set(b"k", b"")


def test_bytes_set_fires_the_write_hook_with_the_stored_expiry(small):
    seen = []
    small._on_write = lambda *a: seen.append(a)
    try:
        small.set(b"a", b"1")  # create
        small.set(b"a", b"2")  # overwrite (fast engine path)
    finally:
        small._on_write = None
    assert [(op, k, v, ex) for op, k, v, ex in seen] == [(1, b"a", b"1", 0), (1, b"a", b"2", 0)]


def test_bytes_calls_on_a_closed_cache_raise_cache_closed(namespace):
    c = uwcache.open_cache("closing", namespace=namespace, max_items=4, block_size=16, key_size=8)
    c.set(b"a", b"1")
    c.close()
    with pytest.raises(CacheClosed):
        c.set(b"a", b"2")
    with pytest.raises(CacheClosed):
        c.get(b"a")


# ---- 2 MiB pages for large regions ---------------------------------------------------------

def _mappings(path):
    """(start, end, ShmemPmdMapped kB) of this process's mappings of path."""
    out, cur = [], None
    with open("/proc/self/smaps") as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$", line)
            if m:
                cur = [int(m.group(1), 16), int(m.group(2), 16), 0] if m.group(3).strip() == path else None
                if cur:
                    out.append(cur)
            elif cur is not None and line.startswith("ShmemPmdMapped:"):
                cur[2] = int(line.split()[1])
    return [tuple(x) for x in out]


def test_a_small_region_is_mapped_plainly(small):
    assert small.region_size < uc.HUGE_MIN_REGION
    assert not isinstance(small._map, uc._HugeRegion)


def test_a_large_region_is_mapped_aligned_on_huge_pages_and_shared(namespace):
    c = uwcache.open_cache("large", namespace=namespace, max_items=60000, block_size=128, key_size=32)
    try:
        assert c.region_size >= uc.HUGE_MIN_REGION
        assert isinstance(c._map, uc._HugeRegion)
        maps = _mappings(c.path)
        assert len(maps) == 1 and maps[0][0] % uc.HUGE_PAGE == 0
        assert maps[0][1] - maps[0][0] >= c.region_size
        for i in range(0, 60000, 7):
            c.set(b"k%d" % i, b"v%d" % i)
        assert c.get(b"k7") == b"v7" and c.get(b"k59997") == b"v59997"
        whole_kib = c.region_size // uc.HUGE_PAGE * 2048  # every full 2 MiB of the region
        if c._map.collapsed:
            assert _mappings(c.path)[0][2] >= whole_kib  # ShmemPmdMapped: the whole region
        else:
            print("the kernel refused MADV_COLLAPSE here: the region stays on 4 KiB pages")
        # another process attaches: aligned mapping, same data, writes seen here
        code = (
            "import uwcache, re\n"
            f"c = uwcache.attach('large', namespace={namespace!r})\n"
            "from uwcache import cache as uc\n"
            "assert isinstance(c._map, uc._HugeRegion)\n"
            "assert c.get(b'k7') == b'v7'\n"
            "c.set(b'k7', b'child')\n"
            "start = [int(l.split('-')[0], 16) for l in open('/proc/self/smaps') if l.rstrip().endswith(c.path)][0]\n"
            "assert start % uc.HUGE_PAGE == 0, hex(start)\n"
            # an attacher of a collapsed region maps it 2 MiB at a time too, not only its creator
            "import test_hot_paths\n"
            f"assert not {bool(c._map.collapsed)} or test_hot_paths._mappings(c.path)[0][2] >= {whole_kib}\n"
            "c.close()\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=os.path.dirname(os.path.abspath(__file__)))
        assert c.get(b"k7") == b"child"
        c.flush()  # msync of the mapped part only: no error
    finally:
        path = c.path
        c.close()
    assert _mappings(path) == []  # close unmaps it


def test_a_refused_aligned_mapping_falls_back_to_a_plain_one(namespace, monkeypatch):
    def refuse(*args):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(_engine, "map_huge", refuse)
    c = uwcache.open_cache("fallback", namespace=namespace, max_items=60000, block_size=128, key_size=32)
    try:
        assert not isinstance(c._map, uc._HugeRegion)
        c.set(b"a", b"1")
        assert c.get(b"a") == b"1"
    finally:
        c.close()


def test_map_huge_checks_its_reservation(tmp_path):
    import mmap

    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        os.ftruncate(fd, 1 << 20)
        res = mmap.mmap(-1, 1 << 19, flags=mmap.MAP_PRIVATE)  # smaller than the file's part
        with pytest.raises(ValueError, match="size \\+ 2 MiB"):
            _engine.map_huge(res, fd, 1 << 20)
        res.close()
    finally:
        os.close(fd)


# ---- key comparison (inlined for keys of up to 64 bytes) ---------------------------------

def _djb33x_state(data, h=5381):
    for c in data:
        h = ((h * 33) & 0xFFFFFFFF) ^ (c if c < 128 else c | 0xFFFFFF00)
    return h


def _colliding_pair(prefix):
    """Two different 2-byte strings that leave djb33x in the same state after prefix."""
    x = _djb33x_state(prefix)
    seen = {}
    for a in range(33, 127):
        for b in range(33, 127):
            h = _djb33x_state(bytes((a, b)), x)
            if h in seen:
                return seen[h], bytes((a, b))
            seen[h] = bytes((a, b))
    raise AssertionError("no collision found")


def test_keys_with_the_same_hash_and_length_are_told_apart_at_every_length_and_position(namespace):
    c = uwcache.open_cache("collide", namespace=namespace, max_items=2048, block_size=16, key_size=80,
                           hash_size=64)
    try:
        pairs = []
        for n in list(range(2, 72)) + [80]:
            for pos in sorted({0, (n - 2) // 2, n - 2}):
                prefix = bytes(b"p%d" % n)[:pos].ljust(pos, b"x")
                s1, s2 = _colliding_pair(prefix)
                tail = b"t" * (n - 2 - pos)
                k1, k2 = prefix + s1 + tail, prefix + s2 + tail
                assert len(k1) == len(k2) == n and k1 != k2
                assert _engine.hash(k1) == _engine.hash(k2)
                pairs.append((k1, k2))
        for i, (k1, k2) in enumerate(pairs):
            c.set(k1, b"one%d" % i)
            assert c.get(k2) is None and k2 not in c, (k1, k2)
            c.set(k2, b"two%d" % i)  # a second item, not an overwrite of the first
            assert c.get(k1) == b"one%d" % i and c.get(k2) == b"two%d" % i
        assert len(c) == 2 * len(pairs)
        for i, (k1, k2) in enumerate(pairs):
            assert c.delete(k1) and c.get(k1) is None and c.get(k2) == b"two%d" % i
    finally:
        c.close()


def test_values_read_are_ordinary_bytes_objects(small):
    """get and get_many build their bytes objects themselves (issue 12.4): each must be a
    bytes like any other: its own object, one reference, hashable, NUL-terminated (int()
    parses up to the NUL), freed normally, and traced by tracemalloc from the line that read it."""
    import gc
    import tracemalloc

    small.set(b"k", b"\x00value\xff")
    small.set(b"one", b"1")
    for read in (lambda k: small.get(k), lambda k: small.get_many([k])[k]):
        v = read(b"k")
        assert type(v) is bytes and v == b"\x00value\xff" and len(v) == 7
        assert sys.getrefcount(v) <= 2  # ours and getrefcount's argument (3.14: borrowed locals)
        assert hash(v) == hash(b"\x00value\xff") and {v: 1}[b"\x00value\xff"] == 1
        assert v is not read(b"k")  # a new object each read
        assert bytes(memoryview(v)) == v and v.decode("latin-1").encode("latin-1") == v
        w = read(b"one")
        assert w == b"1" and w + b"" == b"1" and int(w) == 1  # int() reads it as a C string
        started = not tracemalloc.is_tracing()  # the suite may run under -X tracemalloc
        if started:
            tracemalloc.start()
        try:
            traced = read(b"k")
            tb = tracemalloc.get_object_traceback(traced)
            assert tb is not None and tb[0].filename == __file__
        finally:
            if started:
                tracemalloc.stop()
        del v, w, traced
        gc.collect()
        before = sys.getallocatedblocks()  # freed normally: reading many leaves nothing behind
        for _ in range(2000):
            read(b"k")
        assert sys.getallocatedblocks() - before < 100
