"""Persistent caches (``store=``): restart, rebuild, mismatches, corrupt files, uWSGI stores."""
import os
import struct

import pytest

import uwcache


def _store_cache(namespace, store, **extra):
    opts = dict(namespace=namespace, max_items=8, block_size=16, key_size=16, hash_size=8, store=str(store))
    opts.update(extra)
    return uwcache.open_cache("persist", **opts)


def test_items_survive_a_restart(namespace, tmp_path):
    store = tmp_path / "c.store"
    c = _store_cache(namespace, store)
    c.set("a", b"alpha")
    c.set("t", b"with ttl", expires=1000)
    c.incr("n", 41)
    c.flush()
    c.close()
    assert os.stat(store).st_mode & 0o777 == 0o600

    again = _store_cache(namespace, store)
    assert again.get("a") == b"alpha"
    assert again.get("t") == b"with ttl" and 998 <= again.ttl("t") <= 1000
    assert again.incr("n") == 42
    assert again.check() is None
    again.close()


def test_lru_order_survives_a_restart(namespace, tmp_path):
    # reference behaviour 23: k1,k2,k3 set, get k1, restart, set k4 -> k2 is evicted
    store = tmp_path / "lru.store"
    c = _store_cache(namespace, store, max_items=4, full_purge_lru=True)
    for k in ("k1", "k2", "k3"):
        c.set(k, b"v")
    c.get("k1")
    c.close()
    again = _store_cache(namespace, store, max_items=4, full_purge_lru=True)
    again.set("k4", b"v")
    assert sorted(again.keys()) == [b"k1", b"k3", b"k4"]
    again.close()


def test_bitmap_is_rebuilt_on_load(namespace, tmp_path):
    # reference behaviour 44: uWSGI forgets its bitmap and overwrites 'a' with 'b' (data corruption)
    store = tmp_path / "bm.store"
    opts = dict(max_items=4, block_size=4, block_count=4, mode_bitmap=True)
    c = _store_cache(namespace, store, **opts)
    c.set("a", b"AAAA")
    c.close()
    again = _store_cache(namespace, store, **opts)
    with pytest.raises(uwcache.CacheFull):
        again.set("b", b"B" * 16)  # all 4 blocks: only possible if 'a's block were forgotten
    again.set("b", b"BBBB")
    assert again.get("a") == b"AAAA" and again.get("b") == b"BBBB"
    assert again.check() is None
    again.close()


def test_store_of_another_geometry_is_refused(namespace, tmp_path):
    store = tmp_path / "g.store"
    c = _store_cache(namespace, store)
    c.set("a", b"1")
    c.close()
    with pytest.raises(uwcache.RegionMismatch, match=r"does not match.*max_items=8.*store_delete=True"):
        _store_cache(namespace, store, max_items=9)
    # the file is untouched by the refusal
    assert _store_cache(namespace, store).get("a") == b"1"


def test_store_delete_recreates_a_mismatched_store(namespace, tmp_path, caplog):
    store = tmp_path / "d.store"
    c = _store_cache(namespace, store)
    c.set("a", b"1")
    c.close()
    with caplog.at_level("WARNING", logger="uwcache"):
        fresh = _store_cache(namespace, store, max_items=9, store_delete=True)
    assert "Removing invalid cache store file" in caplog.text
    assert fresh.max_items == 9 and len(fresh) == 0
    fresh.close()


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda b: b"JUNKJUNK" + b[8:], "bad magic"),
        (lambda b: b[:100], "smaller than a uwcache header"),
        (lambda b: b[:-4096], "truncated|size"),
        (lambda b: b[:8] + struct.pack("<I", 99) + b[12:], "format version"),
        (lambda b: os.urandom(len(b)), "bad magic"),
    ],
)
def test_corrupt_store_files_get_a_clear_error(namespace, tmp_path, damage, message):
    store = tmp_path / "bad.store"
    c = _store_cache(namespace, store)
    c.set("a", b"1")
    c.close()
    store.write_bytes(damage(store.read_bytes()))
    with pytest.raises(uwcache.RegionMismatch, match=message):
        _store_cache(namespace, store)
    # store_delete turns the same situation into a fresh, working cache
    fresh = _store_cache(namespace, store, store_delete=True)
    fresh.set("b", b"2")
    assert fresh.get("b") == b"2" and fresh.check() is None
    fresh.close()


def _store_of_version(namespace, store, version, items):
    """A store with ``items``, its format version field then set to ``version``."""
    c = _store_cache(namespace, store)
    for key, value in items.items():
        c.set(key, value, expires=1000 if key == "b" else 0)
    c.close()
    data = store.read_bytes()
    assert _version_of(store) == uwcache._engine.FORMAT_VERSION
    store.write_bytes(data[:8] + struct.pack("<I", version) + data[12:])


def _version_of(store):
    return struct.unpack_from("<I", store.read_bytes(), 8)[0]


@pytest.mark.parametrize("older", [5, 6, 7])
def test_a_store_of_an_older_compatible_format_keeps_its_items(namespace, tmp_path, older):
    # formats 5 and 6 differ from the current one only in how live processes lock: a store
    # kept across an upgrade of uwcache is opened (cold) and rewritten in place, not refused
    store = tmp_path / "old.store"
    _store_of_version(namespace, store, older, {"a": b"alpha", "b": b"beta"})
    again = _store_cache(namespace, store)
    assert again.get("a") == b"alpha" and again.get("b") == b"beta"
    assert again.check() is None
    again.close()
    assert _version_of(store) == uwcache._engine.FORMAT_VERSION


def test_an_older_store_opened_with_other_options_keeps_its_format(namespace, tmp_path):
    # the version is rewritten only once the store is known to fit: a refused open leaves the
    # file as the older release wrote it, so that release can still use it
    store = tmp_path / "old6.store"
    _store_of_version(namespace, store, 6, {"a": b"alpha"})
    with pytest.raises(uwcache.RegionMismatch, match="max_items"):
        _store_cache(namespace, store, max_items=16)
    assert _version_of(store) == 6
    again = _store_cache(namespace, store)  # the right options: upgraded and recovered
    assert again.get("a") == b"alpha"
    again.close()


def test_a_store_of_an_older_incompatible_format_is_refused(namespace, tmp_path):
    store = tmp_path / "old4.store"
    _store_of_version(namespace, store, 4, {"a": b"alpha"})
    with pytest.raises(uwcache.RegionMismatch, match="format version"):
        _store_cache(namespace, store)
    assert _version_of(store) == 4


def test_damaged_items_are_dropped_on_load(namespace, tmp_path):
    store = tmp_path / "items.store"
    c = _store_cache(namespace, store)
    for k in ("a", "b", "c"):
        c.set(k, k * 3)
    header_size = uwcache._engine.HEADER_SIZE
    rec = 88 + 16
    c.close()
    data = bytearray(store.read_bytes())
    # slot 7 holds the first item ('a'): give it a value size no block can hold
    struct.pack_into("<Q", data, header_size + 7 * rec + 24, 10**9)
    store.write_bytes(bytes(data))
    again = _store_cache(namespace, store)
    assert again.get("a") is None
    assert again.get("b") == b"bbb" and again.get("c") == b"ccc"
    assert len(again) == 2 and again.check() is None
    again.close()


def test_a_uwsgi_store_file_is_refused_with_a_hint_and_can_be_imported(namespace, tmp_path):
    # a raw image in uWSGI's layout, as written by uWSGI's store=: items=4, keysize=8, blocksize=16
    items, keysize, blocksize = 4, 8, 16
    rec = 88 + keysize
    image = bytearray(rec * items + blocksize * items)
    for slot, (key, value) in zip((3, 2), ((b"k1", b"hello"), (b"ab", b"world!"))):
        off = slot * rec
        fields = [0, len(key), uwcache._engine.hash(key), len(value), slot, 0, 0, 0, 0, 0, 0]
        struct.pack_into("<11Q", image, off, *fields)
        image[off + 88: off + 88 + len(key)] = key
        image[rec * items + slot * blocksize: rec * items + slot * blocksize + len(value)] = value
    store = tmp_path / "uwsgi.store"
    store.write_bytes(bytes(image))
    with pytest.raises(uwcache.RegionMismatch, match="import it with uwcache.import_uwsgi_store"):
        _store_cache(namespace, store)
    target = uwcache.open_cache("imported", namespace=namespace, max_items=10, block_size=64)
    assert uwcache.import_uwsgi_store(target, str(store), max_items=4, key_size=8, block_size=16) == (2, 0)
    assert target.get("k1") == b"hello" and target.get("ab") == b"world!"
    with pytest.raises(uwcache.CorruptStore, match="pass the geometry"):
        uwcache.import_uwsgi_store(target, str(store), max_items=5, key_size=8, block_size=16)
    target.close()


@pytest.mark.uwsgi
def test_import_a_store_written_by_real_uwsgi(namespace, tmp_path, uwsgi_bin):
    import oracle

    store = tmp_path / "real.store"
    oracle.run_ops(
        f"name=s,items=10,keysize=32,blocksize=64,store={store}",
        [("cache_set", "alpha", "one", 0, "s"), ("cache_update", "beta", b"\x00two", 0, "s"),
         ("cache_inc", "gamma", 5, 0, "s"), ("cache_set", "gone", "x", 0, "s"), ("cache_del", "gone", "s")],
    )
    target = uwcache.open_cache("fromuwsgi", namespace=namespace, max_items=20, block_size=128, key_size=32)
    loaded, dropped = uwcache.import_uwsgi_store(target, str(store), max_items=10, key_size=32, block_size=64)
    assert (loaded, dropped) == (3, 0)
    assert target.get("alpha") == b"one" and target.get("beta") == b"\x00two" and target.get_int("gamma") == 5
    assert target.get("gone") is None
    target.close()
