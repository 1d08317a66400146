"""Tests of the sans-IO wire codec (uwcache.wire): byte-exact examples from the uWSGI
cache reference (sections 5, 6, 7), round trips, fuzzing and the signed envelope."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uwcache import wire
from uwcache.wire import (
    BadSignature,
    DumpInfo,
    Header,
    MagicReply,
    MagicRequest,
    Malformed,
    Oversized,
    PacketReader,
    ReplayGuard,
    Truncated,
    UdpDelete,
    UdpSet,
    WireError,
)

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# composite strategies cost more per example
FUZZ_COMPOSITE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND = settings(max_examples=75, deadline=None)

keys = st.binary(min_size=1, max_size=64)
values = st.binary(max_size=256)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
SECRET = b"correct horse battery staple"
NOW = 1_795_841_561


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --------------------------------------------------------------------------- errors


def test_error_hierarchy():
    for cls in (Truncated, Malformed, Oversized, BadSignature):
        assert issubclass(cls, WireError)
    assert issubclass(WireError, ValueError)
    from uwcache.errors import CacheError

    assert issubclass(WireError, CacheError)


# --------------------------------------------------------------------------- packets


def test_encode_packet_header():
    assert wire.encode_packet(6, b"c") == h("6f 01 00 06 63")
    assert wire.encode_packet(0, b"", modifier1=0) == h("00 00 00 00")
    assert wire.encode_packet(17, b"x" * 0x1234)[:4] == h("6f 34 12 11")


def test_encode_packet_refuses_oversized_body():
    wire.encode_packet(1, b"a" * 65535)
    with pytest.raises(Oversized, match="65535"):
        wire.encode_packet(1, b"a" * 65536)


@pytest.mark.parametrize("mod", [-1, 256])
def test_encode_packet_modifier_range(mod):
    with pytest.raises(Malformed):
        wire.encode_packet(mod, b"")
    with pytest.raises(Malformed):
        wire.encode_packet(0, b"", modifier1=mod)


def test_decode_header_and_split():
    assert wire.decode_header(h("6f 15 00 11")) == Header(111, 21, 17)
    with pytest.raises(Truncated):
        wire.decode_header(b"\x6f\x00\x00")
    header, body, rest = wire.split_packet(h("6f 02 00 05 61 62 63 64"))
    assert (header, body, rest) == (Header(111, 2, 5), b"ab", b"cd")
    with pytest.raises(Truncated):
        wire.split_packet(h("6f 05 00 05 61 62"))


@ROUND
@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=300), st.binary(max_size=20))
def test_packet_round_trip(mod1, mod2, body, rest):
    packet = wire.encode_packet(mod2, body, modifier1=mod1)
    assert wire.split_packet(packet + rest) == (Header(mod1, len(body), mod2), body, rest)


# --------------------------------------------------------------------------- vars


def test_encode_vars_bytes_exact():
    assert wire.encode_vars([("cmd", "get"), (b"key", b"k")]) == (
        h("03 00") + b"cmd" + h("03 00") + b"get" + h("03 00") + b"key" + h("01 00") + b"k"
    )
    assert wire.encode_vars([("size", 7)]) == h("04 00") + b"size" + h("01 00") + b"7"
    assert wire.encode_vars([("k", "")]) == h("01 00 6b 00 00")
    assert wire.encode_vars([("k", "é")]) == h("01 00 6b 02 00 c3 a9")


def test_encode_vars_refuses_bad_input():
    with pytest.raises(Malformed):
        wire.encode_vars([(b"", b"x")])
    with pytest.raises(TypeError):
        wire.encode_vars([(b"k", True)])
    with pytest.raises(Malformed):
        wire.encode_vars([(b"k", -1)])
    with pytest.raises(Oversized, match="65535"):
        wire.encode_vars([(b"k", b"v" * 65536)])


def test_decode_vars_last_wins_and_errors():
    body = wire.encode_vars([("a", "1"), ("b", "2"), ("a", "3")])
    assert wire.decode_vars(body) == {b"a": b"3", b"b": b"2"}
    assert wire.decode_var_list(body) == [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]
    assert wire.decode_vars(b"") == {}
    zero_key = body + h("00 00 00 00")
    with pytest.raises(Malformed):
        wire.decode_vars(zero_key)
    assert wire.decode_vars(zero_key, strict=False) == {b"a": b"3", b"b": b"2"}
    for cut in range(1, 9):  # every truncation of a trailing var
        broken = body + wire.encode_vars([("zz", "yyy")])[:cut]
        with pytest.raises(Truncated):
            wire.decode_vars(broken)
        assert wire.decode_vars(broken, strict=False) == {b"a": b"3", b"b": b"2"}


pairs_st = st.lists(st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40)), max_size=8)


@ROUND
@given(pairs_st)
def test_vars_round_trip(pairs):
    body = wire.encode_vars(pairs)
    assert wire.decode_var_list(body) == pairs
    assert wire.decode_vars(body) == dict(pairs)


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_decode_vars(data):
    try:
        strict = wire.decode_var_list(data)
    except WireError:
        strict = None
    lenient = wire.decode_var_list(data, strict=False)
    if strict is not None:
        assert lenient == strict
        assert wire.encode_vars(strict) == data
    else:  # what parsed is a valid prefix
        assert data.startswith(wire.encode_vars(lenient))


# --------------------------------------------------------------------------- arrays


def test_array():
    body = wire.encode_array([b"key", b"", b"value"])
    assert body == h("03 00") + b"key" + h("00 00") + h("05 00") + b"value"
    assert wire.decode_array(body) == [b"key", b"value"]
    with pytest.raises(Truncated):
        wire.decode_array(body + h("05 00 61"))
    assert wire.decode_array(body + h("05"), strict=False) == [b"key", b"value"]


@ROUND
@given(st.lists(st.binary(max_size=30), max_size=6))
def test_array_round_trip(items):
    assert wire.decode_array(wire.encode_array(items)) == [i for i in items if i]


@FUZZ
@given(st.binary(max_size=100))
def test_fuzz_decode_array(data):
    try:
        wire.decode_array(data)
    except WireError:
        pass
    wire.decode_array(data, strict=False)


# --------------------------------------------------------------------------- UDP replication

SET_K_VAL = h("6f 0b 00 0a 01 00 6b 03 00 76 61 6c 01 00 30")
DEL_K = h("6f 03 00 0b 01 00 6b")
DEL_K_PADDED = h("6f 05 00 0b 01 00 6b 00 00")


def test_udp_set_bytes_exact():  # uwsgi-behaviour.md §5.1
    assert wire.encode_udp_set(b"k", b"val", 0) == SET_K_VAL
    assert wire.encode_udp_set("k", "val") == SET_K_VAL
    packet = wire.encode_udp_set(b"k", b"val", 1795841591)
    assert packet.endswith(h("0a 00") + b"1795841591")
    assert packet[:4] == h("6f 14 00 0a")


def test_udp_delete_bytes_exact():  # uwsgi-behaviour.md §5.1 and 5.4
    assert wire.encode_udp_delete(b"k", pad=False) == DEL_K
    assert wire.encode_udp_delete(b"k") == DEL_K_PADDED


def test_decode_udp_accepts_both_delete_forms():
    assert wire.decode_udp(DEL_K) == UdpDelete(b"k")
    assert wire.decode_udp(DEL_K_PADDED) == UdpDelete(b"k")


def test_decode_udp_set_with_and_without_expires():
    assert wire.decode_udp(SET_K_VAL) == UdpSet(b"k", b"val", 0)
    no_expires = h("6f 08 00 0a 01 00 6b 03 00 76 61 6c")
    assert wire.decode_udp(no_expires) == UdpSet(b"k", b"val", 0)
    assert wire.decode_udp(wire.encode_udp_set(b"k", b"", 42)) == UdpSet(b"k", b"", 42)
    leading_zero = h("6f 0d 00 0a 01 00 6b 03 00 76 61 6c 03 00 30 30 37")
    assert wire.decode_udp(leading_zero) == UdpSet(b"k", b"val", 7)


def _udp(mod2: int, body: bytes, mod1: int = 111, datasize: int | None = None) -> bytes:
    size = len(body) if datasize is None else datasize
    return struct.pack("<BHB", mod1, size, mod2) + body


@pytest.mark.parametrize(
    "datagram, error",
    [
        (b"", Truncated),
        (h("6f 00"), Truncated),
        (_udp(10, SET_K_VAL[4:], mod1=0), Malformed),  # wrong modifier1
        (_udp(10, SET_K_VAL[4:], datasize=10), Malformed),  # datasize < len-4
        (_udp(10, SET_K_VAL[4:], datasize=12), Truncated),  # datasize > len-4
        (_udp(12, SET_K_VAL[4:]), Malformed),  # unknown modifier2
        (_udp(17, SET_K_VAL[4:]), Malformed),
        (_udp(11, b""), Truncated),  # no key length
        (_udp(11, h("01")), Truncated),
        (_udp(11, h("05 00 6b")), Truncated),  # key overrun
        (_udp(11, h("00 00")), Malformed),  # empty key (uWSGI clear storm)
        (_udp(11, h("00 00 00 00")), Malformed),
        (_udp(11, h("01 00 6b 00")), Malformed),  # odd trailing byte
        (_udp(11, h("01 00 6b 01 00")), Malformed),  # pad not zero
        (_udp(11, h("01 00 6b 00 00 00")), Malformed),
        (_udp(10, h("00 00 03 00 76 61 6c")), Malformed),  # empty key
        (_udp(10, h("01 00 6b")), Truncated),  # no value length
        (_udp(10, h("01 00 6b 04 00 76 61 6c")), Truncated),  # value overrun
        (_udp(10, h("01 00 6b 03 00 76 61 6c 01")), Truncated),  # half expires length
        (_udp(10, h("01 00 6b 03 00 76 61 6c 02 00 31")), Truncated),  # expires overrun
        (_udp(10, h("01 00 6b 03 00 76 61 6c 00 00")), Malformed),  # empty expires
        (_udp(10, h("01 00 6b 03 00 76 61 6c 02 00 31 78")), Malformed),  # non-digit
        (_udp(10, h("01 00 6b 03 00 76 61 6c 02 00 2d 31")), Malformed),  # sign
        (_udp(10, h("01 00 6b 03 00 76 61 6c 01 00 30 ff")), Malformed),  # trailing byte
        (_udp(10, h("01 00 6b 03 00 76 61 6c 14 00") + b"18446744073709551616"), Malformed),
        (_udp(10, h("01 00 6b 03 00 76 61 6c 15 00") + b"1" * 21), Malformed),
    ],
)
def test_decode_udp_rejects(datagram, error):
    with pytest.raises(error):
        wire.decode_udp(datagram)


def test_decode_udp_max_expires():
    packet = wire.encode_udp_set(b"k", b"v", 2**64 - 1)
    assert wire.decode_udp(packet).expires == 2**64 - 1


def test_udp_refuses_oversized():
    with pytest.raises(Oversized, match="65535.*truncate"):
        wire.encode_udp_set(b"k" * 65536, b"v")
    with pytest.raises(Oversized, match="65535"):
        wire.encode_udp_set(b"k", b"v" * 65536)
    with pytest.raises(Oversized, match="65535"):
        wire.encode_udp_delete(b"k" * 65536)
    # 4 + 2+1 + 2+n + 2+1 = 12 + n bytes: the largest value that fits is 65495
    assert len(wire.encode_udp_set(b"k", b"v" * 65495)) == 65507
    with pytest.raises(Oversized, match="65507"):
        wire.encode_udp_set(b"k", b"v" * 65496)
    with pytest.raises(Oversized, match="65507"):
        wire.encode_udp_delete(b"k" * 65500)  # 4 + 2 + n + 2 pad bytes
    assert len(wire.encode_udp_delete(b"k" * 65499)) == 65507


def test_udp_refuses_bad_arguments():
    with pytest.raises(Malformed):
        wire.encode_udp_set(b"", b"v")
    with pytest.raises(Malformed):
        wire.encode_udp_delete(b"")
    with pytest.raises(Malformed):
        wire.encode_udp_set(b"k", b"v", -1)
    with pytest.raises(Malformed):
        wire.encode_udp_set(b"k", b"v", 2**64)
    with pytest.raises(TypeError):
        wire.encode_udp_set(b"k", 5, 0)  # type: ignore[arg-type]


@ROUND
@given(keys, values, u64)
def test_udp_set_round_trip(key, value, expires):
    assert wire.decode_udp(wire.encode_udp_set(key, value, expires)) == UdpSet(key, value, expires)


@ROUND
@given(keys, st.booleans())
def test_udp_delete_round_trip(key, pad):
    assert wire.decode_udp(wire.encode_udp_delete(key, pad=pad)) == UdpDelete(key)


def _reencode(msg):
    if isinstance(msg, UdpSet):
        return wire.encode_udp_set(msg.key, msg.value, msg.expires)
    return wire.encode_udp_delete(msg.key)


@FUZZ
@given(st.binary(max_size=80))
def test_fuzz_decode_udp_random(data):
    try:
        msg = wire.decode_udp(data)
    except WireError:
        return
    assert wire.decode_udp(_reencode(msg)) == msg


@FUZZ_COMPOSITE
@given(
    st.one_of(
        st.builds(wire.encode_udp_set, keys, values, u64),
        st.builds(wire.encode_udp_delete, keys, pad=st.booleans()),
    ),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=3),
    st.integers(-3, 3),
)
def test_fuzz_decode_udp_mutated(packet, flips, resize):
    data = bytearray(packet)
    for pos, byte in flips:
        data[pos % len(data)] = byte
    if resize > 0:
        data += b"\0" * resize
    elif resize < 0:
        del data[resize:]
    try:
        msg = wire.decode_udp(bytes(data))
    except WireError:
        return
    assert wire.decode_udp(_reencode(msg)) == msg


# --------------------------------------------------------------------------- signed envelope


def test_signed_layout_is_as_documented():
    inner = wire.encode_udp_set(b"k", b"val", 0)
    nonce = bytes(range(8))
    signed = wire.sign_udp(inner, SECRET, timestamp=NOW, nonce=nonce)
    datasize = 2 + 8 + 8 + len(inner) + 32
    expected = struct.pack("<BHB", 111, datasize, 110) + struct.pack("<HQ", 1, NOW) + nonce + inner
    expected += hmac.new(SECRET, expected, hashlib.sha256).digest()
    assert signed == expected
    assert wire.is_signed(signed) and not wire.is_signed(inner)
    assert wire.verify_udp(signed, SECRET, now=NOW) == inner


def test_signed_and_unsigned_cannot_be_confused():
    inner = wire.encode_udp_delete(b"k")
    signed = wire.sign_udp(inner, SECRET, timestamp=NOW)
    with pytest.raises(Malformed, match="verify_udp"):
        wire.decode_udp(signed)  # a receiver without the secret refuses it
    with pytest.raises(BadSignature, match="not a signed"):
        wire.verify_udp(inner, SECRET, now=NOW)  # a receiver with one refuses unsigned
    with pytest.raises(BadSignature):
        wire.verify_udp(wire.encode_udp_set(b"k" * 60, b"v"), SECRET, now=NOW)


def test_signed_random_nonce_differs():
    inner = wire.encode_udp_delete(b"k")
    a = wire.sign_udp(inner, SECRET, timestamp=NOW)
    b = wire.sign_udp(inner, SECRET, timestamp=NOW)
    assert a != b
    assert wire.verify_udp(a, SECRET, now=NOW) == wire.verify_udp(b, SECRET, now=NOW) == inner


def test_signed_tamper_every_byte():
    inner = wire.encode_udp_set(b"key", b"value", 123)
    signed = wire.sign_udp(inner, SECRET, timestamp=NOW, nonce=b"N" * 8)
    for pos in range(len(signed)):
        for delta in (1, 0x80):
            tampered = bytearray(signed)
            tampered[pos] ^= delta
            with pytest.raises(BadSignature):
                wire.verify_udp(bytes(tampered), SECRET, now=NOW)
    for cut in (1, 32, len(signed) - 4):
        with pytest.raises(BadSignature):
            wire.verify_udp(signed[:-cut], SECRET, now=NOW)
    with pytest.raises(BadSignature):
        wire.verify_udp(signed + b"\0", SECRET, now=NOW)


def test_signed_wrong_secret():
    signed = wire.sign_udp(wire.encode_udp_delete(b"k"), SECRET, timestamp=NOW)
    with pytest.raises(BadSignature, match="mismatch"):
        wire.verify_udp(signed, SECRET + b"!", now=NOW)
    with pytest.raises(ValueError):
        wire.verify_udp(signed, b"", now=NOW)
    with pytest.raises(ValueError):
        wire.sign_udp(wire.encode_udp_delete(b"k"), b"", timestamp=NOW)


def test_signed_stale_and_future():
    signed = wire.sign_udp(wire.encode_udp_delete(b"k"), SECRET, timestamp=NOW)
    assert wire.verify_udp(signed, SECRET, now=NOW + 30)
    assert wire.verify_udp(signed, SECRET, now=NOW - 30)
    with pytest.raises(BadSignature, match="stale"):
        wire.verify_udp(signed, SECRET, now=NOW + 31)
    with pytest.raises(BadSignature, match="future"):
        wire.verify_udp(signed, SECRET, now=NOW - 31)
    assert wire.verify_udp(signed, SECRET, now=NOW + 300, max_skew=300)
    with pytest.raises(BadSignature, match="stale"):
        wire.verify_udp(signed, SECRET, now=NOW + 1, max_skew=0)


def test_signed_replay_guard():
    guard = ReplayGuard(max_skew=30)
    inner = wire.encode_udp_set(b"k", b"v")
    signed = wire.sign_udp(inner, SECRET, timestamp=NOW)
    assert wire.verify_udp(signed, SECRET, now=NOW, replay_guard=guard) == inner
    with pytest.raises(BadSignature, match="replay"):
        wire.verify_udp(signed, SECRET, now=NOW + 5, replay_guard=guard)
    # same content, same second, new nonce: a legitimate repeat
    again = wire.sign_udp(inner, SECRET, timestamp=NOW)
    assert wire.verify_udp(again, SECRET, now=NOW, replay_guard=guard) == inner
    # once the window has passed the guard forgets, and the timestamp check takes over
    later = wire.sign_udp(inner, SECRET, timestamp=NOW + 100)
    wire.verify_udp(later, SECRET, now=NOW + 100, replay_guard=guard)
    assert len(guard) == 1
    with pytest.raises(BadSignature, match="stale"):
        wire.verify_udp(signed, SECRET, now=NOW + 100, replay_guard=guard)


def test_replay_guard_window_must_cover_max_skew():
    signed = wire.sign_udp(wire.encode_udp_delete(b"k"), SECRET, timestamp=NOW)
    with pytest.raises(ValueError, match="max_skew"):
        wire.verify_udp(signed, SECRET, now=NOW, max_skew=60, replay_guard=ReplayGuard(30))


def test_replay_guard_bounded():
    guard = ReplayGuard(max_skew=30, max_entries=3)
    for i in range(10):
        guard.check(NOW, i.to_bytes(8, "little"), NOW)
    assert len(guard) == 3
    with pytest.raises(BadSignature):
        guard.check(NOW, (9).to_bytes(8, "little"), NOW)


def test_signed_version_and_arguments():
    inner = wire.encode_udp_delete(b"k")
    signed = bytearray(wire.sign_udp(inner, SECRET, timestamp=NOW))
    signed[4] = 2  # version 2, re-MACed: still refused
    signed[-32:] = hmac.new(SECRET, bytes(signed[:-32]), hashlib.sha256).digest()
    with pytest.raises(BadSignature, match="version"):
        wire.verify_udp(bytes(signed), SECRET, now=NOW)
    with pytest.raises(Malformed, match="nonce"):
        wire.sign_udp(inner, SECRET, timestamp=NOW, nonce=b"short")
    with pytest.raises(Malformed):
        wire.sign_udp(inner, SECRET, timestamp=-1)
    with pytest.raises(WireError):
        wire.sign_udp(b"not a datagram", SECRET, timestamp=NOW)


def test_signed_oversized():
    big = wire.encode_udp_set(b"k", b"v" * 65495)  # a full unsigned datagram
    with pytest.raises(Oversized, match="65507"):
        wire.sign_udp(big, SECRET, timestamp=NOW)
    fits = wire.encode_udp_set(b"k", b"v" * (65495 - 54))
    assert len(wire.sign_udp(fits, SECRET, timestamp=NOW)) == 65507


@ROUND
@given(
    st.one_of(st.builds(wire.encode_udp_set, keys, values, u64), st.builds(wire.encode_udp_delete, keys)),
    st.integers(0, 2**40),
    st.binary(min_size=8, max_size=8),
    st.integers(-30, 30),
)
def test_signed_round_trip(inner, timestamp, nonce, skew):
    signed = wire.sign_udp(inner, SECRET, timestamp=timestamp, nonce=nonce)
    assert wire.verify_udp(signed, SECRET, now=timestamp + skew) == inner


@FUZZ
@given(st.binary(max_size=120), st.integers(0, 2**64 - 1))
def test_fuzz_verify_udp(data, now):
    with pytest.raises(BadSignature):
        wire.verify_udp(data, SECRET, now=now)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 200), st.integers(1, 255))
def test_fuzz_verify_udp_mutated(pos, delta):
    signed = bytearray(wire.sign_udp(wire.encode_udp_set(b"key", b"v" * 100), SECRET, timestamp=NOW))
    signed[pos % len(signed)] ^= delta
    with pytest.raises(BadSignature):
        wire.verify_udp(bytes(signed), SECRET, now=NOW)


# --------------------------------------------------------------------------- dump (6)


def test_dump_request():
    assert wire.encode_dump_request(b"c") == h("6f 01 00 06 63")
    assert wire.encode_dump_request("") == h("6f 00 00 06")
    header, body, _ = wire.split_packet(wire.encode_dump_request(b"mycache"))
    assert header == Header(111, 7, 6)
    assert wire.decode_dump_request(body) == b"mycache"


def test_dump_reply_header_reference_6_2():
    # items=4, blocksize=16, keysize=8: 6f 19 00 07 + 25 bytes of vars + 448 bytes = 477
    head = wire.encode_dump_reply_header(4, 16, 448)
    assert head[:4] == h("6f 19 00 07")
    assert len(head) == 4 + 25
    assert len(head) + 448 == 477
    assert head[4:] == wire.encode_vars([("items", "4"), ("blocksize", "16")])
    image = bytes(range(256)) + bytes(192)
    info = wire.parse_dump_reply(head + image)
    assert info == DumpInfo(items=4, blocksize=16, image_offset=29)
    assert (head + image)[info.image_offset :] == image
    with pytest.raises(Malformed):
        wire.encode_dump_reply_header(4, 16, -1)


def test_parse_dump_reply_lenient():
    head = wire.encode_dump_reply_header(4, 16, 0)
    assert wire.parse_dump_reply(h("6f 00 00 07")) == DumpInfo(None, None, 4)
    # vars that break after `items`: what parsed counts (like uWSGI's client)
    vars_ = wire.encode_vars([("items", "4")]) + h("00 00 05")
    info = wire.parse_dump_reply(wire.encode_packet(7, vars_))
    assert (info.items, info.blocksize) == (4, None)
    with pytest.raises(Truncated):
        wire.parse_dump_reply(head[:-1])
    with pytest.raises(Malformed):
        wire.parse_dump_reply(wire.encode_packet(17, head[4:]))
    with pytest.raises(Malformed):
        wire.parse_dump_reply(wire.encode_packet(7, wire.encode_vars([("items", "x")])))


@ROUND
@given(u64, u64)
def test_dump_round_trip(items, blocksize):
    info = wire.parse_dump_reply(wire.encode_dump_reply_header(items, blocksize, 0))
    assert (info.items, info.blocksize) == (items, blocksize)


@FUZZ
@given(st.binary(max_size=60))
def test_fuzz_parse_dump_reply(data):
    try:
        wire.parse_dump_reply(b"\x6f" + data[:2] + b"\x07" + data[2:])
    except WireError:
        pass


# --------------------------------------------------------------------------- magic (17)


def _vars_packet(pairs) -> bytes:
    return wire.encode_packet(17, wire.encode_vars(pairs))


def test_magic_requests_bytes_exact():
    assert wire.encode_magic_get(b"K") == _vars_packet([("cmd", "get"), ("key", "K")])
    assert wire.encode_magic_get("K", cache="c") == _vars_packet(
        [("cmd", "get"), ("key", "K"), ("cache", "c")]
    )
    # `cache` present but empty: uWSGI sends it whenever the argument contained '@'
    assert wire.encode_magic_exists(b"K", cache=b"") == _vars_packet(
        [("cmd", "exists"), ("key", "K"), ("cache", "")]
    )
    assert wire.encode_magic_del(b"K") == _vars_packet([("cmd", "del"), ("key", "K")])
    assert wire.encode_magic_clear() == _vars_packet([("cmd", "clear")])
    assert wire.encode_magic_clear(cache="c") == _vars_packet([("cmd", "clear"), ("cache", "c")])


def test_magic_set_update_bytes_exact():
    packet = wire.encode_magic_set(b"K", b"remote1", 30, cache=b"c")
    expected_vars = wire.encode_vars(
        [("cmd", "set"), ("key", "K"), ("size", "7"), ("expires", "30"), ("size", "7"), ("cache", "c")]
    )
    assert packet == wire.encode_packet(17, expected_vars) + b"remote1"
    header, body, rest = wire.split_packet(packet)
    assert header.datasize == len(expected_vars)  # the value is not counted
    assert rest == b"remote1"
    no_ttl = wire.encode_magic_update(b"K", b"v")
    assert no_ttl == _vars_packet(
        [("cmd", "update"), ("key", "K"), ("size", "1"), ("size", "1")]
    ) + b"v"


def test_magic_request_bad_arguments():
    with pytest.raises(Malformed):
        wire.encode_magic_set(b"K", b"")
    with pytest.raises(Malformed):
        wire.encode_magic_get(b"")
    with pytest.raises(Malformed):
        wire.encode_magic_request(b"incr", b"K")
    with pytest.raises(Malformed):
        wire.encode_magic_request(b"get", b"K", value=b"v")
    with pytest.raises(Malformed):
        wire.encode_magic_request(b"clear", b"K")
    with pytest.raises(Malformed):
        wire.encode_magic_set(b"K", b"v", -5)


def test_decode_magic_request():
    _, body, rest = wire.split_packet(wire.encode_magic_set(b"K", b"abc", 30, cache=b""))
    req = wire.decode_magic_request(body)
    assert req == MagicRequest(cmd=b"set", key=b"K", cache=b"", size=3, expires=30)
    assert req.value_size == 3 and rest == b"abc"
    _, body, _ = wire.split_packet(wire.encode_magic_clear())
    assert wire.decode_magic_request(body) == MagicRequest(cmd=b"clear")
    get = wire.decode_magic_request(wire.split_packet(wire.encode_magic_get(b"K"))[1])
    assert get.value_size == 0 and get.cache is None


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("key", "K")],
        [("cmd", "incr"), ("key", "K")],
        [("cmd", "get")],
        [("cmd", "get"), ("key", "")],
        [("cmd", "set"), ("key", "K"), ("size", "1x")],
        [("cmd", "set"), ("key", "K"), ("size", "")],
        [("cmd", "set"), ("key", "K"), ("size", "3"), ("expires", "-1")],
    ],
)
def test_decode_magic_request_rejects(pairs):
    with pytest.raises(Malformed):
        wire.decode_magic_request(wire.encode_vars(pairs))


def test_magic_get_reply_reference_7_3():
    reply = wire.encode_magic_ok(b"remote1")
    assert reply[:4] == h("6f 15 00 11")
    assert reply == h("6f 15 00 11") + wire.encode_vars([("status", "ok"), ("size", "7")]) + b"remote1"
    _, body, rest = wire.split_packet(reply)
    assert wire.decode_magic_reply(body) == MagicReply(b"ok", 7, 0)
    assert rest == b"remote1"
    with_ttl = wire.encode_magic_ok(b"abc", expires=1795841591)
    assert with_ttl == wire.encode_packet(
        17, wire.encode_vars([("status", "ok"), ("size", "3"), ("expires", "1795841591")])
    ) + b"abc"
    _, body, _ = wire.split_packet(with_ttl)
    assert wire.decode_magic_reply(body) == MagicReply(b"ok", 3, 1795841591)


def test_magic_plain_ok_reply():
    ok = wire.encode_magic_ok()
    assert ok == wire.encode_packet(17, h("06 00") + b"status" + h("02 00") + b"ok")
    reply = wire.decode_magic_reply(wire.split_packet(ok)[1])
    assert reply.ok and reply.size == 0
    assert not wire.decode_magic_reply(wire.encode_vars([("status", "error")])).ok
    assert not wire.decode_magic_reply(b"").ok
    with pytest.raises(Malformed):
        wire.encode_magic_ok(expires=5)
    with pytest.raises(Truncated):
        wire.decode_magic_reply(h("06 00") + b"status" + h("05 00") + b"ok")


@ROUND
@given(
    st.sampled_from(wire.MAGIC_COMMANDS),
    keys,
    st.binary(min_size=1, max_size=100),
    st.integers(0, 2**40),
    st.one_of(st.none(), st.binary(max_size=10)),
)
def test_magic_request_round_trip(cmd, key, value, expires, cache):
    keyed = cmd != b"clear"
    valued = cmd in (b"set", b"update")
    packet = wire.encode_magic_request(
        cmd,
        key if keyed else None,
        value=value if valued else None,
        expires=expires if valued else 0,
        cache=cache,
    )
    _, body, rest = wire.split_packet(packet)
    req = wire.decode_magic_request(body)
    assert req == MagicRequest(
        cmd=cmd,
        key=key if keyed else b"",
        cache=cache,
        size=len(value) if valued else 0,
        expires=expires if valued else 0,
    )
    assert rest == (value if valued else b"")


@ROUND
@given(st.one_of(st.none(), st.binary(max_size=100)), st.integers(0, 2**64 - 1))
def test_magic_reply_round_trip(value, expires):
    expires = 0 if value is None else expires
    _, body, rest = wire.split_packet(wire.encode_magic_ok(value, expires))
    reply = wire.decode_magic_reply(body)
    assert reply.ok and reply.expires == expires
    assert reply.size == (0 if value is None else len(value))
    assert rest == (value or b"")


@FUZZ
@given(st.binary(max_size=120))
def test_fuzz_decode_magic_request(data):
    try:
        req = wire.decode_magic_request(data)
    except WireError:
        return
    assert req.cmd in wire.MAGIC_COMMANDS


@FUZZ_COMPOSITE
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"cmd", b"key", b"size", b"expires", b"cache", b"x"]),
            st.one_of(st.sampled_from(wire.MAGIC_COMMANDS), st.binary(max_size=8), st.just(b"18446744073709551616")),
        ),
        max_size=6,
    )
)
def test_fuzz_decode_magic_request_vars(pairs):
    try:
        wire.decode_magic_request(wire.encode_vars(pairs))
    except WireError:
        pass


@FUZZ
@given(st.binary(max_size=80))
def test_fuzz_decode_magic_reply(data):
    try:
        wire.decode_magic_reply(data)
    except WireError:
        pass


# --------------------------------------------------------------------------- PacketReader


def test_packet_reader_byte_by_byte_with_magic_trailers():
    stream = (
        wire.encode_magic_set(b"k", b"value!", 10)
        + wire.encode_magic_get(b"k")
        + wire.encode_magic_update(b"k2", b"\x6f\x05\x00\x11xxxxx")  # looks like a header
        + wire.encode_dump_request(b"c")
    )
    reader = PacketReader(trailer=wire.magic_trailer(1024))
    packets = []
    for i in range(len(stream)):
        packets += reader.feed(stream[i : i + 1])
    reader.eof()
    assert [p.header.modifier2 for p in packets] == [17, 17, 17, 6]
    assert [p.trailer for p in packets] == [b"value!", b"", b"\x6f\x05\x00\x11xxxxx", b""]
    assert wire.decode_magic_request(packets[0].body).key == b"k"
    assert packets[3].body == b"c"
    assert reader.buffered == 0


def test_packet_reader_whole_stream_and_replies():
    stream = wire.encode_magic_ok(b"remote1", 5) + wire.encode_magic_ok() + wire.encode_magic_ok(b"x")
    reader = PacketReader(trailer=wire.magic_trailer(100, reply=True))
    packets = reader.feed(stream)
    assert [p.trailer for p in packets] == [b"remote1", b"", b"x"]


def test_packet_reader_without_policy_and_raw_switch():
    reader = PacketReader()
    assert reader.feed(wire.encode_packet(6, b"c") + b"\x6f\x01") == [
        wire.Packet(Header(111, 1, 6), b"c")
    ]
    assert reader.buffered == 2
    assert reader.take_buffer() == b"\x6f\x01"
    reader.eof()


def test_packet_reader_dump_trailer():
    image = bytes(448)
    reader = PacketReader(trailer=lambda hdr, body: len(image) if hdr.modifier2 == 7 else 0)
    head = wire.encode_dump_reply_header(4, 16, len(image))
    assert reader.feed(head + image[:100]) == []
    assert reader.buffered == len(head) + 100
    with pytest.raises(Truncated):
        reader.take_buffer()
    with pytest.raises(Truncated):
        reader.eof()
    (packet,) = reader.feed(image[100:])
    assert packet.trailer == image
    assert wire.parse_dump_reply(wire.encode_packet(7, packet.body)).items == 4


def test_packet_reader_errors_are_sticky():
    reader = PacketReader(trailer=wire.magic_trailer(4))
    with pytest.raises(Oversized):
        reader.feed(wire.encode_magic_set(b"k", b"12345"))
    with pytest.raises(Oversized):
        reader.feed(b"")
    reader = PacketReader(trailer=wire.magic_trailer(4))
    with pytest.raises(Malformed):
        reader.feed(wire.encode_packet(17, wire.encode_vars([("cmd", "set"), ("key", "k")])))
    reader = PacketReader()
    reader.feed(b"\x6f\x05\x00")
    with pytest.raises(Truncated):
        reader.eof()


@FUZZ_COMPOSITE
@given(st.binary(max_size=200), st.lists(st.integers(1, 50), max_size=8), st.booleans())
def test_fuzz_packet_reader(data, cuts, reply):
    reader = PacketReader(trailer=wire.magic_trailer(64, reply=reply))
    pos = 0
    try:
        for cut in cuts + [len(data)]:
            reader.feed(data[pos : pos + cut])
            pos += cut
        reader.eof()
    except WireError:
        pass


# --------------------------------------------------------------------------- simple (0-5)


def test_simple_requests():
    assert wire.encode_simple_get(b"k") == h("6f 01 00 00 6b")
    assert wire.encode_simple_del("k") == h("6f 01 00 02 6b")
    assert wire.encode_simple_stream_get(b"k") == h("6f 01 00 05 6b")
    set_packet = wire.encode_simple_set(b"k", b"v")
    assert set_packet == h("6f 06 00 01 01 00 6b 01 00 76")
    assert wire.decode_simple_set(wire.split_packet(set_packet)[1]) == (b"k", b"v")
    assert wire.decode_simple_set(wire.encode_array([b"", b"k", b"v", b"extra"])) == (b"k", b"v")
    with pytest.raises(Malformed):
        wire.decode_simple_set(wire.encode_array([b"k"]))
    with pytest.raises(Malformed):
        wire.encode_simple_set(b"k", b"")
    with pytest.raises(Malformed):
        wire.encode_simple_get(b"")


def test_simple_dict_lookups():
    packet = wire.encode_simple_dict([("key", "a"), ("x", "y"), ("get", "b"), ("get", ""), ("key", "a")])
    assert packet[3] == 3
    assert wire.encode_simple_dict([("get", "b")], http_404=True)[3] == 4
    body = wire.split_packet(packet)[1]
    assert wire.decode_simple_lookups(body) == [(b"key", b"a"), (b"get", b"b"), (b"key", b"a")]
    broken = body + h("00 00")
    with pytest.raises(Malformed):
        wire.decode_simple_lookups(broken)
    assert len(wire.decode_simple_lookups(broken, strict=False)) == 3


def test_simple_replies_intended_headers():
    assert wire.encode_simple_get_reply(b"val") == h("6f 03 00 00") + b"val"
    with pytest.raises(Oversized):
        wire.encode_simple_get_reply(b"v" * 65536)
    assert wire.encode_simple_stream_reply(b"val") == h("6f 00 00 01") + b"val"
    assert wire.encode_simple_stream_reply(None) == h("6f 00 00 00")


def test_parse_simple_reply_skips_junk_header():
    assert wire.parse_simple_reply(h("00 90 8e 9b") + b"hello") == b"hello"  # real uWSGI
    assert wire.parse_simple_reply(wire.encode_simple_get_reply(b"v")) == b"v"
    assert wire.parse_simple_reply(wire.encode_simple_stream_reply(None)) is None
    assert wire.parse_simple_reply(b"") is None
    with pytest.raises(Truncated):
        wire.parse_simple_reply(b"\x6f\x00")


def test_public_names_exist():
    for name in wire.__all__:
        assert hasattr(wire, name), name
