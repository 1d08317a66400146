"""The C binding's own surface (issue 14, points 1, 6, 7, 8): signatures, the status -> error
table, the stats table, the one-step construction with an int open mode, the unreplicated writes."""
import inspect
import mmap

import pytest

import uwcache
from uwcache import _engine
from uwcache.errors import CacheFull, EmptyValue, KeyTooLong, NotAnInteger, ValueTooLarge

SIGNATURES = {
    "get": "(key, default=None)",
    "set": "(key, value, expires=0)",
    "add": "(key, value, expires=0)",
    "delete": "(key, /)",
    "keys": "()",
    "clear": "()",
    "incr": "(key, n=1, expires=0)",
    "decr": "(key, n=1, expires=0)",
    "mul": "(key, n=1, expires=0)",
    "div": "(key, n=1, expires=0)",
    "get_int": "(key, default=None)",
    "ttl": "(key, /)",
    "get_many": "(keys, /)",
    "set_many": "(mapping, expires=0)",
    "delete_many": "(keys, /)",
    "touch": "(key, expires)",
}


@pytest.fixture
def cache(namespace):
    c = uwcache.open_cache("binding", namespace=namespace, max_items=4, block_size=16, key_size=8, hash_size=8)
    yield c
    c.close()


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_every_c_method_has_a_signature(name, cache):
    unbound = inspect.signature(getattr(uwcache.Cache, name))
    assert list(unbound.parameters)[0] == "self"
    bound = inspect.signature(getattr(cache, name))
    assert str(bound) == SIGNATURES[name]
    assert getattr(uwcache.Cache, name).__doc__.strip(), name


def test_every_public_method_of_cache_has_a_signature():
    for name, member in inspect.getmembers(uwcache.Cache):
        if name.startswith("_") or not callable(member):
            continue
        inspect.signature(member)  # raised ValueError for the C methods before


def test_keyword_arguments_match_the_signature(cache):
    cache.set(key=b"k", value=b"v", expires=0)
    assert cache.get(key=b"k", default=None) == b"v"
    assert cache.incr(key=b"n", n=3, expires=0) == 3
    assert cache.touch(key=b"k", expires=5) is True


def test_status_table_messages_name_the_limit_and_the_option(cache):
    with pytest.raises(KeyTooLong, match=r"key of 9 bytes is longer than the 8 bytes allowed by key_size of cache 'binding'"):
        cache.set(b"x" * 9, b"v")
    with pytest.raises(EmptyValue, match="keys must not be empty"):
        cache.set(b"", b"v")
    with pytest.raises(EmptyValue, match="values must not be empty"):
        cache.set(b"k", b"")
    with pytest.raises(ValueTooLarge, match=r"value of 17 bytes is larger than the 16 bytes one item can hold in cache "
                                            r"'binding' \(block_size; or use mode_bitmap"):
        cache.set(b"k", b"x" * 17)
    for i in range(3):
        cache.set(b"k%d" % i, b"v")
    with pytest.raises(CacheFull, match=r"cache 'binding' is full: all 3 items are in use \(max_items=4, one slot is "
                                        r"reserved\); raise max_items or enable full_purge_lru"):
        cache.set(b"k9", b"v")
    with pytest.raises(NotAnInteger, match="the value stored in cache 'binding' is not an 8-byte integer"):
        cache.incr(b"k0")


def test_status_table_bitmap_variants(namespace):
    c = uwcache.open_cache("bm", namespace=namespace, max_items=4, block_size=16, block_count=4, key_size=8,
                           hash_size=8, mode_bitmap=True)
    try:
        with pytest.raises(ValueTooLarge, match=r"larger than the 64 bytes .* \(block_size=16 \* block_count=4\)"):
            c.set(b"k", b"x" * 65)
        c.set(b"a", b"x" * 48)
        with pytest.raises(CacheFull, match=r"no run of 2 free blocks of 16 bytes for a 32-byte value \(block_count=4\)"):
            c.set(b"b", b"x" * 32)
    finally:
        c.close()


def test_stats_table_has_every_counter(cache):
    cache.set(b"k", b"v")
    cache.get(b"k")
    cache.get(b"missing")
    st = cache._stats_raw()
    assert list(st) == ["items", "hits", "miss", "full", "last_modified_at", "evictions", "expired_freed", "repairs",
                        "writes", "next_scan", "blocks_used", "bytes_used", "expired_pending", "largest_free_run",
                        "odd_stripes", "stripe_takeovers", "sweeper_pid", "sweeper_lease_until"]
    assert (st["items"], st["hits"], st["miss"], st["writes"]) == (1, 1, 1, 1)
    assert all(isinstance(v, int) for v in st.values())


def test_open_modes_are_int_constants(namespace):
    assert {_engine.MODE_CREATE, _engine.MODE_ATTACH, _engine.MODE_RECOVER} == {0, 1, 2}
    params = (4, 8, 16, 4, 8, _engine.HASH_DJB33X, 0, 0, 0)
    region = mmap.mmap(-1, _engine.region_size(params))
    calls = []
    base = _engine.CacheBase(region, "anon", params, _engine.MODE_CREATE, on_full=lambda *a: calls.append(a))
    assert base._on_full is not None
    base.set(b"k", b"v")
    joined = _engine.CacheBase(region, "anon", params, _engine.MODE_ATTACH)
    assert joined.get(b"k") == b"v" and joined._on_full is None
    with pytest.raises(TypeError):
        _engine.CacheBase(region, "anon", params, "attach")  # the old string modes are gone
    with pytest.raises(ValueError, match="MODE_CREATE, MODE_ATTACH or MODE_RECOVER"):
        _engine.CacheBase(region, "anon", params, 7)
    joined.close()
    base.close()


def test_open_cache_builds_the_cache_in_one_step(cache, namespace):
    assert cache.options.name == "binding" and cache.namespace == namespace
    assert cache.path.endswith(".region") and cache._fd >= 0 and cache._map is not None
    assert cache._on_full is not None  # the full warning is installed by the constructor


def test_unreplicated_writes_do_not_fire_the_write_hook(cache):
    seen = []
    cache._on_write = lambda *a: seen.append(a)
    assert cache._set_unreplicated(b"a", b"1", 0) is True
    assert cache._add_unreplicated(b"a", b"2") is False  # present: kept
    assert cache._add_unreplicated(b"b", b"2") is True
    assert cache.get(b"a") == b"1" and cache.ttl(b"a") is None
    assert cache._set_unreplicated(b"c", b"3", 1) is True  # an absolute time in the past: stored expired
    assert cache.get(b"c") is None
    assert cache._delete_unreplicated(b"a") is True and cache._delete_unreplicated(b"a") is False
    assert seen == []
    cache.set(b"d", b"4")
    assert len(seen) == 1
    cache._on_write = None


# --------------------------------------------------------------------------- region geometry (point 1)

def _params(max_items=2, key_size=1, block_size=1, blocks=None, hash_size=1, options=0):
    return (max_items, key_size, block_size, max_items if blocks is None else blocks, hash_size,
            _engine.HASH_DJB33X, options, 0, 0)


@pytest.mark.parametrize("field, ok, refused, message", [
    ("max_items", 2**32, 2**32 + 1, "max_items must be at most 2\\*\\*32"),
    ("max_items", 2, 1, "max_items must be at least 2"),
    ("key_size", 65535, 65536, "key_size must be 1..65535"),
    ("key_size", 1, 0, "key_size must be 1..65535"),
    ("block_size", 2**40, 2**40 + 1, "block_size must be 1..2\\*\\*40"),
    ("block_size", 1, 0, "block_size must be 1..2\\*\\*40"),
    ("blocks", 2**40, 2**40 + 1, "blocks must be at most 2\\*\\*40"),
    ("blocks", 2, 1, "blocks must be at least max_items"),
    ("hash_size", 2**32 - 1, 2**32, "hash_size must be 1..2\\*\\*32-1"),
    ("hash_size", 1, 0, "hash_size must be 1..2\\*\\*32-1"),
])
def test_engine_limits_at_their_boundaries(field, ok, refused, message):
    low, high = _engine.LIMITS[field]
    assert ok in (low, high) and refused in (low - 1, high + 1)
    base = {"max_items": 2}
    if field == "max_items":
        base = {"max_items": ok, "blocks": ok}
    size = _engine.region_size(_params(**dict(base, **{field: ok})))
    assert size == sum(_engine.region_layout(_params(**dict(base, **{field: ok}))).values())
    bad = dict(base, **{field: refused})
    if field == "max_items":
        bad["blocks"] = max(refused, 2)
    for check in (_engine.region_size, _engine.region_layout):
        with pytest.raises(ValueError, match=message):
            check(_params(**bad))


def test_region_size_limit_at_its_boundary():
    # the data area alone reaches 2**46 bytes: with the header the region is over the limit
    with pytest.raises(ValueError, match="more than 2\\*\\*46 bytes"):
        _engine.region_size(_params(block_size=2**40, blocks=64))
    assert _engine.region_size(_params(block_size=2**40, blocks=63)) < _engine.LIMITS["region_size"]


def test_item_header_and_image_size():
    assert _engine.ITEM_HEADER_SIZE == 88  # uWSGI's item record
    assert _engine.image_size(10, 16, 64, 12) == (88 + 16) * 10 + 64 * 12
    with pytest.raises(OverflowError):
        _engine.image_size(2**63, 2**10, 1, 1)


@pytest.mark.parametrize("extra", [{}, {"mode_bitmap": True, "block_count": 1003}, {"key_size": 7, "hash_size": 3}])
def test_region_layout_matches_the_size_the_options_report(extra):
    from uwcache.cache import engine_params
    from uwcache.config import CacheOptions

    options = CacheOptions(name="lay", max_items=1000, block_size=256, **extra).validate()
    layout = _engine.region_layout(engine_params(options))
    assert list(layout) == ["header", "items", "data", "hash table", "free stack", "bitmap", "alignment"]
    assert layout["items"] == (_engine.ITEM_HEADER_SIZE + options.key_size) * options.max_items
    assert sum(layout.values()) == _engine.region_size(engine_params(options)) == options.memory_bytes


def test_python_option_limits_agree_with_the_engine():
    from uwcache.config import CacheOptions

    # the option checks take their bounds from the engine (_engine.LIMITS)
    CacheOptions(name="big", max_items=2**32, key_size=1, block_size=1, hash_size=2).validate()
    with pytest.raises(uwcache.ConfigError, match="max_items"):
        CacheOptions(name="big", max_items=2**32 + 1, key_size=1, block_size=1, hash_size=2).validate()
    with pytest.raises(uwcache.ConfigError, match="block_size"):
        CacheOptions(name="big", max_items=2, block_size=2**40 + 1).validate()
    # 2**40 is a valid block_size; two such blocks only exceed the (Python-side) 1 TiB typo guard
    with pytest.raises(uwcache.ConfigError, match="bytes"):
        CacheOptions(name="big", max_items=2, block_size=2**40).validate()


def test_region_problem_compares_in_the_engine(namespace):
    from uwcache.cache import engine_params

    c = uwcache.open_cache("prob", namespace=namespace, max_items=10, block_size=64)
    try:
        params = engine_params(c.options)
        with open(c.path, "rb") as f:
            head = f.read(_engine.HEADER_SIZE)
        size = _engine.region_size(params)
        assert _engine.region_problem(head, size, params) is None
        other = (9,) + params[1:]
        assert _engine.region_problem(head, size, other) == "it was created with max_items=10, the configuration says 9"
        bitmap = params[:6] + (params[6] | _engine.OPT_BITMAP,) + params[7:]
        assert "mode_bitmap" in _engine.region_problem(head, size, bitmap)
        assert _engine.region_problem(head, size + 4096, params) == f"its size is {size + 4096} bytes, {size} expected"
        with pytest.raises(uwcache.CorruptStore):
            _engine.region_problem(b"\0" * _engine.HEADER_SIZE, size, params)
    finally:
        c.close()
