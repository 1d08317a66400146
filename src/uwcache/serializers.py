"""How the framework layers (Django, Flask-Caching, cachelib, ``memoize``)
turn Python values into the bytes the engine stores, and back.

The engine stores bytes. These layers store Python objects, and they also need atomic
``incr``/``decr`` across processes, which only the engine's native counters give. So every
stored value is one of:

* **exactly 8 bytes**: a native counter (signed 64-bit little-endian, what
  :meth:`uwcache.Cache.incr` works on). Plain ``int`` values in the 64-bit range are stored
  this way, so ``incr`` is one atomic engine operation and ``Cache.get_int`` reads them;
* **a one-byte tag, then the payload** (never 8 bytes long: a payload that would make it 8
  gets a ``0x00`` pad byte in front):

  ====  =========================================================================
  0x01  raw bytes (``bytes``/``bytearray``/``memoryview`` values, every serializer)
  0x02  UTF-8 text (``str`` values, every serializer)
  0x03  pickle
  0x04  JSON
  0x05  a custom serializer (any object with ``dumps``/``loads``)
  ====  =========================================================================

Payloads that would be handed to pickle or to a user's serializer (tags 0x03 and 0x05) are
authenticated: the tag byte is followed by a 16-byte HMAC of the tag byte and the payload
(:mod:`uwcache.signing` says where the key comes from), then the payload. A value whose HMAC
does not verify is a miss (:data:`MISS`), counted and logged at a limited rate, and never
unpickled. JSON, text, bytes and counters are not signed: loading them runs no code.

A value whose first byte is no tag was not written by these layers (``uwsgi.cache_set``, a
plain :class:`uwcache.Cache` user): it comes back as the raw ``bytes``.

Which values go through the serializer: with uwcache's own serializers (``"pickle"``, the
default, ``"json"``, ``"raw"``) ``int``, ``bytes`` and ``str`` take the native fast path above
and only other types are serialized. A serializer the user gives (an object with
``dumps``/``loads``, e.g. a cachelib serializer) gets *every* value, so a compressing or
encrypting serializer sees every page and string. Counters are the one exception:
``incr``/``inc`` store their result as a native 64-bit counter, because only that is atomic
across processes.

Trust model: see docs/caveats.md, "Security: pickled values". In short: a process that can
write the cache but does not hold the key (a replication peer without the secret, a client
of the cache server, another local user) can make readers miss, never run code. Pick
``"json"`` or ``"raw"`` if even holders of the key are less trusted than readers: a reader
configured with them refuses pickle-tagged values (:class:`SerializerMismatch`).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import pickle
import time
from typing import Any, Callable, Optional, Protocol, Union, runtime_checkable

from .errors import CacheError, NotAnInteger, SerializerMismatch  # noqa: F401 (re-exported)
from .failsafe import RateLimitedLog
from .signing import MAC_SIZE, ValueSigner, _count_rejected, rejected_values

__all__ = [
    "Serializer",
    "PickleSerializer",
    "JSONSerializer",
    "RawSerializer",
    "CustomSerializer",
    "Codec",
    "MISS",
    "SerializerMismatch",
    "get_serializer",
    "engine_expires",
    "add_to_counter",
    "TAG_PAD",
    "TAG_BYTES",
    "TAG_STR",
    "TAG_PICKLE",
    "TAG_JSON",
    "TAG_CUSTOM",
]

TAG_PAD, TAG_BYTES, TAG_STR, TAG_PICKLE, TAG_JSON, TAG_CUSTOM = 0, 1, 2, 3, 4, 5
_PAD = bytes((TAG_PAD,))
_BYTES = bytes((TAG_BYTES,))
_STR = bytes((TAG_STR,))

COUNTER_SIZE = 8
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# The engine refuses relative expiries past 2**40 s (~34,000 years): such a timeout is "forever".
_MAX_EXPIRES = 2**40 - 2


@runtime_checkable
class Serializer(Protocol):
    """Turns the values that are not ``int``/``bytes``/``str`` into bytes and back."""

    name: str
    tag: int

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class PickleSerializer:
    """Any picklable object (the default of the framework backends; see the trust model)."""

    name = "pickle"
    tag = TAG_PICKLE

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def dumps(self, value: Any) -> bytes:
        return pickle.dumps(value, self.protocol)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


class JSONSerializer:
    """JSON (tuples come back as lists, dict keys as str); never runs code on load."""

    name = "json"
    tag = TAG_JSON

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class RawSerializer:
    """Only ``bytes``, ``str`` and ``int`` (stored natively); anything else is a TypeError."""

    name = "raw"
    tag = TAG_BYTES

    def dumps(self, value: Any) -> bytes:
        raise TypeError(
            f"the raw serializer stores only bytes, str and int values, got {type(value).__name__}; "
            'use serializer="pickle" or "json" for other types'
        )

    def loads(self, data: bytes) -> Any:  # pragma: no cover - raw payloads never reach here
        return bytes(data)


class CustomSerializer:
    """Adapts any object with ``dumps(value) -> bytes`` and ``loads(bytes) -> value``
    (a cachelib serializer, for instance). Its payloads carry tag 0x05."""

    tag = TAG_CUSTOM

    def __init__(self, impl: Any) -> None:
        if not (callable(getattr(impl, "dumps", None)) and callable(getattr(impl, "loads", None))):
            raise TypeError(f"a serializer needs dumps() and loads() methods, got {impl!r}")
        self.impl = impl
        self.name = f"custom:{type(impl).__module__}.{type(impl).__qualname__}"

    def dumps(self, value: Any) -> bytes:
        data = self.impl.dumps(value)
        if data is None:  # cachelib serializers return None when they fail
            raise pickle.PicklingError(f"{self.name} could not serialize a {type(value).__name__}")
        if isinstance(data, str):
            data = data.encode()
        return bytes(data)

    def loads(self, data: bytes) -> Any:
        return self.impl.loads(data)


_BUILTIN = {"pickle": PickleSerializer, "json": JSONSerializer, "raw": RawSerializer}


def get_serializer(spec: Union[str, Serializer, Any, None]) -> Serializer:
    """A serializer from ``"pickle"`` (default for ``None``), ``"json"``, ``"raw"``, a dotted
    path to a class or instance, a :class:`Serializer`, or any object with dumps/loads."""
    if spec is None:
        return PickleSerializer()
    if isinstance(spec, str):
        if spec.lower() in _BUILTIN:
            return _BUILTIN[spec.lower()]()
        if "." not in spec:
            raise ValueError(f"unknown serializer {spec!r}: use 'pickle', 'json', 'raw' or a dotted path")
        module, _, attr = spec.rpartition(".")
        spec = getattr(importlib.import_module(module), attr)
    if isinstance(spec, type):
        spec = spec()
    if isinstance(spec, (PickleSerializer, JSONSerializer, RawSerializer, CustomSerializer)):
        return spec
    return CustomSerializer(spec)


#: What :meth:`Codec.decode` returns for a value that must be treated as absent.
MISS: Any = type("Miss", (), {"__repr__": lambda self: "<uwcache MISS>", "__slots__": ()})()

_rejections = RateLimitedLog(logging.getLogger("uwcache.serializers"))


class Codec:
    """Encodes values for the engine and decodes what it returns (layout in the module doc).

    :param serializer: a serializer spec (see :func:`get_serializer`).
    :param signer: signs and verifies pickle and custom payloads; default: the key file of
        the default namespace (the backends pass their own namespace's or secret's signer).
    :param owner: names the user of this codec in log messages.
    """

    __slots__ = ("serializer", "native", "signer", "owner", "rejected", "_accept_pickle")

    def __init__(self, serializer: Union[str, Serializer, Any, None] = "pickle", *,
                 signer: Optional[ValueSigner] = None, owner: str = "uwcache") -> None:
        self.serializer = get_serializer(serializer)
        # uwcache's own serializers (however named) keep the fast path; a user's gets every value
        self.native = not isinstance(self.serializer, CustomSerializer)
        self.signer = signer if signer is not None else ValueSigner()
        self.owner = owner
        self.rejected = 0  #: values refused by this codec because their HMAC did not verify
        self._accept_pickle = self.serializer.tag == TAG_PICKLE

    def encode(self, value: Any) -> bytes:
        kind = type(value)
        if not self.native:
            return self._signed(TAG_CUSTOM, self.serializer.dumps(value))
        if kind is int and INT64_MIN <= value <= INT64_MAX:
            return value.to_bytes(COUNTER_SIZE, "little", signed=True)
        if kind is bytes or kind is bytearray or kind is memoryview:
            data = _BYTES + bytes(value)
        elif kind is str:
            data = _STR + value.encode("utf-8", "surrogatepass")
        else:
            tag = self.serializer.tag
            payload = self.serializer.dumps(value)
            if tag == TAG_PICKLE or tag == TAG_CUSTOM:
                return self._signed(tag, payload)
            data = bytes((tag,)) + payload
        return _PAD + data if len(data) == COUNTER_SIZE else data

    def _signed(self, tag: int, payload: bytes) -> bytes:
        head = bytes((tag,))
        signer = self.signer
        return head + signer.tag(head + payload) + payload  # never 8 bytes: no pad needed

    def decode(self, data: bytes) -> Any:
        """The stored value, or :data:`MISS` when its HMAC does not verify."""
        if len(data) == COUNTER_SIZE:
            return int.from_bytes(data, "little", signed=True)
        tag = data[0]
        if tag == TAG_PAD and len(data) == COUNTER_SIZE + 1:
            data = data[1:]
            tag = data[0]
        if tag == TAG_BYTES:
            return data[1:]
        if tag == TAG_STR:
            return data[1:].decode("utf-8", "surrogatepass")
        if tag == TAG_JSON:  # safe to load whatever this reader's serializer is
            return json.loads(data[1:])
        if tag == TAG_PICKLE:
            if not self._accept_pickle:
                raise SerializerMismatch(
                    f"refusing to unpickle a cached value with the {self.serializer.name!r} serializer "
                    "(another process stores pickle in this cache; configure the same serializer everywhere)"
                )
            payload = self._verified(data)
            return MISS if payload is None else pickle.loads(payload)
        if tag == TAG_CUSTOM:
            if self.serializer.tag != TAG_CUSTOM:
                raise SerializerMismatch(
                    f"a cached value was written with a custom serializer; this reader uses {self.serializer.name!r}"
                )
            payload = self._verified(data)
            return MISS if payload is None else self.serializer.loads(payload)
        return data  # not written by a framework layer: the raw bytes

    def readable(self, data: bytes) -> bool:
        """Whether :meth:`decode` would give a value, found without deserializing it: False
        for a signed kind whose HMAC does not verify (a :data:`MISS`) and for one this reader's
        serializer refuses (``decode`` raises :class:`SerializerMismatch`)."""
        if len(data) == COUNTER_SIZE:
            return True
        tag = data[0]
        if tag == TAG_PICKLE:
            return self._accept_pickle and self._verified(data) is not None
        if tag == TAG_CUSTOM:
            return self.serializer.tag == TAG_CUSTOM and self._verified(data) is not None
        return True

    def _verified(self, data: bytes) -> Optional[bytes]:
        """The payload of a signed value, or None (counted, logged) if its tag is wrong."""
        end = 1 + MAC_SIZE
        if len(data) >= end and self.signer.verify(data[1:end], data[:1] + data[end:]):
            return data[end:]
        self.rejected += 1
        _count_rejected()
        _rejections(
            logging.WARNING, self.owner,
            "%s: ignored a cached value whose signature does not verify (forged, written with another "
            "key or secret, or by an older uwcache); treated as a miss. %d rejected by this process so far",
            self.owner, rejected_values(),
        )
        return None


def engine_expires(timeout: float) -> int:
    """The engine's ``expires`` (whole seconds, 0 = never) for a positive timeout in seconds.

    The engine expires an item once its whole-second clock reaches ``now + expires``, so a
    plain ``int(timeout)`` could live up to a second less than asked (a 1 s timeout set at
    x.9 s would last 0.1 s). Rounding the absolute deadline up keeps every item at least
    ``timeout`` seconds and at most about one second more.
    """
    if timeout >= _MAX_EXPIRES:
        return 0
    now = time.time()
    expires = math.ceil(now + timeout) - int(now)
    return max(expires, 1)


def add_to_counter(
    cache: Any,
    key: Union[str, bytes],
    delta: Any,
    codec: Codec,
    *,
    create: bool,
    missing: Callable[[], BaseException],
) -> Any:
    """Add ``delta`` to the value at ``key`` and return the result.

    Native counters (8-byte values) are updated with the engine's atomic ``incr``, which
    leaves the item's expiry alone. Other numeric values (a float, an int past 64 bits) are
    read, added to in Python and written back with their remaining TTL: correct, but not
    atomic. With ``create`` a missing key starts at the cache's ``math_initial`` (0 by
    default); without it, ``missing()`` is raised.

    Without ``create`` there is a window between the existence check and the engine's
    ``incr``: if another process deletes (or expiry removes) the key exactly then, ``incr``
    recreates it. It is created with a 1-second TTL so such a stray counter cannot linger.
    """
    native = type(delta) is int and INT64_MIN <= delta <= INT64_MAX
    if native:
        if not create and key not in cache:
            raise missing()
        try:
            result = cache.incr(key, delta, 0 if create else 1)
        except NotAnInteger:
            pass
        else:
            # The engine wraps around like C; Python ints do not: store the true sum instead.
            if (delta > 0 and result < INT64_MIN + delta) or (delta < 0 and result > INT64_MAX + delta):
                true = result + (2**64 if delta > 0 else -(2**64))
                _rewrite(cache, key, codec.encode(true))
                return true
            return result
    raw = cache.get(key)
    if raw is None:
        if not create:
            raise missing()
        value: Any = cache.math_initial
    else:
        value = codec.decode(raw)
        if value is MISS:  # a value that failed its signature check is not there
            if not create:
                raise missing()
            value = cache.math_initial
    result = value + delta  # TypeError for None, str, ... as in Django and cachelib
    if type(result) is int and INT64_MIN <= result <= INT64_MAX:
        # a native counter whatever the serializer: the next incr is then atomic
        _rewrite(cache, key, result.to_bytes(COUNTER_SIZE, "little", signed=True))
    else:
        _rewrite(cache, key, codec.encode(result))
    return result


def _rewrite(cache: Any, key: Union[str, bytes], data: bytes) -> None:
    """Overwrite a value, keeping the item's remaining time to live."""
    try:
        ttl: Optional[int] = cache.ttl(key)
    except KeyError:
        ttl = None
    cache.set(key, data, ttl or 0)
