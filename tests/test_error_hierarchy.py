"""One error hierarchy: every exception class lives in uwcache.errors, derives from
CacheError, and is the same object where it used to be defined (so `except` keeps working)."""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

import uwcache
from uwcache import errors

# where each class was defined before issue 14 (and is still importable from)
FORMER_HOMES = {
    "AddressError": ["uwcache.net.client"],
    "SerializerMismatch": ["uwcache.serializers"],
    "WireError": ["uwcache.wire"],
    "Truncated": ["uwcache.wire"],
    "Malformed": ["uwcache.wire"],
    "Oversized": ["uwcache.wire"],
    "BadSignature": ["uwcache.wire"],
    "RemoteError": ["uwcache.remote", "uwcache"],
    "RemoteUnavailable": ["uwcache.remote", "uwcache"],
    "SyncError": ["uwcache.net.sync"],
    "ProtocolError": ["uwcache.net.resp"],
    "ReplyError": ["uwcache.net.resp"],
    "CLIError": ["uwcache.cli"],
}


def test_every_public_exception_is_a_cache_error() -> None:
    public = [getattr(errors, n) for n in errors.__all__]
    assert all(isinstance(c, type) and issubclass(c, BaseException) for c in public)
    for cls in public:
        assert issubclass(cls, errors.CacheError), cls
    assert set(FORMER_HOMES) <= set(errors.__all__)
    assert issubclass(errors.AddressError, errors.ConfigError)


@pytest.mark.parametrize("name, homes", sorted(FORMER_HOMES.items()))
def test_importable_from_both_places(name: str, homes: list) -> None:
    cls = getattr(errors, name)
    for home in homes:
        assert getattr(importlib.import_module(home), name) is cls, home
    with pytest.raises(getattr(importlib.import_module(homes[0]), name)):
        raise cls("x")


def test_no_exception_class_is_defined_outside_errors() -> None:
    """Only errors.py defines exception classes (the cache server's private `_Refused`
    signal, never raised to a user, excepted)."""
    package = pathlib.Path(uwcache.__file__).parent
    found = []
    for path in package.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    ast.unparse(b).split(".")[-1].endswith(("Error", "Exception")) or ast.unparse(b) in errors.__all__
                    for b in node.bases):
                found.append(f"{path.relative_to(package)}:{node.name}")
    assert found == ["net/server.py:_Refused"]


def test_a_bad_address_is_caught_as_config_error() -> None:
    with pytest.raises(errors.ConfigError, match="udp_clients"):
        uwcache.CacheOptions("c", 10, udp_clients=["nowhere"])
