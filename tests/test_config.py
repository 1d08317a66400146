"""Tests of uwcache.config: the option surface, cache2/ini parsing and writing, validation."""

from __future__ import annotations

import dataclasses
import io
import pathlib
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uwcache.config import (
    CACHE2_KEYS,
    MAX_MEMORY_BYTES,
    CacheOptions,
    Caching,
    PreloadFile,
    PreloadItem,
    format_cache2,
    parse_cache2,
)
from uwcache.errors import ConfigError, UnknownCache


@pytest.fixture(autouse=True)
def _no_namespace_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not depend on the caller's environment."""
    monkeypatch.delenv("UWCACHE_NAMESPACE", raising=False)


def raises(fragment: str) -> Any:
    """pytest.raises(ConfigError) whose message contains ``fragment`` (case-insensitive)."""
    import re

    return pytest.raises(ConfigError, match="(?i)" + re.escape(fragment))


# ------------------------------------------------------------------------------------------
# CacheOptions: defaults, normalisation, derived values
# ------------------------------------------------------------------------------------------


def test_cache_options_defaults() -> None:
    o = CacheOptions("c", 10)
    assert (o.no_expire, o.store, o.store_sync_interval, o.store_delete) == (False, None, 0, False)
    assert (o.hash_algo, o.hash_size, o.key_size) == ("djb33x", 65536, 2048)
    assert (o.udp_clients, o.udp_servers, o.sync_from) == ((), (), ())
    assert (o.block_size, o.block_count, o.mode_bitmap) == (65536, None, False)
    assert (o.use_lastmod, o.full_silent, o.full_purge_lru) == (False, False, False)
    assert (o.math_initial, o.lazy_expire, o.sweep_on_full, o.clear_on_full, o.secret) == (0, False, 0, False, None)


def test_cache_options_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CacheOptions("c", 10).max_items = 5  # type: ignore[misc]


def test_lists_are_normalised_to_tuples_and_paths_to_str() -> None:
    o = CacheOptions("c", 10, udp_clients="a:1", udp_servers=[":2", "127.0.0.1:3"], sync_from=["/run/s.sock"],
                     store=pathlib.Path("/tmp/store"))
    assert o.udp_clients == ("a:1",)
    assert o.udp_servers == (":2", "127.0.0.1:3")
    assert o.sync_from == ("/run/s.sock",)
    assert o.store == "/tmp/store" and isinstance(o.store, str)
    assert o == CacheOptions("c", 10, udp_clients=("a:1",), udp_servers=(":2", "127.0.0.1:3"),
                             sync_from=("/run/s.sock",), store="/tmp/store")


def assert_region_size(o: CacheOptions, areas: int) -> None:
    """memory_bytes is exactly what the engine maps: the areas, its header, alignment."""
    from uwcache import _engine
    from uwcache.cache import engine_params

    assert o.memory_bytes == _engine.region_size(engine_params(o))
    assert areas + 32768 <= o.memory_bytes < areas + 32768 + 4096 + 6 * 64


def test_derived_values_single_block() -> None:
    o = CacheOptions("c", 100)
    assert o.blocks == 100
    assert o.capacity == 99
    assert o.max_item_size == 65536
    assert o.item_record_size == 88 + 2048
    # items 2136*100 + data 65536*100 + hash 8*65536 (slot + tag) + free stack 4*100, plus the
    # engine's 32 KiB header and cache-line/page alignment
    assert_region_size(o, 213600 + 6553600 + 524288 + 400)


def test_derived_values_bitmap() -> None:
    o = CacheOptions("c", 4, key_size=8, block_size=16, hash_size=10, mode_bitmap=True, block_count=13)
    assert o.blocks == 13
    assert o.capacity == 3
    assert o.max_item_size == 16 * 13
    assert o.item_record_size == 96
    # items 96*4 + data 16*13 + hash 8*10 + free stack 4*4 + bitmap ceil(13/8)=2 + header
    assert_region_size(o, 384 + 208 + 80 + 16 + 2)


def test_bitmap_without_block_count_uses_max_items_blocks() -> None:
    o = CacheOptions("c", 8, block_size=1, mode_bitmap=True)
    assert o.blocks == 8 and o.max_item_size == 8
    assert_region_size(o, (88 + 2048) * 8 + 8 + 8 * 65536 + 32 + 1)


def test_secret_is_not_in_repr() -> None:
    assert "hunter2" not in repr(CacheOptions("c", 10, secret="hunter2"))


# ------------------------------------------------------------------------------------------
# CacheOptions: validation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"name": ""}, "cache name must be 1..200"),
        ({"name": "x" * 201}, "cache name must be 1..200"),
        ({"name": "a\nb"}, "newline"),
        ({"name": "a\0b"}, "NUL"),
        ({"name": 5}, "cache name must be a str"),
        ({"max_items": 1}, "1 would hold nothing"),
        ({"max_items": 0}, "max_items"),
        ({"max_items": 2**31 + 1}, "max_items"),
        ({"max_items": "10"}, "max_items"),
        ({"max_items": True}, "max_items"),
        ({"max_items": 10.0}, "max_items"),
        ({"block_size": 0}, "block_size"),
        ({"block_size": 2**40 + 1}, "block_size"),  # the engine allows up to 2**40
        ({"hash_size": 0}, "hash_size"),
        ({"hash_size": 2**32}, "hash_size"),
        ({"key_size": 0}, "key_size"),
        ({"key_size": 65536}, "key_size"),
        ({"hash_algo": "md5"}, "hash_algo"),
        ({"hash_algo": "rr"}, "lookups miss"),
        ({"hash_algo": "random"}, "hash_algo"),
        ({"store_sync_interval": -1}, "store_sync_interval"),
        ({"sweep_on_full": -1}, "sweep_on_full"),
        ({"math_initial": 2**63}, "math_initial"),
        ({"math_initial": -(2**63) - 1}, "math_initial"),
        ({"no_expire": 1}, "no_expire"),
        ({"mode_bitmap": "yes"}, "mode_bitmap"),
        ({"full_purge_lru": None}, "full_purge_lru"),
        ({"store": ""}, "store"),
        ({"store": b"/tmp/x"}, "store"),
        ({"block_count": 20}, "mode_bitmap is off"),
        ({"block_count": 5, "mode_bitmap": True}, "block_count"),
        ({"udp_clients": "host"}, "udp_clients"),
        ({"udp_clients": "[]:3031"}, "empty IPv6 host"),  # ":3031" is 127.0.0.1:3031 (uwcache.address)
        ({"udp_clients": "h:0"}, "invalid port"),
        ({"udp_clients": "h:65536"}, "invalid port"),
        ({"udp_clients": "h:x"}, "invalid port"),
        ({"udp_clients": 5}, "udp_clients"),
        ({"udp_servers": "127.0.0.1"}, "udp_servers"),
        ({"udp_servers": ["a:1", ""]}, "udp_servers"),
        ({"sync_from": "h:99999"}, "sync_from"),
        ({"sync_from": "a;b"}, "sync_from"),
        ({"secret": ""}, "secret"),
        ({"max_items": 2**31, "block_size": 2**31}, "1 TiB"),
    ],
)
def test_invalid_cache_options(kwargs: dict, fragment: str) -> None:
    args = {"name": "c", "max_items": 10, **kwargs}
    with raises(fragment):
        CacheOptions(**args)


def test_memory_error_says_how_much() -> None:
    with pytest.raises(ConfigError) as info:
        CacheOptions("big", 2**20, block_size=2**21)
    areas = (88 + 2048) * 2**20 + 2**41 + 8 * 65536 + 4 * 2**20
    needed = int(str(info.value).split(" would need ")[1].split(" bytes")[0])
    assert areas + 32768 <= needed < areas + 32768 + 4096 + 6 * 64
    assert "data area" in str(info.value)


def test_memory_limit_is_inclusive() -> None:
    assert MAX_MEMORY_BYTES == 2**40
    # just under the limit is accepted
    CacheOptions("c", 2, key_size=1, hash_size=1, block_size=2**31, mode_bitmap=True, block_count=500)


def test_valid_addresses() -> None:
    o = CacheOptions("c", 10, udp_clients=["10.0.0.1:3031", "peer.example:1"], udp_servers=[":3031", "0.0.0.0:65535"],
                     sync_from=["10.0.0.2:3031", "/run/uwsgi.sock"])
    assert len(o.udp_clients) == 2 and len(o.sync_from) == 2


def test_boundaries_accepted() -> None:
    CacheOptions("x" * 200, 2, key_size=65535, hash_size=2**32 - 1, block_size=1)
    CacheOptions("c", 2, math_initial=-(2**63))
    CacheOptions("c", 2, math_initial=2**63 - 1)
    CacheOptions("c", 10, mode_bitmap=True, block_count=10)


def test_replace_revalidates() -> None:
    o = CacheOptions("c", 10)
    with raises("max_items"):
        dataclasses.replace(o, max_items=1)


# ------------------------------------------------------------------------------------------
# Caching: the seed's methods
# ------------------------------------------------------------------------------------------


def test_caching_defaults() -> None:
    c = Caching()
    assert c.namespace == "default"
    assert (c.no_expire, c.expire_scan_interval, c.report_freed) == (False, 3, False)
    assert c.caches == [] and c.items == [] and c.files == []
    assert c.secret is None


def test_namespace_from_argument_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Caching("app-1.prod_x").namespace == "app-1.prod_x"
    monkeypatch.setenv("UWCACHE_NAMESPACE", "fromenv")
    assert Caching().namespace == "fromenv"
    assert Caching("explicit").namespace == "explicit"
    monkeypatch.setenv("UWCACHE_NAMESPACE", "")
    assert Caching().namespace == "default"


@pytest.mark.parametrize("bad", ["", ".hidden", "a/b", "a b", "x" * 65, "é", 5])
def test_invalid_namespace(bad: Any) -> None:
    with raises("namespace"):
        Caching(bad)


def test_invalid_namespace_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UWCACHE_NAMESPACE", "../etc")
    with raises("UWCACHE_NAMESPACE"):
        Caching()


def test_namespace_max_length() -> None:
    assert Caching("x" * 64).namespace == "x" * 64


def test_set_basic_params_chains_and_none_leaves_as_is() -> None:
    c = Caching()
    assert c.set_basic_params(no_expire=True) is c
    assert (c.no_expire, c.expire_scan_interval, c.report_freed) == (True, 3, False)
    c.set_basic_params(expire_scan_interval=7, report_freed=True)
    assert (c.no_expire, c.expire_scan_interval, c.report_freed) == (True, 7, True)
    c.set_basic_params()
    assert (c.no_expire, c.expire_scan_interval, c.report_freed) == (True, 7, True)
    c.set_basic_params(no_expire=False)
    assert c.no_expire is False


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"expire_scan_interval": 0}, "expire_scan_interval"),
        ({"expire_scan_interval": "3"}, "expire_scan_interval"),
        ({"expire_scan_interval": True}, "expire_scan_interval"),
        ({"no_expire": 1}, "no_expire"),
        ({"report_freed": "yes"}, "report_freed"),
    ],
)
def test_set_basic_params_rejects(kwargs: dict, fragment: str) -> None:
    with raises(fragment):
        Caching().set_basic_params(**kwargs)


def test_add_cache_defaults_and_chain() -> None:
    c = Caching()
    assert c.add_cache("a", max_items=10) is c
    assert c.caches == [CacheOptions("a", 10)]


def test_add_cache_passes_every_option() -> None:
    c = Caching().add_cache(
        "a", max_items=10, no_expire=True, store="/tmp/s", store_sync_interval=5, store_delete=True,
        hash_algo="murmur2", hash_size=100, key_size=64, udp_clients="h:1", udp_servers=[":2"],
        block_size=128, block_count=20, sync_from=["h:3"], mode_bitmap=True, use_lastmod=True,
        full_silent=True, full_purge_lru=True, math_initial=-3, lazy_expire=True, sweep_on_full=9,
        clear_on_full=True, secret="s3")
    assert c.caches[0] == CacheOptions(
        "a", 10, True, "/tmp/s", 5, True, "murmur2", 100, 64, ("h:1",), (":2",), 128, 20, ("h:3",),
        True, True, True, True, -3, True, 9, True, "s3")


def test_add_cache_duplicate_name() -> None:
    c = Caching().add_cache("a", max_items=10)
    with raises("'a' is already configured"):
        c.add_cache("a", max_items=20)
    assert len(c.caches) == 1


def test_add_cache_invalid_value_names_the_option() -> None:
    with raises("key_size"):
        Caching().add_cache("a", max_items=10, key_size=0)


def test_add_cache_inherits_caching_secret() -> None:
    c = Caching(secret="shared").add_cache("a", max_items=10).add_cache("b", max_items=10, secret="own")
    assert [o.secret for o in c.caches] == ["shared", "own"]
    assert "shared" not in repr(c)


def test_secret_validation() -> None:
    with raises("secret"):
        Caching(secret="")


def test_add_item_and_add_file() -> None:
    c = Caching()
    assert c.add_item("k", "v") is c
    assert c.add_item(b"k2", b"v2", cache_name="other") is c
    assert c.add_file("static/a.css") is c
    assert c.add_file(pathlib.Path("/srv/b.js"), gzip=True, cache_name="other") is c
    assert c.items == [PreloadItem("k", "v", None), PreloadItem(b"k2", b"v2", "other")]
    assert c.files == [PreloadFile("static/a.css", False, None), PreloadFile("/srv/b.js", True, "other")]


def test_add_file_does_not_read_the_file() -> None:
    Caching().add_file("/definitely/not/here")


@pytest.mark.parametrize(
    "args, kwargs, fragment",
    [
        (("", "v"), {}, "key must not be empty"),
        (("k", ""), {}, "value must not be empty"),
        ((1, "v"), {}, "key must be str or bytes"),
        (("k", 2), {}, "value must be str or bytes"),
        (("k", "v"), {"cache_name": ""}, "cache_name"),
        (("k", "v"), {"cache_name": 3}, "cache_name"),
    ],
)
def test_add_item_rejects(args: tuple, kwargs: dict, fragment: str) -> None:
    with raises(fragment):
        Caching().add_item(*args, **kwargs)


def test_add_file_rejects() -> None:
    with raises("filepath"):
        Caching().add_file("")
    with raises("filepath"):
        Caching().add_file(3)  # type: ignore[arg-type]
    with raises("gzip"):
        Caching().add_file("a", gzip=1)  # type: ignore[arg-type]


def test_cache_options_lookup_and_default() -> None:
    c = Caching().add_cache("first", max_items=10).add_cache("second", max_items=20)
    assert c.cache_options("second").max_items == 20
    assert c.default_cache_name == "first"
    with pytest.raises(UnknownCache, match="nope"):
        c.cache_options("nope")
    with pytest.raises(KeyError):
        c.cache_options("nope")


def test_default_cache_name_without_caches() -> None:
    with raises("no cache is configured"):
        Caching().default_cache_name


def test_validate_preload_unknown_cache() -> None:
    c = Caching().add_cache("a", max_items=10).add_item("k", "v", cache_name="zz")
    with pytest.raises(ConfigError) as info:
        c.validate()
    assert "'k'" in str(info.value) and "'zz'" in str(info.value)
    c2 = Caching().add_cache("a", max_items=10).add_file("f", cache_name="zz")
    with raises("'zz'"):
        c2.validate()


def test_validate_preload_needs_a_cache() -> None:
    with raises("no cache is configured"):
        Caching().add_item("k", "v").validate()
    with raises("no cache is configured"):
        Caching().add_file("f").validate()


def test_validate_preload_sizes() -> None:
    c = Caching().add_cache("a", max_items=10, key_size=3, block_size=4)
    assert c.add_item("abc", "wxyz").validate() is c
    with raises("key_size=3"):
        Caching().add_cache("a", max_items=10, key_size=3).add_item("abcd", "v").validate()
    with raises("4 bytes"):
        Caching().add_cache("a", max_items=10, block_size=4).add_item("k", "vwxyz").validate()
    # bitmap mode: the largest item is block_size * blocks
    Caching().add_cache("a", max_items=2, block_size=4, mode_bitmap=True).add_item("k", "12345678").validate()


def test_validate_catches_direct_mutation() -> None:
    c = Caching().add_cache("a", max_items=10)
    c.caches.append(CacheOptions("a", 5))
    with raises("more than one cache"):
        c.validate()
    c2 = Caching()
    c2.expire_scan_interval = 0
    with raises("expire_scan_interval"):
        c2.validate()


def test_equality_ignores_namespace_and_resolves_default_cache() -> None:
    a = Caching("one").add_cache("c", max_items=10).add_item("k", "v").add_file("f")
    b = Caching("two").add_cache("c", max_items=10).add_item(b"k", b"v", cache_name="c").add_file("f", cache_name="c")
    assert a == b
    assert a != Caching("one").add_cache("c", max_items=11).add_item("k", "v").add_file("f")
    assert a != "not a caching"
    b.set_basic_params(report_freed=True)
    assert a != b


def test_repr_is_helpful() -> None:
    r = repr(Caching("ns").add_cache("a", max_items=10).add_item("k", "v"))
    assert "ns" in r and "a(max_items=10)" in r and "items=1" in r


# ------------------------------------------------------------------------------------------
# cache2 parsing
# ------------------------------------------------------------------------------------------


BASE = "name=c,items=10"


@pytest.mark.parametrize(
    "extra, field, value",
    [
        ("", "max_items", 10),
        ("blocksize=128", "block_size", 128),
        ("blocksize=128,bitmap=1,blocks=40", "block_count", 40),
        ("hash=murmur2", "hash_algo", "murmur2"),
        ("hash=djb33x", "hash_algo", "djb33x"),
        ("hashsize=100", "hash_size", 100),
        ("hash_size=100", "hash_size", 100),
        ("keysize=64", "key_size", 64),
        ("key_size=64", "key_size", 64),
        ("store=/tmp/a b", "store", "/tmp/a b"),
        ("store_sync=5", "store_sync_interval", 5),
        ("storesync=5", "store_sync_interval", 5),
        ("store_delete=1", "store_delete", True),
        ("storedelete=1", "store_delete", True),
        ("node=h:1", "udp_clients", ("h:1",)),
        ("nodes=h:1;g:2", "udp_clients", ("h:1", "g:2")),
        ("sync=h:1;/run/x.sock", "sync_from", ("h:1", "/run/x.sock")),
        ("udp=:1", "udp_servers", (":1",)),
        ("udp_servers=:1;127.0.0.1:2", "udp_servers", (":1", "127.0.0.1:2")),
        ("udp_server=:1", "udp_servers", (":1",)),
        ("udpservers=:1", "udp_servers", (":1",)),
        ("udpserver=:1", "udp_servers", (":1",)),
        ("bitmap=1", "mode_bitmap", True),
        ("lastmod=1", "use_lastmod", True),
        ("math_initial=-12", "math_initial", -12),
        ("math_initial=+12", "math_initial", 12),
        ("ignore_full=1", "full_silent", True),
        ("purge_lru=1", "full_purge_lru", True),
        ("lru=1", "full_purge_lru", True),
        ("lazy_expire=1", "lazy_expire", True),
        ("lazy=1", "lazy_expire", True),
        ("sweep_on_full=30", "sweep_on_full", 30),
        ("clear_on_full=1", "clear_on_full", True),
        ("no_expire=1", "no_expire", True),
    ],
)
def test_cache2_keys(extra: str, field: str, value: Any) -> None:
    o = parse_cache2(BASE + ("," + extra if extra else ""))
    assert getattr(o, field) == value
    assert o.name == "c"


@pytest.mark.parametrize("key", ["max_items", "maxitems", "items"])
def test_cache2_max_items_aliases(key: str) -> None:
    assert parse_cache2(f"name=c,{key}=42").max_items == 42


def test_every_documented_key_is_known() -> None:
    documented = {
        "name", "max_items", "maxitems", "items", "blocksize", "blocks", "hash", "hashsize", "hash_size",
        "keysize", "key_size", "store", "store_sync", "storesync", "store_delete", "storedelete", "node",
        "nodes", "sync", "udp", "udp_servers", "udp_server", "udpservers", "udpserver", "bitmap", "lastmod",
        "math_initial", "ignore_full", "purge_lru", "lru", "lazy_expire", "lazy", "sweep_on_full",
        "clear_on_full", "no_expire",
    }
    assert set(CACHE2_KEYS) == documented
    assert set(CACHE2_KEYS.values()) <= {f.name for f in dataclasses.fields(CacheOptions)}


@pytest.mark.parametrize("word", ["1", "true", "TRUE", "Yes", "on"])
def test_cache2_boolean_on_words(word: str) -> None:
    assert parse_cache2(f"{BASE},bitmap={word}").mode_bitmap is True


@pytest.mark.parametrize("word", ["0", "false", "no", "off", "", "OFF", "maybe"])
def test_cache2_boolean_off_words_are_rejected(word: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_cache2(f"{BASE},bitmap={word}")
    message = str(info.value)
    assert "bitmap" in message and "ON whenever it is present" in message and "omit" in message


def test_bitmap_zero_trap_message() -> None:
    with raises("'bitmap=0' ENABLES it"):
        parse_cache2(f"{BASE},bitmap=0")


def test_bare_word_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        parse_cache2(f"{BASE},bitmap")
    assert "silently ignores" in str(info.value) and "bitmap=1" in str(info.value)


def test_bare_non_boolean_word_rejected() -> None:
    with raises("'store=VALUE'"):
        parse_cache2(f"{BASE},store")
    with raises("no '='"):
        parse_cache2(f"{BASE},whatever")


@pytest.mark.parametrize("value", [f"{BASE},", f",{BASE}", "name=c,,items=10"])
def test_empty_entry_rejected(value: str) -> None:
    with raises("empty entry"):
        parse_cache2(value)


def test_unknown_key_lists_accepted_keys() -> None:
    with pytest.raises(ConfigError) as info:
        parse_cache2(f"{BASE},colour=blue")
    message = str(info.value)
    assert "colour" in message and "accepted keys" in message and "maxitems" in message and "purge_lru" in message


def test_max_items_hyphen_hint() -> None:
    with raises("use items, maxitems or max_items"):
        parse_cache2("name=c,max-items=10")


def test_spaces_around_key_hint() -> None:
    with raises("remove the spaces"):
        parse_cache2("name=c, items=10")


@pytest.mark.parametrize("raw", ["64k", "-1", "", " 10", "1e3", "0x10", "+5", "１０"])
def test_numbers_must_be_plain_digits(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_cache2(f"name=c,items=10,blocksize={raw}")
    assert "blocksize" in str(info.value) and "decimal digits" in str(info.value)


def test_numbers_with_leading_zeros() -> None:
    assert parse_cache2("name=c,items=010").max_items == 10


def test_math_initial_syntax_and_range() -> None:
    with raises("math_initial"):
        parse_cache2(f"{BASE},math_initial=1.5")
    with raises("math_initial"):
        parse_cache2(f"{BASE},math_initial={2**63}")
    assert parse_cache2(f"{BASE},math_initial={-(2**63)}").math_initial == -(2**63)


@pytest.mark.parametrize("algo", ["random", "rand", "rr"])
def test_useless_hashes_rejected_with_reason(algo: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_cache2(f"{BASE},hash={algo}")
    assert "lookups miss" in str(info.value) and "djb33x" in str(info.value)


def test_unknown_hash_rejected() -> None:
    with raises("djb33x, murmur2"):
        parse_cache2(f"{BASE},hash=crc32")


def test_repeated_key_same_value_ok_different_value_rejected() -> None:
    assert parse_cache2("name=c,items=10,maxitems=10").max_items == 10
    with raises("twice with different values"):
        parse_cache2("name=c,items=10,maxitems=11")
    with raises("twice"):
        parse_cache2("name=c,items=10,name=d")


def test_required_keys() -> None:
    with raises("'name'"):
        parse_cache2("items=10")
    with raises("'max_items'"):
        parse_cache2("name=c")


def test_range_errors_name_the_key() -> None:
    with raises("key_size (cache2 keysize/key_size) must be an int in 1..65535"):
        parse_cache2(f"{BASE},keysize=65536")
    with raises("1 would hold nothing"):
        parse_cache2("name=c,items=1")
    with raises("must be >= max_items"):
        parse_cache2("name=c,items=3,blocks=2,bitmap=1")
    with raises("mode_bitmap is off"):
        parse_cache2("name=c,items=3,blocks=4")


def test_list_values() -> None:
    with raises("without empty ones"):
        parse_cache2(f"{BASE},nodes=h:1;")
    with raises("udp_servers"):
        parse_cache2(f"{BASE},udp=127.0.0.1")


def test_escaped_commas_and_backslashes() -> None:
    o = parse_cache2(r"name=a\,b,items=10,store=/tmp/x\\y\,z")
    assert o.name == "a,b"
    assert o.store == "/tmp/x\\y,z"
    assert parse_cache2(r"name=\a,items=10").name == "a"  # a backslash escapes any character


def test_value_may_contain_equals() -> None:
    assert parse_cache2("name=a=b,items=10").name == "a=b"


def test_lone_trailing_backslash() -> None:
    with raises("lone backslash"):
        parse_cache2("name=c,items=10\\")


def test_parse_cache2_type_error() -> None:
    with raises("must be a str"):
        parse_cache2(None)  # type: ignore[arg-type]


def test_parse_error_includes_the_whole_value() -> None:
    with raises("'name=c,items=10,bitmap=0'"):
        parse_cache2("name=c,items=10,bitmap=0")


# ------------------------------------------------------------------------------------------
# cache2 formatting
# ------------------------------------------------------------------------------------------


def test_format_seed_example() -> None:
    c = Caching().add_cache("mycache", max_items=20, no_expire=True)
    assert c.to_cache2() == ["name=mycache,maxitems=20,no_expire=1"]


def test_format_key_order_with_every_option() -> None:
    o = CacheOptions("a", 10, True, "/s", 5, True, "murmur2", 100, 64, ("h:1", "g:2"), (":2",), 128, 20,
                     ("h:3",), True, True, True, True, -3, True, 9, True, "secret")
    assert format_cache2(o) == (
        "name=a,maxitems=10,no_expire=1,store=/s,storesync=5,store_delete=1,hash=murmur2,hash_size=100,"
        "key_size=64,nodes=h:1;g:2,udp_servers=:2,blocksize=128,blocks=20,sync=h:3,bitmap=1,lastmod=1,"
        "ignore_full=1,purge_lru=1,math_initial=-3,lazy_expire=1,sweep_on_full=9,clear_on_full=1")


def test_format_omits_defaults_and_false_booleans() -> None:
    o = CacheOptions("a", 10, no_expire=False, mode_bitmap=False, hash_algo="djb33x", block_size=65536)
    assert format_cache2(o) == "name=a,maxitems=10"
    assert "=0" not in format_cache2(CacheOptions("a", 10, math_initial=0, sweep_on_full=0))


def test_format_never_writes_secret() -> None:
    assert "secret" not in format_cache2(CacheOptions("a", 10, secret="x"))


def test_format_escapes() -> None:
    o = CacheOptions("a,b\\c", 10, store="/x,y")
    assert format_cache2(o) == r"name=a\,b\\c,maxitems=10,store=/x\,y"
    assert parse_cache2(format_cache2(o)) == o


def test_from_cache2() -> None:
    c = Caching.from_cache2("name=a,items=10", "name=b,items=20,bitmap=1", namespace="ns")
    assert c.namespace == "ns"
    assert [o.name for o in c.caches] == ["a", "b"]
    assert c.default_cache_name == "a"
    with raises("already configured"):
        Caching.from_cache2("name=a,items=10", "name=a,items=20")


def test_from_cache2_secret() -> None:
    c = Caching.from_cache2("name=a,items=10", secret="s")
    assert c.caches[0].secret == "s"


# ------------------------------------------------------------------------------------------
# ini parsing
# ------------------------------------------------------------------------------------------


def test_ini_repeated_cache2_lines_and_noise() -> None:
    text = """
# a comment
; another comment
[other]
cache2 = name=ignored,items=10

[uwsgi]
master = true
module = app:application
cache2 = name=a,items=10
  cache2=name=b,items=20,bitmap=1   
cache2 = "name=c,items=30"
"""
    c = Caching.from_ini(text)
    assert [(o.name, o.max_items) for o in c.caches] == [("a", 10), ("b", 20), ("c", 30)]
    assert c.caches[1].mode_bitmap


def test_ini_other_section() -> None:
    text = "[uwsgi]\ncache2 = name=a,items=10\n[staging]\ncache2 = name=s,items=5\n"
    assert [o.name for o in Caching.from_ini(text, section="staging").caches] == ["s"]


def test_ini_missing_section() -> None:
    with raises("no [uwsgi] section"):
        Caching.from_ini("[app]\ncache2 = name=a,items=10\n")


def test_ini_from_path_and_file_objects(tmp_path: pathlib.Path) -> None:
    text = "[uwsgi]\ncache2 = name=a,items=10\n"
    path = tmp_path / "app.ini"
    path.write_text(text)
    expected = Caching().add_cache("a", max_items=10)
    assert Caching.from_ini(path) == expected
    assert Caching.from_ini(str(path)) == expected
    assert Caching.from_ini(io.StringIO(text)) == expected
    assert Caching.from_ini(io.BytesIO(text.encode())) == expected
    with path.open() as handle:
        assert Caching.from_ini(handle) == expected


def test_ini_missing_file() -> None:
    with raises("cannot read ini file"):
        Caching.from_ini("/no/such/file.ini")


def test_ini_crlf_line_endings() -> None:
    c = Caching.from_ini("[uwsgi]\r\ncache2 = name=a,items=10\r\ncache-expire-freq = 9\r\n")
    assert c.caches[0].name == "a" and c.expire_scan_interval == 9


def test_ini_errors_carry_line_numbers() -> None:
    with raises("line 3"):
        Caching.from_ini("[uwsgi]\ncache2 = name=a,items=10\ncache2 = name=b,items=10,bitmap=0\n")


def test_ini_namespace_and_secret() -> None:
    c = Caching.from_ini("[uwsgi]\ncache2 = name=a,items=10\n", namespace="ns", secret="s")
    assert c.namespace == "ns" and c.caches[0].secret == "s"


def test_ini_global_options() -> None:
    c = Caching.from_ini("""[uwsgi]
cache2 = name=a,items=10
cache-no-expire = true
cache-expire-freq = 17
cache-report-freed-items = 1
""")
    assert (c.no_expire, c.expire_scan_interval, c.report_freed) == (True, 17, True)


def test_ini_flags_accept_false_and_bare() -> None:
    c = Caching.from_ini("[uwsgi]\ncache-no-expire = false\ncache-report-freed-items\n")
    assert (c.no_expire, c.report_freed) == (False, True)
    with raises("cache-no-expire"):
        Caching.from_ini("[uwsgi]\ncache-no-expire = sometimes\n")


def test_ini_expire_freq_zero_means_three() -> None:
    assert Caching.from_ini("[uwsgi]\ncache-expire-freq = 0\n").expire_scan_interval == 3


def test_ini_single_option_repeated() -> None:
    assert Caching.from_ini("[uwsgi]\ncache-expire-freq = 5\ncache-expire-freq = 5\n").expire_scan_interval == 5
    with raises("set again with a different value"):
        Caching.from_ini("[uwsgi]\ncache-expire-freq = 5\ncache-expire-freq = 6\n")


def test_ini_bad_numbers() -> None:
    with raises("cache-expire-freq"):
        Caching.from_ini("[uwsgi]\ncache-expire-freq = 5s\n")
    with raises("'cache'"):
        Caching.from_ini("[uwsgi]\ncache = 1k\n")


def test_ini_legacy_cache_is_created_first() -> None:
    c = Caching.from_ini("""[uwsgi]
cache2 = name=x,items=3
cache = 5
cache-blocksize = 100
""")
    assert [o.name for o in c.caches] == ["default", "x"]
    legacy = c.caches[0]
    assert legacy == CacheOptions("default", 5, block_size=100)
    assert legacy.blocks == 5 and legacy.max_item_size == 100 and not legacy.mode_bitmap
    assert c.default_cache_name == "default"


def test_ini_every_legacy_option() -> None:
    c = Caching.from_ini("""[uwsgi]
cache = 50
cache-blocksize = 4096
cache-store = /var/cache/app.store
cache-store-sync = 7
cache-udp-server = :3031
cache-udp-server = 127.0.0.1:3032
cache-udp-node = 10.0.0.2:3031
cache-sync = 10.0.0.3:3031
cache-use-last-modified = true
""")
    assert c.caches == [CacheOptions(
        "default", 50, block_size=4096, store="/var/cache/app.store", store_sync_interval=7,
        udp_servers=(":3031", "127.0.0.1:3032"), udp_clients=("10.0.0.2:3031",), sync_from=("10.0.0.3:3031",),
        use_lastmod=True)]


def test_ini_cache_store_sync_is_the_default_storesync_of_every_cache2() -> None:
    c = Caching.from_ini("""[uwsgi]
cache2 = name=a,items=10,store=/tmp/a
cache2 = name=b,items=10,storesync=2
cache-store-sync = 9
""")
    assert [o.store_sync_interval for o in c.caches] == [9, 2]


def test_ini_legacy_option_without_cache() -> None:
    with raises("has no effect without 'cache = N'"):
        Caching.from_ini("[uwsgi]\ncache2 = name=a,items=10\ncache-blocksize = 100\n")
    with raises("cache-udp-node"):
        Caching.from_ini("[uwsgi]\ncache = 0\ncache-udp-node = h:1\n")
    assert Caching.from_ini("[uwsgi]\ncache = 0\n").caches == []


def test_ini_legacy_cache_conflicts_with_cache2_named_default() -> None:
    with raises("'default' is already configured"):
        Caching.from_ini("[uwsgi]\ncache = 5\ncache2 = name=default,items=10\n")


def test_ini_legacy_cache_validation() -> None:
    with raises("1 would hold nothing"):
        Caching.from_ini("[uwsgi]\ncache = 1\n")


def test_ini_nameless_preloads_go_to_every_cache() -> None:
    c = Caching.from_ini("""[uwsgi]
add-cache-item = hello=world
load-file-in-cache = static/a.css
load-file-in-cache-gzip = static/b.js
cache2 = name=a,items=10
cache2 = name=b,items=10
""")
    assert c.items == [PreloadItem("hello", "world", "a"), PreloadItem("hello", "world", "b")]
    assert c.files == [PreloadFile("static/a.css", False, "a"), PreloadFile("static/a.css", False, "b"),
                       PreloadFile("static/b.js", True, "a"), PreloadFile("static/b.js", True, "b")]


def test_ini_named_preloads() -> None:
    c = Caching.from_ini("""[uwsgi]
cache2 = name=a,items=10
cache2 = name=s,items=10
add-cache-item = s k1=v1
add-cache-item = s key with spaces=value with spaces=and equals
load-file-in-cache = s /srv/my file.txt
""")
    assert c.items == [PreloadItem("k1", "v1", "s"),
                       PreloadItem("key with spaces", "value with spaces=and equals", "s")]
    assert c.files == [PreloadFile("/srv/my file.txt", False, "s")]


def test_ini_preload_misplit_space_is_explained() -> None:
    with pytest.raises(ConfigError) as info:
        Caching.from_ini("[uwsgi]\ncache2 = name=a,items=10\nadd-cache-item = a=hello world\n")
    message = str(info.value)
    assert "'a=hello'" in message and "stored nowhere" in message and "line 3" in message


def test_ini_preload_errors() -> None:
    with raises("no '='"):
        Caching.from_ini("[uwsgi]\ncache2 = name=a,items=10\nadd-cache-item = a keyonly\n")
    with raises("no cache is configured"):
        Caching.from_ini("[uwsgi]\nadd-cache-item = k=v\n")
    with raises("key must not be empty"):
        Caching.from_ini("[uwsgi]\ncache2 = name=a,items=10\nadd-cache-item = =v\n")
    with raises("value must not be empty"):
        Caching.from_ini("[uwsgi]\ncache2 = name=a,items=10\nadd-cache-item = k=\n")
    with raises("load-file-in-cache is empty"):
        Caching.from_ini("[uwsgi]\ncache2 = name=a,items=10\nload-file-in-cache =\n")
    with raises("no cache has that name"):
        Caching.from_ini("[uwsgi]\ncache2 = name=a,items=10\nload-file-in-cache = b /x\n")


def test_ini_preload_too_big_for_its_cache() -> None:
    with raises("key_size=2"):
        Caching.from_ini("[uwsgi]\ncache2 = name=a,items=10,keysize=2\nadd-cache-item = key=v\n")


# ------------------------------------------------------------------------------------------
# uWSGI options out
# ------------------------------------------------------------------------------------------


def example() -> Caching:
    return (Caching()
            .add_cache("a", max_items=10)
            .add_cache("b", max_items=20, mode_bitmap=True, block_size=64)
            .set_basic_params(no_expire=True, expire_scan_interval=5, report_freed=True)
            .add_item("k", "v")
            .add_item("k2", "hello world", cache_name="b")
            .add_file("static/a.css")
            .add_file("b.js", gzip=True, cache_name="b"))


def test_to_ini() -> None:
    assert example().to_ini() == """[uwsgi]
cache2 = name=a,maxitems=10
cache2 = name=b,maxitems=20,blocksize=64,bitmap=1
cache-no-expire = true
cache-expire-freq = 5
cache-report-freed-items = true
add-cache-item = a k=v
add-cache-item = b k2=hello world
load-file-in-cache = a static/a.css
load-file-in-cache-gzip = b b.js
"""
    assert example().to_ini("app").startswith("[app]\n")


def test_to_ini_defaults_omitted() -> None:
    assert Caching().add_cache("a", max_items=10).to_ini() == "[uwsgi]\ncache2 = name=a,maxitems=10\n"
    assert Caching().to_ini() == "[uwsgi]\n"


def test_to_uwsgi_args() -> None:
    assert example().to_uwsgi_args() == [
        "--cache2", "name=a,maxitems=10",
        "--cache2", "name=b,maxitems=20,blocksize=64,bitmap=1",
        "--cache-no-expire", "--cache-expire-freq", "5", "--cache-report-freed-items",
        "--add-cache-item", "a k=v", "--add-cache-item", "b k2=hello world",
        "--load-file-in-cache", "a static/a.css", "--load-file-in-cache-gzip", "b b.js",
    ]
    assert Caching().add_cache("a", max_items=10).set_basic_params(expire_scan_interval=5).to_uwsgi_args() == [
        "--cache2", "name=a,maxitems=10", "--cache-expire-freq", "5"]


def test_output_validates_first() -> None:
    c = Caching().add_cache("a", max_items=10).add_item("k", "v", cache_name="nope")
    with raises("'nope'"):
        c.to_ini()
    with raises("'nope'"):
        c.to_uwsgi_args()


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda c: c.add_item("a=b", "v"), "contains '='"),
        (lambda c: c.add_item("k", b"\xff"), "not UTF-8"),
        (lambda c: c.add_item("k", "v\0"), "NUL"),
    ],
)
def test_inexpressible_preloads(build: Any, fragment: str) -> None:
    c = build(Caching().add_cache("a", max_items=10))
    with raises(fragment):
        c.to_ini()
    with raises(fragment):
        c.to_uwsgi_args()


def test_preload_into_cache_with_space_in_name_is_inexpressible() -> None:
    c = Caching().add_cache("my cache", max_items=10)
    assert c.to_ini() == "[uwsgi]\ncache2 = name=my cache,maxitems=10\n"  # the cache alone is fine
    c.add_item("k", "v")
    with raises("contains a space"):
        c.to_uwsgi_args()
    c2 = Caching().add_cache("my cache", max_items=10).add_file("f")
    with raises("contains a space"):
        c2.to_ini()


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda c: c.add_item("k", "trailing "), "whitespace"),
        (lambda c: c.add_item("k", "two\nlines"), "line break"),
        (lambda c: c.add_file("f "), "whitespace"),
    ],
)
def test_values_an_ini_file_would_alter(build: Any, fragment: str) -> None:
    c = build(Caching().add_cache("a", max_items=10))
    with raises(fragment):
        c.to_ini()
    c.to_uwsgi_args()  # the command line carries them unchanged


def test_quoted_whole_value_cannot_go_to_ini() -> None:
    c = Caching().add_cache('"a', max_items=10).add_item("k", 'v"')
    with raises("double quotes"):
        c.to_ini()


def test_trailing_space_in_last_cache2_value_cannot_go_to_ini() -> None:
    with raises("whitespace"):
        Caching().add_cache("a", max_items=10, store="/tmp/x ").to_ini()


def test_bad_section_name() -> None:
    with raises("section"):
        Caching().to_ini("a]b")


def test_preload_with_spaces_round_trips_through_ini() -> None:
    c = Caching().add_cache("a", max_items=10).add_item("key with space", "value with space").add_file("my file")
    assert Caching.from_ini(c.to_ini()) == c


# ------------------------------------------------------------------------------------------
# Round trips (property-based)
# ------------------------------------------------------------------------------------------

# Names and paths include the characters the cache2 escaping must handle (',', '\\', '=', ';').
_SAFE = string.ascii_letters + string.digits + "._-/,\\=;:@+é"
_names = st.text(_SAFE, min_size=1, max_size=12)
_words = st.text(_SAFE + " ", min_size=1, max_size=12).filter(lambda s: s.strip() == s)
_hosts = st.sampled_from(["127.0.0.1", "10.1.2.3", "peer.example", "[::1]"])
_ports = st.integers(1, 65535).map(str)
_client = st.builds(lambda h, p: f"{h}:{p}", _hosts, _ports)
_server = st.builds(lambda h, p: f"{h}:{p}", st.sampled_from(["", "0.0.0.0", "127.0.0.1"]), _ports)
_sync = st.one_of(_client, st.sampled_from(["/run/uwsgi.sock", "/tmp/peer,1.sock"]))
_address_lists = lambda s: st.lists(s, max_size=3).map(tuple)  # noqa: E731


@st.composite
def cache_options(draw: Any, name: Any = _names) -> CacheOptions:
    max_items = draw(st.integers(2, 5000))
    bitmap = draw(st.booleans())
    block_count = draw(st.one_of(st.none(), st.integers(max_items, max_items * 4))) if bitmap else None
    return CacheOptions(
        name=draw(name),
        max_items=max_items,
        no_expire=draw(st.booleans()),
        store=draw(st.one_of(st.none(), _words)),
        store_sync_interval=draw(st.integers(0, 100)),
        store_delete=draw(st.booleans()),
        hash_algo=draw(st.sampled_from(["djb33x", "murmur2"])),
        hash_size=draw(st.integers(1, 70000)),
        key_size=draw(st.integers(1, 65535)),
        udp_clients=draw(_address_lists(_client)),
        udp_servers=draw(_address_lists(_server)),
        block_size=draw(st.integers(1, 70000)),
        block_count=block_count,
        sync_from=draw(_address_lists(_sync)),
        mode_bitmap=bitmap,
        use_lastmod=draw(st.booleans()),
        full_silent=draw(st.booleans()),
        full_purge_lru=draw(st.booleans()),
        math_initial=draw(st.integers(-(2**63), 2**63 - 1)),
        lazy_expire=draw(st.booleans()),
        sweep_on_full=draw(st.integers(0, 1000)),
        clear_on_full=draw(st.booleans()),
    )


@st.composite
def cachings(draw: Any) -> Caching:
    # cache names without spaces or quotes so preloads can name them (see the tests above)
    options = draw(st.lists(cache_options(), max_size=4, unique_by=lambda o: o.name))
    caching = Caching(draw(st.sampled_from(["default", "other"])))
    caching.caches.extend(options)
    caching.set_basic_params(no_expire=draw(st.booleans()), expire_scan_interval=draw(st.integers(1, 100)),
                             report_freed=draw(st.booleans()))
    if not options:
        return caching
    names = st.one_of(st.none(), st.sampled_from([o.name for o in options]))
    keys = st.text(_SAFE.replace("=", "") + " ", min_size=1, max_size=8)
    for key, value, target in draw(st.lists(st.tuples(keys, _words, names), max_size=4)):
        cache = caching.cache_options(target or options[0].name)
        if len(key.encode()) > cache.key_size or len(value.encode()) > cache.max_item_size:
            continue  # would not fit: validate() rejects it (tested above)
        if draw(st.booleans()):
            key, value = key.encode(), value.encode()
        caching.add_item(key, value, cache_name=target)
    for path, gzip, target in draw(st.lists(st.tuples(_words, st.booleans(), names), max_size=3)):
        caching.add_file(path, gzip=gzip, cache_name=target)
    return caching


@settings(max_examples=300, deadline=None)
@given(cache_options())
def test_round_trip_cache2(options: CacheOptions) -> None:
    text = format_cache2(options)
    assert parse_cache2(text) == options


@settings(max_examples=200, deadline=None)
@given(cachings())
def test_round_trip_ini(caching: Caching) -> None:
    text = caching.to_ini()
    assert Caching.from_ini(text) == caching
    assert Caching.from_ini(io.StringIO(text), namespace="x") == caching


@settings(max_examples=100, deadline=None)
@given(cachings())
def test_round_trip_from_cache2(caching: Caching) -> None:
    assert Caching.from_cache2(*caching.to_cache2()).caches == caching.caches


@settings(max_examples=100, deadline=None)
@given(cachings())
def test_uwsgi_args_mirror_ini(caching: Caching) -> None:
    """Every ini line appears as an argument pair, in the same order."""
    args = caching.to_uwsgi_args()
    lines = caching.to_ini().splitlines()[1:]
    flags = {"--cache-no-expire", "--cache-report-freed-items"}
    rebuilt = []
    i = 0
    while i < len(args):
        if args[i] in flags:
            rebuilt.append(f"{args[i][2:]} = true")
            i += 1
        else:
            rebuilt.append(f"{args[i][2:]} = {args[i + 1]}")
            i += 2
    assert rebuilt == lines


def test_round_trip_with_secret() -> None:
    c = Caching(secret="s").add_cache("a", max_items=10)
    assert Caching.from_ini(c.to_ini(), secret="s") == c
    assert Caching.from_ini(c.to_ini()) != c  # the secret is never written out


def test_ini_must_be_utf8(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "latin1.ini"
    path.write_bytes(b"[uwsgi]\ncache2 = name=caf\xe9,items=10\n")
    with raises("not UTF-8"):
        Caching.from_ini(path)
    with raises("not UTF-8"):
        Caching.from_ini(io.BytesIO(path.read_bytes()))


def test_ini_bad_source_type() -> None:
    with raises("from_ini source"):
        Caching.from_ini(42)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# The split of config.py (issue 14 point 2): resolve_namespace, (option, value) pairs and
# OptionError, and the old names kept where they were
# --------------------------------------------------------------------------------------------


def test_resolve_namespace_is_public_and_one_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    from uwcache import config, options
    from uwcache.options import DEFAULT_NAMESPACE, NAMESPACE_ENV, resolve_namespace

    assert "resolve_namespace" in options.__all__
    assert config._resolve_namespace is resolve_namespace  # the private name it had in config.py
    assert resolve_namespace() == DEFAULT_NAMESPACE == "default"
    assert resolve_namespace("app-1.prod_x") == "app-1.prod_x"
    monkeypatch.setenv(NAMESPACE_ENV, "fromenv")
    assert resolve_namespace() == resolve_namespace(None) == "fromenv"
    assert resolve_namespace("explicit") == "explicit"  # an argument wins over the environment
    monkeypatch.setenv(NAMESPACE_ENV, "")
    assert resolve_namespace() == "default"
    monkeypatch.setenv(NAMESPACE_ENV, "../etc")
    with raises("namespace (from $UWCACHE_NAMESPACE) must be 1..64 characters"):
        resolve_namespace()
    for bad in ("", ".hidden", "a/b", "x" * 65, 5):
        with raises(f"namespace must be 1..64 characters of A-Z a-z 0-9 . _ - not starting with '.', got {bad!r}"):
            resolve_namespace(bad)  # type: ignore[arg-type]


def test_the_split_keeps_every_name_importable_from_config() -> None:
    import importlib

    import uwcache
    from uwcache import config, options, uwsgi_config

    near = importlib.import_module("uwcache.near")  # uwcache.near is the function

    for name in config.__all__:
        assert getattr(config, name) is not None
    for name in options.__all__:
        if name not in ("NearOptions", "RedisEndpoint", "parse_redis_url"):
            assert getattr(config, name) is getattr(options, name), name
    for name in uwsgi_config.__all__:
        assert getattr(config, name) is getattr(uwsgi_config, name) is getattr(uwcache, name), name
    for name in ("CacheOptions", "PreloadItem", "PreloadFile"):
        assert getattr(uwcache, name) is getattr(options, name) is getattr(config, name)
    # the near tier's options moved below Caching; the near module still offers them
    for name in ("NearOptions", "RedisEndpoint", "parse_redis_url"):
        assert getattr(near, name) is getattr(options, name)
    assert near.split_cache2_near is uwsgi_config.split_cache2_near
    assert sorted(options.__all__) == sorted([
        "CacheOptions", "PreloadItem", "PreloadFile", "NearOptions", "RedisEndpoint", "parse_redis_url",
        "resolve_namespace", "cache_options", "parse_size", "NAMESPACE_ENV", "DEFAULT_NAMESPACE",
        "MAX_MEMORY_BYTES", "CACHE2_KEYS", "HASH_ALGOS", "DEFAULT_GEOMETRY"])
    assert sorted(uwsgi_config.__all__) == ["format_cache2", "parse_cache2"]


def test_from_uwsgi_options_reads_pairs_after_the_ini_section() -> None:
    ini = "[uwsgi]\ncache2 = name=a,items=10\ncache-expire-freq = 7\n"
    c = Caching.from_uwsgi_options([("cache2", "name=b,items=5"), ("add-cache-item", "k=v"),
                                    ("cache-no-expire", None), ("http-socket", ":80")], ini=ini)
    assert [o.name for o in c.caches] == ["a", "b"]
    assert (c.no_expire, c.expire_scan_interval) == (True, 7)
    assert [(i.key, i.cache_name) for i in c.items] == [("k", "a"), ("k", "b")]  # nameless: every cache
    assert Caching.from_uwsgi_options([("cache2", "name=a,items=10")]).caches == [CacheOptions("a", 10)]
    with raises("(option, value) pairs"):
        Caching.from_uwsgi_options(["cache2=name=a,items=10"])  # type: ignore[list-item]


@settings(max_examples=100, deadline=None)
@given(cachings())
def test_round_trip_uwsgi_option_pairs(caching: Caching) -> None:
    assert Caching.from_uwsgi_options(caching._uwsgi_options()) == caching


def test_pair_values_are_taken_as_given() -> None:
    """Unlike an ini line's value, a pair's is not trimmed or unquoted (uWSGI's argv is not)."""
    c = Caching.from_uwsgi_options([("cache2", "name=a,items=10"), ("add-cache-item", 'a k="v" ')])
    assert c.items[0].value == '"v" '
    c = Caching.from_uwsgi_options([("cache2", "name=a,items=10")], ini='[uwsgi]\nadd-cache-item = "a k=v "  \n')
    assert c.items[0].value == "v "  # the ini line: trimmed, then one pair of quotes removed


def test_option_errors_name_the_option_line_and_value() -> None:
    from uwcache.errors import OptionError

    text = "[uwsgi]\ncache2 = name=a,items=10\ncache2 = name=b,items=10,blocksize=64k\n"
    with pytest.raises(OptionError) as info:
        Caching.from_ini(text)
    err = info.value
    assert isinstance(err, ConfigError)
    assert (err.option, err.value, err.line) == ("cache2", "name=b,items=10,blocksize=64k", 3)
    assert str(err) == f"<ini> line 3: cache2 {err.value!r}: {err.detail}"
    assert err.detail.startswith("cache2 key 'blocksize' has value '64k'")

    with pytest.raises(OptionError) as info:
        Caching.from_uwsgi_options([("cache2", "name=a,items=10"), ("cache2", "name=b,items=10,blocksize=64k")])
    err = info.value
    assert (err.option, err.value, err.line) == ("cache2", "name=b,items=10,blocksize=64k", None)
    assert str(err) == f"cache2 {err.value!r}: {err.detail}"  # the value is said once
    assert err.detail.startswith("cache2 key 'blocksize' has value '64k'")

    # every kind of per-option error carries its option: single options, repeats, preloads,
    # cache2 values that parse but do not fit the configuration, near keys
    cases = [
        ([("cache-expire-freq", "5s")], "cache-expire-freq", "expected plain decimal digits"),
        ([("cache-expire-freq", "5"), ("cache-expire-freq", "6")], "cache-expire-freq",
         "first on the pair ('cache-expire-freq', '5')"),
        ([("cache-expire-freq", str(2**31))], "cache-expire-freq", "expire_scan_interval must be an int"),
        ([("cache2", "name=a,items=10"), ("add-cache-item", "nope")], "add-cache-item", "has no '='"),
        ([("cache2", "name=a,items=10"), ("load-file-in-cache", "zz x.css")], "load-file-in-cache",
         "no cache has that name"),
        ([("cache2", "name=a,items=10"), ("cache2", "name=a,items=20")], "cache2", "already configured"),
        ([("cache2", "name=a,items=10,maxttl=5")], "cache2", "max_ttl needs near=redis://"),
        ([("add-cache-item", "k=v")], "add-cache-item", "no cache is configured"),
    ]
    for pairs, option, fragment in cases:
        with pytest.raises(OptionError) as info:
            Caching.from_uwsgi_options(pairs)
        assert (info.value.option, info.value.value, info.value.line) == (option, pairs[-1][1], None), pairs
        assert fragment in info.value.detail, (pairs, info.value.detail)
    # an ini file's out-of-range frequency names its line too
    with pytest.raises(OptionError) as info:
        Caching.from_ini(f"[uwsgi]\ncache2 = name=a,items=10\n\ncache-expire-freq = {2**31}\n")
    assert str(info.value).startswith("<ini> line 4: expire_scan_interval must be an int in 1..2147483647")
    assert (info.value.option, info.value.line) == ("cache-expire-freq", 4)


def test_option_errors_pickle() -> None:
    import pickle

    from uwcache.errors import OptionError

    err = OptionError("m", option="cache2", value="v", line=3, detail="d")
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.option, back.value, back.line, back.detail) == ("m", "cache2", "v", 3, "d")
