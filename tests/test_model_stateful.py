"""Model-based tests: random operation sequences on a real cache against a small pure-Python model.

Two machines, both through the native :class:`uwcache.Cache` API:

* a single-block cache (``max_items=6`` -> 5 items, ``block_size=8``, ``key_size=4``,
  ``math_initial=3``) modelled by a dict plus the capacity and size rules;
* a ``full_purge_lru`` cache (3 items) modelled by an ordered dict in LRU order, which also
  pins which item is evicted and the ``evictions`` counter.

After every step the model must agree and ``cache.check()`` (the engine's structure
verification) must find nothing wrong.
"""

from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Tuple, Type, Union

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import uwcache
from uwcache.cache import destroy
from uwcache.errors import CacheFull, EmptyValue, KeyTooLong, NotAnInteger, ValueTooLarge

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
KEY_SIZE = 4
BLOCK_SIZE = 8

SETTINGS = settings(max_examples=50, stateful_step_count=40, deadline=None, derandomize=True, database=None)

_names = itertools.count()

keys = st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f", b"g", "h", b"\xff\x00", b"abcd", b"", b"toolong"])
values = st.one_of(st.binary(min_size=0, max_size=BLOCK_SIZE + 2),
                   st.integers(INT64_MIN, INT64_MAX).map(lambda n: n.to_bytes(8, "little", signed=True)))
operands = st.one_of(st.integers(-5, 5), st.integers(INT64_MIN, INT64_MAX), st.sampled_from([INT64_MIN, INT64_MAX]))
math_ops = st.sampled_from(["incr", "decr", "mul", "div"])

Outcome = Tuple[str, Any]


def outcome(fn: Callable[[], Any]) -> Outcome:
    """("ok", result) or ("raises", exception class) so model and cache compare in one assert."""
    try:
        return ("ok", fn())
    except (CacheFull, EmptyValue, KeyTooLong, ValueTooLarge, NotAnInteger) as exc:
        return ("raises", type(exc))


class ModelError(Exception):
    def __init__(self, kind: Type[Exception]) -> None:
        self.kind = kind


def as_bytes(key: Union[str, bytes]) -> bytes:
    return key.encode() if isinstance(key, str) else key


def wrap(n: int) -> int:
    return (n + 2**63) % 2**64 - 2**63


def c_math(op: str, a: int, b: int) -> int:
    """C int64 arithmetic as the engine does it: wrap, truncate toward zero, x/0 = 0,
    INT64_MIN / -1 = INT64_MIN (uWSGI dies there instead)."""
    if op == "incr":
        return wrap(a + b)
    if op == "decr":
        return wrap(a - b)
    if op == "mul":
        return wrap(a * b)
    if b == 0:
        return 0
    q = abs(a) // abs(b)
    return wrap(q if (a < 0) == (b < 0) else -q)


class CacheModel:
    """The cache's observable rules: limits first, then presence, then capacity."""

    def __init__(self, capacity: int, math_initial: int, lru: bool) -> None:
        self.capacity = capacity
        self.math_initial = math_initial
        self.lru = lru
        self.items: "OrderedDict[bytes, bytes]" = OrderedDict()  # least recently used first
        self.evictions = 0

    def check_key(self, key: bytes) -> None:
        if not key:
            raise ModelError(EmptyValue)
        if len(key) > KEY_SIZE:
            raise ModelError(KeyTooLong)

    def touch(self, key: bytes) -> None:
        if self.lru:
            self.items.move_to_end(key)

    def make_room(self) -> None:
        if len(self.items) < self.capacity:
            return
        if not self.lru:
            raise ModelError(CacheFull)
        self.items.popitem(last=False)
        self.evictions += 1

    def write(self, key: bytes, value: bytes, overwrite: bool) -> bool:
        self.check_key(key)
        if not value:
            raise ModelError(EmptyValue)
        if len(value) > BLOCK_SIZE:
            raise ModelError(ValueTooLarge)
        if key in self.items:
            if not overwrite:
                return False
            self.items[key] = value
            self.touch(key)
            return True
        self.make_room()
        self.items[key] = value
        return True

    def get(self, key: bytes) -> Optional[bytes]:
        self.check_key(key)
        if key in self.items:
            self.touch(key)
            return self.items[key]
        return None

    def contains(self, key: bytes) -> bool:
        self.check_key(key)
        return key in self.items

    def delete(self, key: bytes) -> bool:
        self.check_key(key)
        return self.items.pop(key, None) is not None

    def math(self, op: str, key: bytes, n: int) -> int:
        self.check_key(key)
        if key in self.items:
            current = self.items[key]
            if len(current) != 8:
                raise ModelError(NotAnInteger)
            result = c_math(op, int.from_bytes(current, "little", signed=True), n)
            self.items[key] = result.to_bytes(8, "little", signed=True)  # no LRU move (FIXEXPIRE)
            return result
        result = c_math(op, self.math_initial, n)
        self.make_room()
        self.items[key] = result.to_bytes(8, "little", signed=True)
        return result

    def get_int(self, key: bytes) -> Optional[int]:
        value = self.get(key)
        if value is None:
            return None
        if len(value) != 8:
            raise ModelError(NotAnInteger)
        return int.from_bytes(value, "little", signed=True)


def model_outcome(fn: Callable[[], Any]) -> Outcome:
    try:
        return ("ok", fn())
    except ModelError as exc:
        return ("raises", exc.kind)


class CacheMachine(RuleBasedStateMachine):
    """Rules shared by both machines; subclasses choose the cache options."""

    options: Dict[str, Any] = {}
    lru = False

    def __init__(self) -> None:
        super().__init__()
        self.namespace = f"model-{os.getpid()}-{next(_names)}"
        self.cache = uwcache.open_cache("m", namespace=self.namespace, **self.options)
        self.model = CacheModel(self.cache.capacity, self.cache.math_initial, self.lru)

    def teardown(self) -> None:
        self.cache.close()
        destroy("m", namespace=self.namespace)

    def agree(self, cache_fn: Callable[[], Any], model_fn: Callable[[], Any]) -> None:
        got, expected = outcome(cache_fn), model_outcome(model_fn)
        assert got == expected, f"cache {got!r}, model {expected!r}"

    @rule(key=keys, value=values)
    def set(self, key: Union[str, bytes], value: bytes) -> None:
        k = as_bytes(key)
        self.agree(lambda: self.cache.set(key, value), lambda: self.model.write(k, value, True) and None)

    @rule(key=keys, value=values)
    def add(self, key: Union[str, bytes], value: bytes) -> None:
        k = as_bytes(key)
        self.agree(lambda: self.cache.add(key, value), lambda: self.model.write(k, value, False))

    @rule(key=keys)
    def get(self, key: Union[str, bytes]) -> None:
        self.agree(lambda: self.cache.get(key), lambda: self.model.get(as_bytes(key)))

    @rule(key=keys)
    def contains(self, key: Union[str, bytes]) -> None:
        self.agree(lambda: key in self.cache, lambda: self.model.contains(as_bytes(key)))

    @rule(key=keys)
    def delete(self, key: Union[str, bytes]) -> None:
        self.agree(lambda: self.cache.delete(key), lambda: self.model.delete(as_bytes(key)))

    @rule(op=math_ops, key=keys, n=operands)
    def math(self, op: str, key: Union[str, bytes], n: int) -> None:
        self.agree(lambda: getattr(self.cache, op)(key, n), lambda: self.model.math(op, as_bytes(key), n))

    @rule(key=keys)
    def get_int(self, key: Union[str, bytes]) -> None:
        self.agree(lambda: self.cache.get_int(key), lambda: self.model.get_int(as_bytes(key)))

    @rule()
    def clear(self) -> None:
        self.cache.clear()
        self.model.items.clear()

    @invariant()
    def same_keys(self) -> None:
        listed = self.cache.keys()
        assert len(listed) == len(set(listed))
        assert set(listed) == set(self.model.items)
        assert len(self.cache) == len(self.model.items)

    @invariant()
    def structure_sound(self) -> None:
        assert self.cache.check() is None


class SingleBlockMachine(CacheMachine):
    options = dict(max_items=6, block_size=BLOCK_SIZE, key_size=KEY_SIZE, math_initial=3, hash_size=3)

    @invariant()
    def values_agree(self) -> None:
        # without LRU a get() changes nothing but the hit counters
        for key, value in self.model.items.items():
            assert self.cache.get(key) == value


class LruMachine(CacheMachine):
    options = dict(max_items=4, block_size=BLOCK_SIZE, key_size=KEY_SIZE, full_purge_lru=True, hash_size=2)
    lru = True

    @invariant()
    def evictions_agree(self) -> None:
        assert self.cache.stats()["evictions"] == self.model.evictions


TestSingleBlockModel = SingleBlockMachine.TestCase
TestSingleBlockModel.settings = SETTINGS
TestLruModel = LruMachine.TestCase
TestLruModel.settings = SETTINGS
