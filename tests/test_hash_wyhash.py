"""hash_algo="wyhash": a faster hash than uWSGI's two, for caches that do not peer with uWSGI."""
import pytest

import uwcache
from uwcache import _engine, wire
from uwcache.config import parse_cache2

from test_net_server import counters, request

# wyhash final version 3, seed 0, default secret; the 64-bit value from the python-wyhash
# package (a binding of the reference wyhash.h), folded to 32 bits (hi ^ lo) as the engine does.
REFERENCE = [
    (b"", 0x42BC986DC5EEC4D3),
    (b"a", 0x6CF84E5A2465E867),
    (b"abc", 0xB4808DF22D44FFCF),
    (b"hello", 0xFAACEC54DF7A6205),
    (b"uwcache-key-0001", 0x49C6936F2906FB47),
    (b"abcdefghijklmnopqrstuvwxyz", 0xD66714ECBA3A36B2),
    (bytes(range(100)), 0x79FFD87408B29CDC),
]


@pytest.mark.parametrize("key,h64", REFERENCE)
def test_wyhash_matches_the_reference(key, h64):
    assert _engine.hash(key, "wyhash") == (h64 ^ (h64 >> 32)) & 0xFFFFFFFF


def test_wyhash_cache_stores_finds_and_reattaches(namespace):
    c = uwcache.open_cache("wy", namespace=namespace, max_items=300, block_size=16, hash_algo="wyhash",
                           hash_size=17)
    try:
        for i in range(250):
            c.set(f"key{i}", str(i))
        assert all(c.get(f"key{i}") == str(i).encode() for i in range(250))
        assert c.hash_algo == "wyhash" and c.stats()["hash"] == "wyhash"
        assert c.check() is None
        other = uwcache.attach("wy", namespace=namespace)
        try:
            assert other.options.hash_algo == "wyhash"
            assert other.get("key7") == b"7"
        finally:
            other.close()
        # another hash is another geometry: a region of its own (a new generation), never the
        # wyhash region misread
        with uwcache.open_cache("wy", namespace=namespace, max_items=300, block_size=16, hash_size=17) as djb:
            assert djb.hash_algo == "djb33x" and djb.path != c.path
            assert djb.get("key7") is None
        assert c.get("key7") == b"7"
    finally:
        c.close()


def test_cache2_option_and_format_round_trip():
    opts = parse_cache2("name=w,items=10,hash=wyhash")
    assert opts.hash_algo == "wyhash"
    assert parse_cache2(uwcache.format_cache2(opts)) == opts


@pytest.mark.parametrize("peers", ["nodes=127.0.0.1:4000", "sync=127.0.0.1:4000"])
def test_wyhash_refused_for_caches_that_peer_with_uwsgi(peers):
    with pytest.raises(uwcache.ConfigError, match="'wyhash', which uWSGI does not have") as info:
        parse_cache2(f"name=w,items=10,hash=wyhash,{peers}")
    assert "djb33x" in str(info.value)
    with pytest.raises(uwcache.ConfigError, match="uWSGI does not have"):
        uwcache.CacheOptions(name="w", max_items=10, hash_algo="wyhash", udp_clients=("127.0.0.1:4000",))
    # receiving replication (udp_servers) does not involve the hash: items are rehashed here
    assert uwcache.CacheOptions(name="w", max_items=10, hash_algo="wyhash", udp_servers=(":4000",))


def test_server_refuses_a_dump_of_a_wyhash_cache(namespace):
    caching = uwcache.Caching(namespace).add_cache("c", max_items=10, block_size=64, hash_algo="wyhash")
    with caching.start(server="127.0.0.1:0", net_timeout=1.0) as node:
        node.cache("c").set("k", b"v")
        before = counters(node)["net_request_errors"]
        assert request(node, wire.encode_dump_request("c"), shut=True) == b""
        assert counters(node)["net_request_errors"] == before + 1


def test_import_uwsgi_store_rehashes_into_a_wyhash_cache(namespace, tmp_path):
    # a uWSGI store image (djb33x hashes in its records) is translated item by item
    src = uwcache.open_cache("src", namespace=namespace, max_items=8, block_size=16, key_size=8)
    dst = uwcache.open_cache("dst", namespace=namespace, max_items=8, block_size=16, key_size=8,
                             hash_algo="wyhash", hash_size=3)
    try:
        for i in range(5):
            src.set(f"k{i}", f"v{i}")
        path = tmp_path / "store"
        path.write_bytes(src._export_image())
        assert uwcache.import_uwsgi_store(dst, str(path), max_items=8, key_size=8, block_size=16) == (5, 0)
        assert [dst.get(f"k{i}") for i in range(5)] == [f"v{i}".encode() for i in range(5)]
        assert dst.check() is None
    finally:
        src.close()
        dst.close()
