"""Smoke tests of the uWSGI oracle harness, pinning the claims of docs/internals/uwsgi-behaviour.md
(/work/shared/reference/uwsgi-cache.md, section 11 numbers in the test names) that the
rest of the suite relies on. Everything here runs against real uWSGI; nothing imports
uwcache.
"""

import os
import socket
import struct
import time

import pytest

import oracle
from oracle import OracleError, run_ops, run_raw, start_uwsgi_server, uwsgi_log

pytestmark = [pytest.mark.uwsgi, pytest.mark.usefixtures("uwsgi_bin")]

FULL = '*** DANGER cache "c" is FULL !!! ***'
LRU_PURGE = 'LRU item will be purged from cache "c"'


def init_line(log: str, name: str = "c") -> str:
    lines = [l for l in log.splitlines() if l.startswith(f'*** Cache "{name}" initialized:')]
    assert len(lines) == 1, log
    return lines[0]


# --------------------------------------------------------------------------- harness

def test_find_uwsgi(uwsgi_bin):
    assert os.access(uwsgi_bin, os.X_OK)
    assert oracle.find_uwsgi() == uwsgi_bin


def test_find_uwsgi_env_override(monkeypatch, uwsgi_bin):
    monkeypatch.setenv("UWCACHE_UWSGI", uwsgi_bin)
    assert oracle.find_uwsgi() == uwsgi_bin
    monkeypatch.setenv("UWCACHE_UWSGI", "/nonexistent/uwsgi")
    with pytest.raises(RuntimeError, match="UWCACHE_UWSGI"):
        oracle.find_uwsgi()


def test_roundtrip_and_pseudo_ops():
    binary = bytes(range(256))
    t0 = time.time()
    res, log = run_ops("name=c,items=10,blocksize=512", [
        ("cache_set", "bin", binary),
        ("cache_get", "bin"),
        ("cache_set", b"\xff\x00k", "v\u00e9"),         # str value goes in as UTF-8
        ("cache_get", b"\xff\x00k"),
        ("cache_keys",),
        ("cache_get", "missing"),
        ("cache_num", "missing"),
        ("nonexistent_function",),
        ("log", "oracle-log-probe"),                    # real uwsgi.log()
        ("sleep", 0.01),
        ("time",),
        ("cache_exists", "bin"),
    ], return_log=True)
    assert res[:4] == [True, binary, True, "v\u00e9".encode()]
    assert sorted(res[4]) == sorted([b"bin", b"\xff\x00k"])      # order = bucket order
    assert res[5:7] == [None, 0]
    assert res[7] == {"raises": "AttributeError"}
    assert res[8] is True
    assert res[9] is None
    assert isinstance(res[10], float) and abs(res[10] - t0) < 30
    assert res[11] is True
    assert "oracle-log-probe" in log
    assert uwsgi_log() == log
    assert "@@UWCACHE-ORACLE" not in log        # result lines are stripped
    assert init_line(log).startswith('*** Cache "c" initialized')


def test_no_ops_and_bad_config():
    assert run_ops("name=c,items=3", []) == []
    with pytest.raises(OracleError) as ei:
        run_ops("name=c,items=3,blocks=2", [("cache_get", "k")])
    assert ei.value.returncode == 1
    assert 'invalid number of cache blocks for "c", must be higher than max_items (3)' in ei.value.log
    assert ei.value.results == []


def test_stats_pseudo_op_and_full_counter():
    """#1 capacity items=2, with the stats `full` counter (needs --master, ~1 s)."""
    res, log = run_ops(["name=c,items=2", "name=b,items=2,bitmap=1"], [
        ("cache_set", "a", "1"), ("cache_set", "b", "2"), ("cache_get", "a"), ("cache_get", "b"),
        ("cache_set", "a", "1", 0, "b"), ("cache_set", "b", "2", 0, "b"),
        ("stats",),
    ], return_log=True)
    assert res[:6] == [True, None, b"1", None, True, None]
    caches = res[6]["caches"]
    assert [c["name"] for c in caches] == ["c", "b"]
    assert list(caches[0]) == ["name", "hash", "hashsize", "keysize", "max_items", "blocks",
                               "blocksize", "items", "hits", "miss", "full", "last_modified_at"]
    assert caches[0] == {"name": "c", "hash": "djb33x", "hashsize": 65536, "keysize": 2048,
                         "max_items": 2, "blocks": 2, "blocksize": 65536, "items": 1,
                         "hits": 1, "miss": 1, "full": 1, "last_modified_at": 0}
    assert (caches[1]["items"], caches[1]["full"]) == (1, 1)
    assert log.count(FULL) == 1
    assert log.count('*** DANGER cache "b" is FULL !!! ***') == 1
    assert {"cache_c": 0} in res[6]["locks"]


def test_run_raw_exit_code():
    run = run_raw(["--cache2", "name=c,items=3,hash=foo", "--pyrun", "/dev/null"])
    assert run.returncode == 1
    assert 'invalid cache hash for "c"' in run.log


def test_free_port():
    for kind, stype in (("tcp", socket.SOCK_STREAM), ("udp", socket.SOCK_DGRAM)):
        p = oracle.free_port(kind)
        with socket.socket(socket.AF_INET, stype) as s:
            s.bind(("127.0.0.1", p))
    assert oracle.free_port() != oracle.free_port()


def test_server_remote_access_and_udp():
    """start_uwsgi_server + remote `name@127.0.0.1:port` access + a UDP set packet
    (uwsgi-behaviour.md §5.1, 7.2, 11 #52)."""
    args = ["--master", "--die-on-term", "--cache2", "name=c,items=10,udp=127.0.0.1:{udp}",
            "--socket", "127.0.0.1:{port}"]
    with start_uwsgi_server(args, ready_log='udp server for cache "c"') as srv:
        assert set(srv.ports) == {"port0", "udp0"} and srv.port == srv.tcp_ports[0]
        remote = f"c@127.0.0.1:{srv.port}"
        res = run_ops([], [
            ("cache_set", "k", "remote", 0, remote),
            ("cache_get", "k", remote),
            ("cache_set", "k", "again", 0, remote),           # existing key: fails
            ("cache_exists", "k", f"c@localhost:{srv.port}"),   # no DNS: fails
            ("cache_keys", remote),
        ])
        assert res == [True, b"remote", None, None, {"raises": "ValueError"}]
        # set('u', 'val', 0) as a UDP packet (observed bytes of uwsgi-behaviour.md §5.1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(bytes.fromhex("6f0b000a01007503007661 6c010030".replace(" ", "")),
                     ("127.0.0.1", srv.ports["udp0"]))
        deadline = time.time() + 5
        while run_ops([], [("cache_get", "u", remote)]) != [b"val"]:
            assert time.time() < deadline, srv.log()
            time.sleep(0.05)
        assert srv.alive()
        assert "spawned uWSGI worker" in srv.log()
        proc = srv.proc
    assert proc.poll() is not None


# --------------------------------------------------------------------------- sizes

def test_11_to_14_size_limits():
    res = run_ops([
        "name=c,items=3",                                       # default keysize 2048
        "name=bm,blocks=1000,items=2,bitmap=1,blocksize=100",   # #12
        "name=sb,items=2,blocksize=20",                         # #13
    ], [
        ("cache_set", "k" * 2048, "v"),
        ("cache_set", "q" * 2049, "v"),
        ("cache_get", "k" * 2048),
        ("cache_set", "big", bytes(range(256)) * 390 + b"\x07" * 160, 0, "bm"),
        ("cache_get", "big", "bm"),
        ("cache_set", "bigger", b"x" * 100001, 0, "bm"),
        ("cache_set", "a", b"x" * 21, 0, "sb"),
        ("cache_set", "a", b"y" * 20, 0, "sb"),
        ("cache_get", "a", "sb"),
        # 14
        ("cache_set", "e", ""),
        ("cache_set", "", "v"),
        ("cache_set", "Z" * 65537, "v"),
        ("cache_get", "Z"),
    ])
    big = bytes(range(256)) * 390 + b"\x07" * 160
    assert len(big) == 100000
    assert res == [True, None, b"v",
                   True, big, None,
                   None, True, b"y" * 20,
                   None, None, True, b"v"]
    assert run_ops("name=c,items=3", [("cache_set", "Z" * 65537, "v"), ("cache_keys",)])[1] == [b"Z"]


def test_1_capacity_items2_single_and_bitmap_and_lru():
    res, log = run_ops(["name=c,items=2", "name=b,items=2,bitmap=1,blocksize=8",
                        "name=l,items=2,purge_lru=1"], [
        ("cache_set", "a", "1"), ("cache_set", "b", "2"), ("cache_keys",),
        ("cache_set", "a", "1", 0, "b"), ("cache_update", "b", "2", 0, "b"), ("cache_keys", "b"),
        ("cache_set", "a", "1", 0, "l"), ("cache_set", "b", "2", 0, "l"), ("cache_keys", "l"),
    ], return_log=True)
    # "any mode" holds for single-block and bitmap; with purge_lru the 2nd key evicts the 1st
    assert res == [True, None, [b"a"], True, None, [b"a"], True, True, [b"b"]]
    assert log.count(FULL) == 1
    assert log.count('*** DANGER cache "b" is FULL !!! ***') == 1
    assert log.count('LRU item will be purged from cache "l"') == 1


# --------------------------------------------------------------------------- bitmap

def test_2_bitmap_blocksize1():
    assert run_ops("name=c,blocks=4,items=2,bitmap=1,blocksize=1", [
        ("cache_update", "key1", "HELLO"), ("cache_update", "key1", "HELL"), ("cache_get", "key1"),
    ]) == [None, True, b"HELL"]


def test_3_4_bitmap_reuse_after_delete():
    cfg = "name=c,blocks=4,items=3,bitmap=1,blocksize=1"
    assert run_ops(cfg, [
        ("cache_update", "key1", "HE"), ("cache_update", "key2", "LL"), ("cache_del", "key1"),
        ("cache_update", "key1", "HEL"), ("cache_update", "key1", "HE"),
    ]) == [True, True, True, None, True]
    res, log = run_ops(cfg, [
        ("cache_update", "key1", "HE"), ("cache_update", "key1", "HELL"), ("cache_get", "key1"),
        ("cache_del", "key1"), ("cache_update", "key1", "HELL"), ("cache_get", "key1"),
    ], return_log=True)
    assert res == [True, None, b"HE", True, True, b"HELL"]
    assert log.count(FULL) == 1          # the failed bitmap update runs the full handler


def test_5_bitmap_max_value():
    assert run_ops("name=c,blocks=17,items=17,bitmap=1,blocksize=1", [
        ("cache_update", "k", "x" * 18), ("cache_update", "k", "x" * 17), ("cache_get", "k"),
    ]) == [None, True, b"x" * 17]


def test_6_to_10_bitmap_blocksize10():
    cfg = "name=c,blocks=5,items=5,bitmap=1,blocksize=10"
    # 6: capacity is 4 keys (items-1), not 5 blocks
    assert run_ops(cfg, [("cache_set", f"k{i}", "x" * 5) for i in range(5)]) == [True] * 4 + [None]
    # 7
    assert run_ops(cfg, [("cache_set", "big", "x" * 50), ("cache_del", "big")]
                   + [("cache_set", f"k{i}", "x" * 10) for i in range(5)]) == [True] * 6 + [None]
    # 8
    assert run_ops(cfg, [
        ("cache_set", "k", "x" * 40), ("cache_update", "k", "y" * 10), ("cache_get", "k"),
        ("cache_del", "k"), ("cache_update", "k", "z" * 51), ("cache_update", "k", "z" * 50),
        ("cache_get", "k"),
    ]) == [True, True, b"y" * 10, True, None, True, b"z" * 50]
    # 9, 10
    res = run_ops(cfg, [("cache_clear",)] * 100 + [("cache_set", "k", "x" * 51)]
                  + [("cache_del", "missing")] * 100)
    assert res == [True] * 100 + [None] + [None] * 100


def test_15_bitmap_blind_spot():
    ops = [("cache_set", "a", "x" * 6), ("cache_set", "b", "x"), ("cache_set", "c", "x"),
           ("cache_set", "d", "xx"), ("cache_set", "e", "x" * 6), ("cache_del", "c"),
           ("cache_set", "f", "x"), ("cache_del", "b"), ("cache_del", "d"), ("cache_del", "f"),
           ("cache_set", "g", "x" * 4), ("cache_set", "h", "xx"), ("cache_set", "i", "xx")]
    # NB: needs `bitmap=1`; the bare word `bitmap` (as written in uwsgi-behaviour.md §11 #15) is
    # ignored and leaves the cache in single-block mode, where 6-byte values do not fit.
    assert run_ops("name=c,blocks=16,items=10,blocksize=1,bitmap=1", ops) == \
        [True] * 10 + [None, True, True]
    assert run_ops("name=c,blocks=16,items=10,blocksize=1,bitmap", ops)[:2] == [None, True]


# --------------------------------------------------------------------------- semantics

def test_16_17_set_vs_update():
    assert run_ops("name=c,items=3", [
        ("cache_set", "k", "v1"), ("cache_set", "k", "v2"), ("cache_get", "k"),
        ("cache_update", "k", "v3"), ("cache_get", "k"),
        ("cache_update", "new", "n"), ("cache_get", "new"),
    ]) == [True, None, b"v1", True, b"v3", True, b"n"]


def _record(buf: bytes, slot: int, keysize: int = 8):
    """(fields dict, key) of a slot in a store file (uwsgi-behaviour.md §2.2)."""
    size = 88 + keysize
    f = struct.unpack_from("<11Q", buf, slot * size)
    names = ("flags", "keysize", "hash", "valsize", "first_block", "expires", "hits",
             "prev", "next", "lru_prev", "lru_next")
    d = dict(zip(names, f))
    return d, buf[slot * size + 88: slot * size + 88 + d["keysize"]]


def test_18_20_store_view_update_removes_ttl_and_slots(tmp_path):
    """#18 through the live store file (expires field) and #20 slot assignment."""
    store = str(tmp_path / "c.store")
    res = run_ops(f"name=c,items=4,keysize=8,blocksize=16,store={store}", [
        ("time",),
        ("cache_set", "A", "a", 100), ("read_file", store),
        ("cache_update", "A", "b"), ("read_file", store),
        ("cache_update", "A", "c", 50), ("read_file", store),
        ("cache_inc", "A", 1, 500), ("read_file", store),      # FIXEXPIRE: untouched
        ("cache_set", "B", "b"), ("cache_set", "C", "c"), ("cache_del", "B"),
        ("cache_set", "D", "d"), ("read_file", store),
    ])
    now = int(res[0])
    assert len(res[2]) == 448
    a1, key = _record(res[2], 3)
    assert key == b"A" and a1["flags"] == 0 and a1["first_block"] == 3
    assert now + 100 <= a1["expires"] <= now + 102
    assert _record(res[4], 3)[0]["expires"] == 0                 # update without TTL clears it
    e3 = _record(res[6], 3)[0]["expires"]
    assert now + 50 <= e3 <= now + 52
    assert _record(res[8], 3)[0]["expires"] == e3
    final = res[13]
    assert [_record(final, s)[1] for s in (1, 2, 3)] == [b"C", b"D", b"A"]
    assert _record(final, 0)[0]["keysize"] == 0


def test_18_update_removes_ttl_lazy():
    """#18 through the Python API: with lazy_expire, a TTL'd key that was updated with
    expires=0 survives its original TTL, an untouched one does not (~1 s)."""
    assert run_ops("name=c,items=10,lazy_expire=1", [
        ("cache_set", "k", "v", 1), ("cache_set", "j", "v", 1), ("cache_update", "k", "v2"),
        ("sleep", 1.05),
        ("cache_get", "k"), ("cache_get", "j"), ("cache_exists", "j"),
    ]) == [True, True, True, None, b"v2", None, None]


def test_21_keys_order_hashsize1():
    assert run_ops("name=c,items=10,hashsize=1", [
        *[("cache_set", k, "v") for k in "zyxw"], ("cache_keys",),
        ("cache_del", "y"), ("cache_set", "v", "v"), ("cache_keys",),
    ]) == [True] * 4 + [[b"z", b"y", b"x", b"w"], True, True, [b"z", b"x", b"w", b"v"]]


def test_22_lru():
    ops = [("cache_set", "KEY1", "x"), ("cache_set", "KEY2", "x"), ("cache_set", "KEY3", "x"),
           ("cache_get", "KEY1"), ("cache_get", "KEY3")]
    for i in range(4, 100):
        ops += [("cache_set", f"KEY{i}", "x"), ("cache_get", f"KEY{i - 2}")]
    res, log = run_ops("name=c,items=3,blocksize=20,purge_lru=1", ops, return_log=True)
    assert res[:5] == [True, True, True, None, b"x"]
    assert res[5::2] == [True] * 96
    assert res[6::2] == [None] * 96
    assert log.count(LRU_PURGE) == 97
    assert FULL not in log


def test_24_lru_plus_lazy_kills_ttl_items():
    assert run_ops("name=c,items=3,purge_lru=1,lazy_expire=1", [
        ("cache_set", "a", "x", 60), ("cache_get", "a"), ("cache_set", "b", "x", 0),
        ("cache_get", "b"),
    ]) == [True, None, True, b"x"]


# --------------------------------------------------------------------------- math

def test_30_31_inc_single_block_vs_bitmap():
    res = run_ops(["name=c,items=3", "name=b,items=3,bitmap=1,blocksize=8"],
                  [("cache_inc", "c")] * 3 + [("cache_num", "c"), ("cache_get", "c")]
                  + [("cache_inc", "c", 1, 0, "b")] * 3 + [("cache_num", "c", "b")])
    assert res == [True] * 3 + [3, b"\x03" + b"\x00" * 7] + [True] * 3 + [1]


def test_32_math_on_missing_keys():
    assert run_ops("name=c,items=10", [
        ("cache_dec", "d"), ("cache_num", "d"), ("cache_mul", "m", 3), ("cache_num", "m"),
        ("cache_div", "v"), ("cache_num", "v"), ("cache_inc", "i"), ("cache_num", "i"),
    ]) == [True, -1, True, 0, True, 0, True, 1]
    assert run_ops("name=c,items=10,math_initial=10", [
        ("cache_inc", "a", 1), ("cache_num", "a"), ("cache_mul", "b", 2), ("cache_num", "b"),
        ("cache_div", "c", 3), ("cache_num", "c"), ("cache_dec", "d", 1), ("cache_num", "d"),
    ]) == [True, 11, True, 20, True, 3, True, 9]


def test_33_34_35_c_arithmetic():
    res = run_ops("name=c,items=10", [
        ("cache_inc", "x", -7), ("cache_div", "x", 2), ("cache_num", "x"),
        ("cache_div", "x", 0), ("cache_num", "x"), ("cache_get", "x"),
        ("cache_inc", "o", 2**63 - 1), ("cache_inc", "o", 1), ("cache_num", "o"),
        ("cache_inc", "p", 2**63),                                  # C long overflow
        ("cache_set", "s", "AAAAA"), ("cache_num", "s"), ("cache_inc", "s", 1),
        ("cache_get", "s"), ("cache_num", "s"),
    ])
    assert res == [
        True, True, -3, True, 0, b"\x00" * 8,
        True, True, -2**63, {"raises": "OverflowError"},
        True, 0, True, b"BAAAA\x00\x00\x00", int.from_bytes(b"AAAAA\x00\x00\x00", "little") + 1,
    ]


# --------------------------------------------------------------------------- Python API

def test_36_37_python_surface():
    res = run_ops(["name=s,items=10", "name=t,items=3"], [
        ("cache_set", "hello", "v", 0, "s"),
        ("cache_get", b"hello", "s"),
        ("cache_get", "hello", b"s"),
        ("cache_set", "x", bytearray(b"abc"), 0, "s"),
        ("cache_get", "hello", "unknown"),
        ("cache_set", "k", "v", 0, "unknown"),
        ("cache_num", "hello", "unknown"),
        ("cache_clear", "unknown"),
        ("cache_keys", "zzz"),
        ("cache_set", "k", "v", "1"),
        ("cache_set", "k", "v", 0, "s\0x"),
        ("cache_get", "hello"),                  # default cache = first one
        ("cache_keys",),
        ("cache_set", memoryview(b"mv"), "v", 0, "t"),
        ("cache_get", "mv", "t"),
    ])
    assert res == [True, b"v", {"raises": "TypeError"}, {"raises": "TypeError"},
                   None, None, 0, None, {"raises": "ValueError"},
                   {"raises": "TypeError"}, {"raises": "ValueError"},
                   b"v", [b"hello"], True, b"v"]
    assert "must be str, not bytes" in uwsgi_log()
    assert "must be read-only bytes-like object, not bytearray" in uwsgi_log()
    assert "no local uWSGI cache available" in uwsgi_log()
    # 37: no cache at all
    assert run_ops([], [
        ("cache_set", "a", "b"), ("cache_get", "a"), ("cache_num", "a"), ("cache_exists", "a"),
        ("cache_clear",), ("cache_inc", "a"), ("cache_del", "a"), ("cache_update", "a", "b"),
        ("cache_keys",),
    ]) == [None, None, 0, None, None, None, None, None, {"raises": "ValueError"}]


# --------------------------------------------------------------------------- config (1.2, 38, 39)

@pytest.mark.parametrize("cfg, bitmap_bytes", [
    ("name=c,items=8,bitmap=0", 1),
    ("name=c,items=8,bitmap=false", 1),
    ("name=c,items=8,bitmap=", 1),
    ("name=c,items=8,bitmap", 0),
    ("name=c,items=8", 0),
    ("name=c,items=5,blocks=9,blocksize=10,bitmap=1", 2),
])
def test_38_bitmap_flag_parsing(cfg, bitmap_bytes):
    _, log = run_ops(cfg, [], return_log=True)
    assert init_line(log).endswith(f"bitmap: {bitmap_bytes} bytes) preallocated ***")


def test_1_2_init_line_and_aliases():
    res, log = run_ops(["name=c,items=4,keysize=8,blocksize=16",
                        "name=m,max_items=5,key_size=8,blocksize=64k",
                        "name=x,maxitems=100,keysize=65535,blocksize=65536",
                        "name=r,items=3,hash=rr", "name=w,items=3,hash=murmur2"],
                       [("cache_set", "k", "v", 0, "w"), ("cache_get", "k", "w")],
                       return_log=True)
    assert res == [True, b"v"]
    assert init_line(log, "c") == ('*** Cache "c" initialized: 0MB (key: 96 bytes, keys: 384 '
                                   'bytes, data: 64 bytes, bitmap: 0 bytes) preallocated ***')
    # `64k` parses as 64; blocks default to max_items
    assert "(key: 96 bytes, keys: 480 bytes, data: 320 bytes, bitmap: 0 bytes)" in init_line(log, "m")
    # MB = filesize // 1 MiB (13115900 bytes -> 12)
    assert init_line(log, "x").startswith('*** Cache "x" initialized: 12MB (key: 65623 bytes')


@pytest.mark.parametrize("cfg, message", [
    ("name=c,items=3,blocks=2", 'invalid number of cache blocks for "c", must be higher than max_items (3)'),
    ("name=c,items=3,keysize=65536", 'invalid cache keysize for "c"'),
    ("name=c,items=3,keysize=0", 'invalid cache keysize for "c"'),
    ("name=c,items=0", "you have to specify the maximum number of cache items"),
    ("name=c,max-items=5", "you have to specify the maximum number of cache items"),
    ("items=3", "you have to specify a cache name"),
    ("name=c,items=3,hash=foo", 'invalid cache hash for "c"'),
    ("name=c,items=3,blocksize=0", 'invalid cache blocksize for "c"'),
    ("name=c,items=3,hashsize=0", 'invalid cache hashsize for "c"'),
])
def test_39_config_errors_exit(cfg, message):
    run = run_raw(["--cache2", cfg, "--pyrun", "/dev/null"])
    assert run.returncode == 1
    assert message in run.log


# --------------------------------------------------------------------------- failures

def test_crash_keeps_partial_results():
    """#53 first half: INT64_MIN / -1 traps (SIGFPE) and kills the process; the harness
    reports the results obtained before the crash."""
    with pytest.raises(OracleError) as ei:
        run_ops("name=c,items=3", [("cache_inc", "k", -2**63), ("cache_div", "k", -1),
                                   ("cache_get", "k")])
    assert ei.value.results == [True]
    assert ei.value.returncode != 0


def test_timeout_kills_and_keeps_partial_results():
    t0 = time.monotonic()
    with pytest.raises(OracleError, match="did not finish within") as ei:
        run_ops("name=c,items=3", [("cache_set", "a", "b"), ("sleep", 30)], timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert ei.value.results == [True]


# --------------------------------------------------------------------------- store image (2.2-2.4, 19)

def _djb33x(key: bytes) -> int:          # uwsgi-behaviour.md §2.4 pseudocode
    h = 5381
    for b in key:
        c = b - 256 if b >= 0x80 else b
        h = ((h * 33) ^ (c & 0xFFFFFFFF)) & 0xFFFFFFFF
    return h


def _murmur2_uwsgi(key: bytes) -> int:   # uwsgi-behaviour.md §2.4 pseudocode (uWSGI variant)
    m = 0x5BD1E995
    n = len(key)
    h = n & 0xFFFFFFFF
    i = 0
    while n >= 4:
        k = int.from_bytes(key[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
        i += 4
        n -= 4

    def s(b):
        return (b - 256 if b >= 0x80 else b) & 0xFFFFFFFF
    if n == 3:
        h ^= (s(key[2]) << 16) & 0xFFFFFFFF
    if n >= 2:
        h ^= (s(key[1]) << 8) & 0xFFFFFFFF
    if n >= 1:
        h ^= s(key[0])
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def _live_records(buf: bytes, items: int, keysize: int, blocksize: int) -> dict:
    out = {}
    for slot in range(1, items):
        d, key = _record(buf, slot, keysize)
        if d["keysize"]:
            off = (88 + keysize) * items + d["first_block"] * blocksize
            out[key] = (d, buf[off:off + blocksize], slot)
    return out


def test_store_image_hashes_flags_stale_bytes(tmp_path):
    import random
    rnd = random.Random(1234)
    fixed_d = {b"ab": 5860902, b"k1": 5861311, b"hello": 178056679,
               b"\xc3\xa9\xc3\xbf": 2085995667}
    fixed_m = {b"a": 2456313694, b"ab": 446775395, b"abc": 324500635, b"abcd": 646393889,
               b"abcde": 155512662, b"hello": 2484800906, b"\xc3\xa9": 547727751,
               b"\xc3\xa9\xc3\xa9": 2809265621, b"x\xc3\xbf\xc3\xbe": 1855193583}
    rand_keys = {bytes(rnd.randrange(1, 256) for _ in range(rnd.randrange(1, 16)))
                 for _ in range(40)}
    keys_d = list(fixed_d) + sorted(rand_keys)
    keys_m = list(fixed_m) + sorted(rand_keys)
    sd, sm = str(tmp_path / "d"), str(tmp_path / "m")
    items = 64
    ops = [("cache_set", k, "v", 0, "d") for k in keys_d]
    ops += [("cache_set", k, "v", 0, "m") for k in keys_m]
    ops += [("cache_inc", "i", 1, 0, "d"), ("cache_dec", "e", 1, 0, "d"),
            ("cache_mul", "ml", 2, 0, "d"), ("cache_div", "dv", 2, 0, "d"),
            ("cache_update", "u", "xyz", 0, "d"), ("cache_update", "u", "zz", 0, "d"),
            ("cache_get", "u", "d"), ("cache_get", "hello", "d"), ("cache_get", "hello", "d"),
            ("cache_del", "k1", "d"),
            ("read_file", sd), ("read_file", sm)]
    res = run_ops([f"name=d,items={items},keysize=16,blocksize=16,store={sd}",
                   f"name=m,items={items},keysize=16,blocksize=16,hash=murmur2,store={sm}"], ops)
    assert all(r is True for r in res[:len(keys_d) + len(keys_m) + 6])
    assert res[-6:-3] == [b"zz", b"v", b"v"]
    d = _live_records(res[-2], items, 16, 16)
    m = _live_records(res[-1], items, 16, 16)
    for k, h in fixed_d.items():
        if k != b"k1":
            assert d[k][0]["hash"] == h, k
    for k, h in fixed_m.items():
        assert m[k][0]["hash"] == h, k
    for k in rand_keys:
        assert d[k][0]["hash"] == _djb33x(k), k
        assert m[k][0]["hash"] == _murmur2_uwsgi(k), k
    for k, h in fixed_d.items():
        assert _djb33x(k) == h
    for k, h in fixed_m.items():
        assert _murmur2_uwsgi(k) == h
    # 2.3 stored flags; 2.13 math values; hits; 19 stale tail bytes
    assert {k: hex(d[k][0]["flags"]) for k in (b"i", b"e", b"ml", b"dv", b"u", b"hello")} == {
        b"i": "0x232", b"e": "0x252", b"ml": "0x292", b"dv": "0x312", b"u": "0x2", b"hello": "0x0"}
    assert d[b"i"][1][:8] == (1).to_bytes(8, "little")
    assert d[b"e"][1][:8] == b"\xff" * 8
    assert d[b"u"][1][:4] == b"zzz\x00" and d[b"u"][0]["valsize"] == 2
    assert d[b"hello"][0]["hits"] == 2 and d[b"u"][0]["hits"] == 1
    # 2.2: delete zeroes keysize/valsize/hash/prev/next/expires only. k1 was created
    # 2nd, so it sat in slot items-2 (2.6); its first_block and key bytes stay (stale)
    assert b"k1" not in d
    rec, key_bytes = _record(res[-2], items - 2, 16)
    assert (rec["keysize"], rec["valsize"], rec["hash"], rec["expires"]) == (0, 0, 0, 0)
    assert rec["first_block"] == items - 2
    assert res[-2][(items - 2) * 104 + 88:(items - 2) * 104 + 90] == b"k1"
