"""Pickled values are authenticated: a value that does not carry a valid HMAC is a counted,
rate-logged miss and is never unpickled (issue 9, "pickles from the network")."""
from __future__ import annotations

import logging
import os
import pickle
import pwd
import socket
import stat
import subprocess
import sys
import textwrap
import time

import pytest


import django_settings  # noqa: E402

django_settings.configure()

from cachelib.serializers import SimpleSerializer  # noqa: E402

import uwcache  # noqa: E402
from uwcache import signing, wire  # noqa: E402
from uwcache.cache import namespace_dir  # noqa: E402
from uwcache.contrib.cachelib import UWCache as CachelibCache  # noqa: E402
from uwcache.contrib.django import UWCache as DjangoCache  # noqa: E402
from uwcache.memoize import memoize  # noqa: E402
from uwcache.serializers import TAG_CUSTOM, TAG_PICKLE  # noqa: E402
from oracle import free_port  # noqa: E402

GEOMETRY = {"max_items": 50, "block_size": 512, "key_size": 128, "hash_size": 64}
# where the uwcache under test is imported from (the installed package in CI, src/ in a checkout)
SRC = os.path.dirname(os.path.dirname(os.path.abspath(uwcache.__file__)))


class CreatesFile:
    """Unpickling this opens (creates) a file: the proof that a value was unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def forged_values(target, tag=TAG_PICKLE):
    payload = pickle.dumps(CreatesFile(target))
    return [
        bytes((tag,)) + payload,                      # an unsigned pickle (the old layout)
        bytes((tag,)) + os.urandom(16) + payload,     # a made-up tag
        bytes((tag,)) + b"\x00" * 16 + payload,
        bytes((tag,)) + b"\x01" * 3,                  # too short to hold a tag at all
    ]


def django_backend(namespace, **options):
    return DjangoCache("signed", {"OPTIONS": dict(GEOMETRY, NAMESPACE=namespace, **options)})


def cachelib_backend(namespace, **kwargs):
    return CachelibCache("signed", namespace=namespace, **GEOMETRY, **kwargs)


def test_forged_pickles_are_misses_never_unpickled(namespace, tmp_path, caplog):
    target = tmp_path / "pwned"
    dj = django_backend(namespace)
    cl = cachelib_backend(namespace)
    calls = []

    @memoize(cl.cache)
    def compute(x):
        calls.append(x)
        return {"x": x}

    before = signing.rejected_values()
    forged = forged_values(target)
    with caplog.at_level(logging.WARNING):
        for i, value in enumerate(forged):
            dj.cache.set(dj.make_key(f"k{i}"), value)
            cl.cache.set(f"k{i}", value)
            assert dj.get(f"k{i}", "miss") == "miss"
            assert dj.get_many([f"k{i}"]) == {}
            assert cl.get(f"k{i}") is None
            assert cl.get_dict(f"k{i}") == {f"k{i}": None}
            cl.cache.set(compute.cache_key(i), value)
            assert compute(i) == {"x": i}  # a miss: computed again
        assert compute(0) == {"x": 0} and calls == list(range(len(forged)))  # now a real hit
    assert not target.exists(), "a forged value was unpickled"
    # counted per backend and per process ...
    assert dj.rejected_values == cl.rejected_values == 2 * len(forged)  # get and get_many each
    assert compute.codec.rejected == len(forged)
    assert signing.rejected_values() - before == 5 * len(forged)
    # ... and logged at a limited rate: one record per backend, not one per value
    records = [r for r in caplog.records if "signature does not verify" in r.getMessage()]
    assert len(records) == 3, [r.getMessage() for r in records]
    # incr of a forged value starts from the initial value instead of loading it
    dj.cache.set(dj.make_key("n"), forged[1])
    with pytest.raises(ValueError):
        dj.incr("n")
    assert cl.inc("n2") == 1
    cl.cache.set("n2", forged[1])
    assert cl.inc("n2") == 1
    assert not target.exists()


def test_a_forged_value_is_not_reported_present(namespace, tmp_path):
    # has_key / has answer what get would: a value whose signature fails is no value
    target = tmp_path / "pwned"
    dj = django_backend(namespace)
    cl = cachelib_backend(namespace)
    for i, value in enumerate(forged_values(target)):
        dj.cache.set(dj.make_key(f"f{i}"), value)
        cl.cache.set(f"f{i}", value)
        assert dj.has_key(f"f{i}") is False and cl.has(f"f{i}") is False
    dj.set("real", {"a": 1})
    cl.set("real", {"a": 1})
    dj.set("n", 5)  # counters are stored unsigned, and present
    assert dj.has_key("real") and cl.has("real") and dj.has_key("n")
    assert not dj.has_key("absent") and not cl.has("absent")
    assert not target.exists()


def test_forged_custom_serializer_payloads_are_misses(namespace, tmp_path):
    target = tmp_path / "pwned"
    cl = cachelib_backend(namespace, serializer=SimpleSerializer())  # cachelib's pickle
    for value in forged_values(target, TAG_CUSTOM):
        cl.cache.set("k", value)
        assert cl.get("k") is None
    assert not target.exists()
    assert cl.rejected_values == 4


def test_values_are_signed_and_round_trip(namespace):
    dj = django_backend(namespace)
    dj.set("obj", {"a": (1, 2)})
    raw = dj.cache.get(dj.make_key("obj"))
    assert raw[0] == TAG_PICKLE and pickle.loads(raw[17:]) == {"a": (1, 2)}
    assert dj.get("obj") == {"a": (1, 2)}
    tampered = raw[:-1] + bytes((raw[-1] ^ 1,))
    dj.cache.set(dj.make_key("obj"), tampered)
    assert dj.get("obj") is None and dj.rejected_values == 1
    # text, bytes, counters and JSON are not signed: loading them runs no code
    dj.set("s", "text")
    assert dj.cache.get(dj.make_key("s")) == b"\x02text"


def test_the_key_file_is_ours_and_private(namespace):
    dj = django_backend(namespace)
    dj.set("obj", [1])
    path = os.path.join(namespace_dir(namespace), signing.KEY_FILE)
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_size == signing.KEY_SIZE
    assert [n for n in os.listdir(namespace_dir(namespace)) if n.startswith(".")] == []  # no temp left


def _write_in_another_process(namespace, code):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {SRC!r})
        from uwcache.contrib.cachelib import UWCache
        geometry = {GEOMETRY!r}
        {code}
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, env=dict(os.environ))


def test_a_value_written_by_another_process_with_the_same_key_is_read(namespace):
    _write_in_another_process(namespace, f"""
        UWCache("signed", namespace={namespace!r}, **geometry).set("k", {{"from": "child"}})
        UWCache("signed", namespace={namespace!r}, secret="s3cret", **geometry).set("k2", ["secret"])
    """)
    assert cachelib_backend(namespace).get("k") == {"from": "child"}  # the namespace's key file
    assert cachelib_backend(namespace, secret="s3cret").get("k2") == ["secret"]
    other = cachelib_backend(namespace, secret="another")
    assert other.get("k2") is None and other.get("k") is None  # a wrong key: a miss ...
    assert other.rejected_values == 2  # ... counted


def test_a_wrong_key_value_is_a_counted_miss(namespace):
    writer = cachelib_backend(namespace, secret="one")
    writer.set("k", {"v": 1})
    reader = cachelib_backend(namespace)  # the key file, not the secret
    before = signing.rejected_values()
    assert reader.get("k") is None and reader.rejected_values == 1
    assert signing.rejected_values() == before + 1


def test_nodes_sharing_a_replication_secret_share_the_key(namespace):
    # two namespaces stand for two machines: their key files differ, their secret does not
    a = CachelibCache("rep", namespace=namespace + "-a", **dict(GEOMETRY, secret="replication"))
    b = CachelibCache("rep", namespace=namespace + "-b", **dict(GEOMETRY, secret="replication"))
    a.set("k", {"v": 1})
    b.cache.set("k", a.cache.get("k"))  # what replication does
    assert b.get("k") == {"v": 1}
    plain_a = CachelibCache("plain", namespace=namespace + "-a", **GEOMETRY)
    plain_b = CachelibCache("plain", namespace=namespace + "-b", **GEOMETRY)
    plain_a.set("k", {"v": 1})
    plain_b.cache.set("k", plain_a.cache.get("k"))
    assert plain_b.get("k") is None and plain_b.rejected_values == 1  # no shared secret: no trust


def test_a_key_file_we_do_not_trust_is_refused(namespace, caplog):
    directory = namespace_dir(namespace, create=True)
    path = os.path.join(directory, signing.KEY_FILE)
    with open(os.path.join(directory, "elsewhere"), "wb") as f:
        f.write(b"k" * signing.KEY_SIZE)
    os.symlink(os.path.join(directory, "elsewhere"), path)
    strict = cachelib_backend(namespace, ignore_exceptions=False)
    with pytest.raises(uwcache.CacheError, match="value-signing key"):
        strict.set("k", {"v": 1})
    lenient = cachelib_backend(namespace)
    with caplog.at_level(logging.WARNING):
        assert lenient.set("k", {"v": 1}) is False  # a failure: logged, the call is a miss
    assert "value-signing key" in caplog.text
    os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"k" * signing.KEY_SIZE)
    os.close(fd)
    os.chmod(path, 0o644)
    signing._file_keys.clear()
    with pytest.raises(uwcache.CacheError, match="mode 644"):
        cachelib_backend(namespace, ignore_exceptions=False).set("k", {"v": 1})


SECOND_USER = "uwcache-h3sign"


@pytest.fixture
def second_user():
    """A second Unix user, created for the test and removed after it."""
    if os.geteuid() != 0:
        print("SKIP REASON: a second user needs root to create")
        pytest.skip("a second Unix user needs root (useradd)")
    created = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", SECOND_USER],
                             capture_output=True, text=True)
    if created.returncode not in (0, 9):  # 9: exists from an interrupted run
        print(f"SKIP REASON: useradd refused: {created.stderr.strip()}")
        pytest.skip(f"useradd refused: {created.stderr.strip()}")
    try:
        yield pwd.getpwnam(SECOND_USER)
    finally:
        subprocess.run(["userdel", SECOND_USER], capture_output=True)


def test_a_pickle_sent_by_another_user_over_udp_is_not_run(namespace, tmp_path, second_user):
    """The issue's exploit: an unprivileged user sends one replication datagram (no secret)
    with a pickle; the root reader must neither unpickle it nor let that user read the key."""
    target = tmp_path / "pwned"
    port = free_port("udp")
    caching = uwcache.Caching(namespace).add_cache("signed", udp_servers=[f"127.0.0.1:{port}"], **GEOMETRY)
    with caching.start():
        dj = django_backend(namespace)
        dj.set("warm", {"v": 1})  # the key file exists now
        key_path = os.path.join(namespace_dir(namespace), signing.KEY_FILE)
        datagrams = [wire.encode_udp_set(dj.make_key("k"), v) for v in forged_values(target)[:3]]
        attacker = textwrap.dedent(f"""
            import socket
            try:
                open({key_path!r}, "rb").read()
                print("READ THE KEY")
            except OSError as exc:
                print("key refused:", type(exc).__name__)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for d in {datagrams!r}:
                s.sendto(d, ("127.0.0.1", {port}))
        """)
        user = second_user
        out = subprocess.run(
            ["/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable, "-c", attacker],
            capture_output=True, text=True, timeout=30, cwd="/",
            preexec_fn=lambda: (os.setgroups([]), os.setgid(user.pw_gid), os.setuid(user.pw_uid)),
        )
        assert out.returncode == 0, out.stderr
        assert "key refused: PermissionError" in out.stdout
        deadline = time.time() + 5
        while dj.cache.get(dj.make_key("k")) is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)  # let the other datagrams land too
        assert dj.cache.get(dj.make_key("k")) is not None, "the datagram was not applied"
        assert dj.get("k", "miss") == "miss"
        assert dj.rejected_values == 1
    assert not target.exists(), "the attacker's pickle was run"


def test_memoize_on_a_node_cache_signs_with_its_replication_secret(namespace):
    from uwcache.serializers import MISS, Codec

    caching = uwcache.Caching(namespace, secret="replication secret").add_cache("node", **GEOMETRY)
    with caching.start() as node:
        cache = node.cache("node")

        @memoize(cache)
        def f(x):
            return {"x": x}

        assert f(1) == {"x": 1}
        raw = cache.get(f.cache_key(1))
        same_secret = Codec(signer=signing.ValueSigner(namespace, "replication secret"))
        assert same_secret.decode(raw) == {"x": 1}  # what another node's backend with that secret reads
        assert Codec(signer=signing.ValueSigner(namespace)).decode(raw) is MISS  # the key file differs


def test_processes_racing_to_create_the_key_file_agree(namespace, tmp_path):
    from forks import run_in_forks

    def child(i):
        signing._file_keys.clear()  # as a fresh process: nothing cached
        (tmp_path / f"key{i}").write_bytes(signing.load_key_file(namespace))

    assert run_in_forks(6, child) == [0] * 6
    keys = {(tmp_path / f"key{i}").read_bytes() for i in range(6)}
    assert len(keys) == 1 and len(keys.pop()) == signing.KEY_SIZE
    assert signing.load_key_file(namespace) == (tmp_path / "key0").read_bytes()
