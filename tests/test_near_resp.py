"""The sans-IO RESP2/RESP3 codec of the near cache's listener (uwcache.net.resp)."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uwcache.errors import CacheError
from uwcache.net.resp import NEED_MORE, Parser, ProtocolError, Push, ReplyError, encode_command


def parse_all(data: bytes):
    p = Parser()
    p.feed(data)
    return list(p)


def test_encode_command_is_an_array_of_bulk_strings():
    assert encode_command("SET", b"k", 10, 1.5) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n10\r\n$3\r\n1.5\r\n"
    assert encode_command("GET", "é") == b"*2\r\n$3\r\nGET\r\n$2\r\n\xc3\xa9\r\n"
    with pytest.raises(ValueError):
        encode_command()
    with pytest.raises(TypeError):
        encode_command("SET", True)
    with pytest.raises(TypeError):
        encode_command("SET", None)


def test_every_resp2_and_resp3_type():
    data = (b"+OK\r\n-ERR wrong\r\n:-42\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n$0\r\n\r\n"
            b"*2\r\n:1\r\n$1\r\nx\r\n_\r\n#t\r\n#f\r\n,3.25\r\n,inf\r\n(12345678901234567890\r\n"
            b"!9\r\nERR bulky\r\n=8\r\ntxt:h\xc3\xa9j\r\n%2\r\n+a\r\n:1\r\n$1\r\nb\r\n:2\r\n~2\r\n:1\r\n:2\r\n"
            b"|1\r\n+ttl\r\n:3\r\n+after-attribute\r\n")
    got = parse_all(data)
    assert got[0] == "OK"
    assert isinstance(got[1], ReplyError) and got[1].code == "ERR"
    assert got[2:7] == [-42, b"abc", None, None, b""]
    assert got[7] == [1, b"x"]
    assert got[8:14] == [None, True, False, 3.25, float("inf"), 12345678901234567890]
    assert isinstance(got[14], ReplyError) and str(got[14]) == "ERR bulky"
    assert got[15] == "héj".encode()
    assert got[16] == {"a": 1, b"b": 2}
    assert got[17] == [1, 2]
    assert got[18] == "after-attribute"  # the attribute is dropped
    assert len(got) == 19


def test_invalidation_push_and_flush_push():
    got = parse_all(b">2\r\n$10\r\ninvalidate\r\n*2\r\n$5\r\napp:a\r\n$5\r\napp:b\r\n"
                    b">2\r\n$10\r\ninvalidate\r\n_\r\n")
    assert isinstance(got[0], Push) and got[0] == [b"invalidate", [b"app:a", b"app:b"]]
    assert got[1] == [b"invalidate", None]


def test_unhashable_map_keys_become_pairs():
    assert parse_all(b"%1\r\n*1\r\n:1\r\n:2\r\n") == [[([1], 2)]]


def test_partial_input_waits_for_more():
    full = encode_command("SET", "key", "x" * 100) + b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"
    p = Parser()
    out = []
    for i in range(len(full)):
        p.feed(full[i:i + 1])
        out.extend(p)
    assert out == [[b"SET", b"key", b"x" * 100], [b"invalidate", [b"k"]]]
    assert p.gets() is NEED_MORE and p.buffered == 0


@pytest.mark.parametrize("accelerated", [True, False])
@pytest.mark.parametrize("bad", [
    b"?what\r\n", b":12a\r\n", b": 1\r\n", b":1_0\r\n", b"$-2\r\n", b"$3\r\nabcd\r\n", b"*-5\r\n",
    b"#x\r\n", b",nope\r\n", b"*3\r\n$1\r\na\r\n$1\r\nbX\r\n", b"*3\r\n$1\r\na\r\n$x\r\n", b"_x\r\n", b"=3\r\nabc\r\n", b"$99999999999\r\n", b"*" + b"1\r\n*" * 40 + b"0\r\n",
])
def test_malformed_input_is_a_typed_error(bad, accelerated):
    p = Parser()
    p.accelerated = accelerated
    p.feed(bad)
    with pytest.raises(ProtocolError) as info:
        p.gets()
    assert isinstance(info.value, CacheError)


def test_overlong_line_is_refused_without_waiting_forever():
    p = Parser()
    p.feed(b"+" + b"a" * 70000)
    with pytest.raises(ProtocolError):
        p.gets()


resp_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.binary(max_size=40),
              st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20)),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


def encode_value(v, resp3: bool) -> bytes:
    """A test-side encoder (server direction), independent of the parser."""
    if v is None:
        return b"_\r\n" if resp3 else b"$-1\r\n"
    if isinstance(v, bool):
        return (b"#t\r\n" if v else b"#f\r\n") if resp3 else b":%d\r\n" % v
    if isinstance(v, int):
        if resp3 and abs(v) >= 2**63:
            return b"(%d\r\n" % v
        return b":%d\r\n" % v
    if isinstance(v, bytes):
        return b"$%d\r\n%s\r\n" % (len(v), v)
    if isinstance(v, str):
        return b"+" + v.encode() + b"\r\n"
    return b"*%d\r\n" % len(v) + b"".join(encode_value(x, resp3) for x in v)


def normal(v, resp3: bool):
    if isinstance(v, bool) and not resp3:
        return int(v)
    if isinstance(v, list):
        return [normal(x, resp3) for x in v]
    return v


def test_the_c_accelerator_is_used():
    assert Parser().accelerated  # the extension is built for the tests


@settings(max_examples=300, deadline=None)
@given(st.lists(resp_values, max_size=6), st.booleans(), st.integers(min_value=1, max_value=64), st.booleans())
def test_fuzz_roundtrip_in_any_chunking(values, resp3, chunk, accelerated):
    data = b"".join(encode_value(v, resp3) for v in values)
    p = Parser()
    p.accelerated = accelerated
    out = []
    for i in range(0, len(data), chunk):
        p.feed(data[i:i + chunk])
        out.extend(p)
    assert out == [normal(v, resp3) for v in values]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_fuzz_garbage_never_crashes_or_hangs(data, accelerated):
    p = Parser()
    p.accelerated = accelerated
    p.feed(data)
    try:
        for _ in range(len(data) + 1):
            if p.gets() is NEED_MORE:
                break
    except ProtocolError:
        pass
