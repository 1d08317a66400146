"""uwcache.address: the one address rule, and every former parser agreeing with it."""

from __future__ import annotations

from typing import Any

import pytest

import uwcache
from uwcache import address
from uwcache.config import CacheOptions
from uwcache.errors import AddressError, ConfigError
from uwcache.net import client, stats, udp
from uwcache.net.server import CacheServer
from uwcache.remote import RemoteCache

# (text, with unix=False, with unix=True); an exception class means "refused"
FORMS = [
    ("127.0.0.1:3031", ("127.0.0.1", 3031), ("127.0.0.1", 3031)),
    ("localhost:80", ("localhost", 80), ("localhost", 80)),
    ("cache.example:65535", ("cache.example", 65535), ("cache.example", 65535)),
    ("[::1]:3031", ("::1", 3031), ("::1", 3031)),
    ("[fe80::1%eth0]:3031", ("fe80::1%eth0", 3031), ("fe80::1%eth0", 3031)),
    ("0.0.0.0:3031", ("0.0.0.0", 3031), ("0.0.0.0", 3031)),   # every address must be asked for
    (":3031", ("127.0.0.1", 3031), ("127.0.0.1", 3031)),       # uWSGI: every address (caveats.md)
    ("3031", ("127.0.0.1", 3031), ("127.0.0.1", 3031)),        # a bare port is loopback too
    ("/run/uwcache.sock", AddressError, "/run/uwcache.sock"),
    ("./rel:ative.sock", AddressError, "./rel:ative.sock"),   # a path may contain ':'
    ("@abstract", AddressError, "@abstract"),
    ("relative.sock", AddressError, "relative.sock"),
    ("host", AddressError, "host"),
    ("::1:3031", AddressError, AddressError),                 # IPv6 needs brackets
    ("[]:3031", AddressError, AddressError),
    ("h:0", AddressError, AddressError),                      # 0 only where the caller binds
    ("h:65536", AddressError, AddressError),
    ("h:x", AddressError, AddressError),
    ("h:", AddressError, AddressError),
    ("h:-1", AddressError, AddressError),
    ("h:٣", AddressError, AddressError),                      # non-ASCII digits are no port
    ("my host:1", AddressError, AddressError),
    (" h:1", AddressError, AddressError),
    ("a:1;b:2", AddressError, AddressError),                  # ';' separates cache2 list entries
    ("a\0:1", AddressError, AddressError),
    ("", AddressError, AddressError),
    (5, AddressError, AddressError),
]


@pytest.mark.parametrize("text, tcp, with_unix", FORMS)
def test_every_form(text: Any, tcp: Any, with_unix: Any) -> None:
    for unix, expected in ((False, tcp), (True, with_unix)):
        if isinstance(expected, type):
            with pytest.raises(expected) as info:
                address.parse_address(text, option="opt", unix=unix)
            assert str(info.value).startswith("opt entry")
        else:
            assert address.parse_address(text, option="opt", unix=unix) == expected
            assert address.parse_address(address.format_address(expected), unix=unix) == expected


def test_port_zero_where_the_caller_binds() -> None:
    assert address.parse_address("h:0", port0=True) == ("h", 0)
    assert address.parse_address("0", port0=True) == ("127.0.0.1", 0)


def test_address_error_is_a_config_error() -> None:
    assert issubclass(AddressError, ConfigError) and issubclass(AddressError, ValueError)
    assert uwcache.errors.AddressError is client.AddressError is AddressError


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", True), ("127.5.6.7", True), ("::1", True), ("::1%lo", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("example.com", False), ("", False),
])
def test_is_loopback(host: str, expected: bool) -> None:
    assert address.is_loopback(host) is expected
    assert udp.is_loopback is stats.is_loopback is address.is_loopback


def test_former_callers_agree() -> None:
    """config, net/udp, net/client, net/stats, net/server and RemoteCache accept and refuse
    the same forms, and read them the same way."""
    for text, tcp, with_unix in FORMS:
        if not isinstance(text, str):
            continue
        tcp_ok = not isinstance(tcp, type)
        unix_ok = not isinstance(with_unix, type)
        # parsers that return the reading
        readers = [
            (lambda t: udp._split("udp_clients", t), tcp),
            (lambda t: stats.parse_address(t), ("h", 0) if text == "h:0" else tcp),  # it binds: port 0 ok
            (lambda t: client.parse_address(t, allow_unix=False), tcp),
            (lambda t: client.parse_address(t), with_unix),
            (lambda t: RemoteCache("c@" + t)._address, with_unix),
        ]
        for read, expected in readers:
            if isinstance(expected, type):
                with pytest.raises(ValueError):
                    read(text)
            else:
                assert read(text) == expected, text
        # validators (config options, the cache server's address)
        for option, ok in (("udp_clients", tcp_ok), ("udp_servers", tcp_ok), ("sync_from", unix_ok)):
            if ok:
                CacheOptions("c", 10, **{option: [text]})
            else:
                with pytest.raises(ConfigError, match=option):
                    CacheOptions("c", 10, **{option: [text]})
        if not unix_ok and text != "h:0":  # the cache server binds: port 0 is a free port
            with pytest.raises(ConfigError, match="server"):
                CacheServer(text, {"c": object()})
