"""Authenticating the values the framework layers unpickle.

Unpickling runs code, and a cache can be written from outside the process: by the UDP
replication door, by the cache server, by another local user who reached the region. So every
value that the framework layers (Django, Flask-Caching, cachelib, ``memoize``) would hand to
pickle or to a user's serializer carries a tag: ``HMAC-SHA256(key, tag byte + payload)``
truncated to 16 bytes. A value whose tag does not verify is a miss: it is counted
(:func:`rejected_values`, and ``Codec.rejected`` per backend), logged at a limited rate and
never unpickled.

Where the key comes from, first match wins:

1. an explicit secret (``secret=`` of the cachelib/Flask backends and ``memoize``, Django's
   ``OPTIONS["SECRET"]``); the key is derived from it;
2. the cache's replication secret (its ``secret`` option), so nodes that replicate with the
   same secret verify each other's values; the key is derived from it;
3. a random 32-byte key file, ``value-signing.key``, created ``0600`` on first use in the
   namespace directory (which is ``0700`` and ours). Every process of the same user in the
   same namespace shares it; no other user can read it.

Derivation is ``HMAC-SHA256(secret, "uwcache value signing v1")``, so the signing key is never
the replication secret itself.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
import threading
from typing import Dict, Optional, Union

from .options import resolve_namespace
from .errors import CacheError

__all__ = ["ValueSigner", "KEY_FILE", "MAC_SIZE", "rejected_values", "derive_key"]

log = logging.getLogger("uwcache.signing")

KEY_FILE = "value-signing.key"
KEY_SIZE = 32
MAC_SIZE = 16
_DERIVATION_LABEL = b"uwcache value signing v1"

_lock = threading.Lock()
_file_keys: Dict[str, bytes] = {}  # namespace directory -> key (the file never changes)
_rejected = 0


def rejected_values() -> int:
    """How many cached values this process refused because their tag did not verify."""
    return _rejected


def _count_rejected() -> None:
    global _rejected
    _rejected += 1  # a statistic: a lost increment under threads is acceptable


def derive_key(secret: Union[str, bytes]) -> bytes:
    """The value-signing key for a secret (a framework secret or a replication secret)."""
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not raw:
        raise ValueError("the value-signing secret must not be empty")
    return hmac.new(raw, _DERIVATION_LABEL, hashlib.sha256).digest()


class ValueSigner:
    """Signs and verifies payloads with one key (see the module doc for where it comes from).

    The key file is read (or created) on first use, not at construction, so a backend can be
    configured at import time, before a server forks.
    """

    __slots__ = ("namespace", "from_secret", "_key")

    def __init__(self, namespace: Optional[str] = None, secret: Union[str, bytes, None] = None) -> None:
        self.namespace = resolve_namespace(namespace)
        self.from_secret = secret is not None
        self._key: Optional[bytes] = derive_key(secret) if secret is not None else None

    @property
    def key(self) -> bytes:
        key = self._key
        if key is None:
            key = self._key = load_key_file(self.namespace)
        return key

    def tag(self, data: bytes) -> bytes:
        """The 16-byte tag of ``data`` (which starts with the serializer's tag byte)."""
        return hmac.digest(self.key, data, "sha256")[:MAC_SIZE]  # the one-shot C path

    def verify(self, tag: bytes, data: bytes) -> bool:
        return hmac.compare_digest(self.tag(data), tag)

    def __repr__(self) -> str:
        source = "secret" if self.from_secret else f"key file in namespace {self.namespace!r}"
        return f"<uwcache.signing.ValueSigner {source}>"


def load_key_file(namespace: Optional[str] = None) -> bytes:
    """The namespace's value-signing key, created (random, ``0600``) if there is none yet."""
    from .cache import namespace_dir  # cache imports the engine: keep this module light

    directory = namespace_dir(namespace, create=True)
    with _lock:
        key = _file_keys.get(directory)
        if key is not None:
            return key
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            dir_fd = os.open(directory, flags)
        except OSError as exc:
            raise CacheError(f"cannot open the namespace directory {directory}: {exc.strerror}") from exc
        try:
            key = _read_or_create(dir_fd, directory)
        finally:
            os.close(dir_fd)
        _file_keys[directory] = key
        return key


def _read_or_create(dir_fd: int, directory: str) -> bytes:
    path = os.path.join(directory, KEY_FILE)
    for _ in range(3):
        try:
            fd = os.open(KEY_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            _create(dir_fd, directory)
            continue
        except OSError as exc:  # ELOOP: a symlink where the key should be
            raise CacheError(f"refusing the value-signing key {path}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            problem = _key_file_problem(st)
            if problem:
                raise CacheError(
                    f"refusing the value-signing key {path}: {problem} (owner uid {st.st_uid}); "
                    "remove it, or give the backend an explicit secret"
                )
            data = os.read(fd, KEY_SIZE + 1)
        finally:
            os.close(fd)
        if len(data) != KEY_SIZE:
            raise CacheError(f"refusing the value-signing key {path}: it holds {len(data)} bytes, not {KEY_SIZE}")
        return data
    raise CacheError(f"could not create the value-signing key {path}")  # pragma: no cover - racing deletes


def _key_file_problem(st: os.stat_result) -> str:
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_uid != os.geteuid():
        return f"it is not owned by this user (uid {os.geteuid()})"
    if st.st_mode & 0o077:
        return f"its mode {stat.S_IMODE(st.st_mode):o} lets other users read or write it"
    return ""


def _create(dir_fd: int, directory: str) -> None:
    """Write a fresh key under a temporary name, then link it in: readers never see a partial
    key, and when two processes race the first link wins and both read that one."""
    tmp = f".{KEY_FILE}.{os.getpid()}.{os.urandom(6).hex()}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        raise CacheError(f"cannot create the value-signing key in {directory}: {exc.strerror}") from exc
    try:
        try:
            os.write(fd, os.urandom(KEY_SIZE))
        finally:
            os.close(fd)
        try:
            os.link(tmp, KEY_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            pass
    finally:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
