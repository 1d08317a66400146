"""Replay memory of signed replication: the highest (epoch, sequence) accepted from each
sender, in a small file mapped from the namespace directory, so that a receiver that
restarts (or a standby that takes over) keeps refusing what was already applied.

One file per receiving cache, ``<cache file>.udp-seen``: a 16-byte header and ``SLOTS``
slots of ``sender | epoch | highest sequence | bitmap | timestamp`` (u64le each).  The
bitmap remembers which of the 64 sequences below the highest were seen, so packets that
UDP delivers slightly out of order are still applied once.  A sender's slot is found
by open addressing (``PROBES`` places from ``sender % SLOTS``).  A slot is reused only
when its newest packet is older than twice the time window: everything that sender
ever sent is then refused as stale anyway.  If all the places of a new sender hold
fresh slots, its packets are refused (counted), never accepted unchecked.

Only the process that holds the cache's receiver lock writes the file (one writer).
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Dict, Optional

from .. import _fs
from ..errors import CacheError, ConfigError

SLOTS = 4096
PROBES = 16
_MAGIC = b"UWCSEEN1"
_HEAD = struct.Struct("<8sII")  # magic, slots, reserved
_SLOT = struct.Struct("<QQQQQ")  # sender (0 = free), epoch, highest, bitmap, timestamp
_SIZE = _HEAD.size + SLOTS * _SLOT.size
_WINDOW_BITS = 64
_MASK = (1 << 64) - 1


def open_private(directory: str, name: str, *, what: str) -> int:
    """Open (or create, mode 0600) `name` inside `directory` for reading and writing,
    relative to the directory's descriptor and without following links; the directory
    and the file must belong to us and be closed to other users.  ConfigError otherwise
    (the checks are :mod:`uwcache._fs`'s, whose refusals are CacheErrors)."""
    path = os.path.join(directory, name)
    try:
        dfd = _fs.open_own_dir(directory, f"the directory of the {what}")
        try:
            return _fs.open_private(dfd, name, os.O_RDWR | os.O_CREAT, path=path, what=f"the {what}",
                                    exact_mode=True)
        finally:
            os.close(dfd)
    except ConfigError:
        raise
    except CacheError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot open the {what} {path}: {exc.strerror or exc}") from None


class SeenTable:
    """The shared replay memory of one receiving cache (see the module docstring)."""

    def __init__(self, directory: str, name: str, window: int) -> None:
        self.window = int(window)
        self.path = os.path.join(directory, name)
        fd = open_private(directory, name, what="replay memory")
        try:
            size = os.fstat(fd).st_size
            fresh = size != _SIZE
            if fresh:
                os.ftruncate(fd, 0)
                os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)
        magic, slots, _ = _HEAD.unpack_from(self._map, 0)
        if fresh or magic != _MAGIC or slots != SLOTS:
            self._map[:] = bytes(_SIZE)
            _HEAD.pack_into(self._map, 0, _MAGIC, SLOTS, 0)
        self._index: Dict[int, int] = {}

    def close(self) -> None:
        try:
            self._map.close()
        except (BufferError, ValueError):
            pass

    def _offset(self, slot: int) -> int:
        return _HEAD.size + slot * _SLOT.size

    def _find(self, sender: int, now: int) -> Optional[int]:
        """The slot of `sender`, or a free/reusable one for it (None if all are fresh)."""
        slot = self._index.get(sender)
        if slot is not None and _SLOT.unpack_from(self._map, self._offset(slot))[0] == sender:
            return slot
        start = sender % SLOTS
        reusable = None
        for i in range(PROBES):
            s = (start + i) % SLOTS
            owner, _, _, _, stamp = _SLOT.unpack_from(self._map, self._offset(s))
            if owner == sender:
                self._index[sender] = s
                return s
            if reusable is None and (owner == 0 or stamp + 2 * self.window < now):
                reusable = s
        if reusable is not None:
            old = _SLOT.unpack_from(self._map, self._offset(reusable))[0]
            self._index.pop(old, None)
            _SLOT.pack_into(self._map, self._offset(reusable), sender, 0, 0, 0, 0)
            self._index[sender] = reusable
        return reusable

    def check(self, sender: int, epoch: int, sequence: int, timestamp: int, now: int) -> Optional[str]:
        """Record the packet and return None if it is new; else why it is refused."""
        if sender == 0:
            return "sender id 0 is reserved"
        slot = self._find(sender, now)
        if slot is None:
            return f"too many fresh senders (more than {PROBES} share a place in the replay memory)"
        offset = self._offset(slot)
        _, known_epoch, highest, bitmap, stamp = _SLOT.unpack_from(self._map, offset)
        if epoch < known_epoch:
            return f"replayed packet (epoch {epoch} of sender {sender:x} is older than {known_epoch})"
        if epoch > known_epoch or (highest == 0 and bitmap == 0):
            highest, bitmap = sequence, 1
        elif sequence > highest:
            shift = sequence - highest
            bitmap = ((bitmap << shift) | 1) & _MASK if shift < _WINDOW_BITS else 1
            highest = sequence
        else:
            back = highest - sequence
            if back >= _WINDOW_BITS:
                return (f"replayed or too old packet (sequence {sequence} of sender {sender:x}, "
                        f"{back} behind the newest)")
            if bitmap >> back & 1:
                return f"replayed packet (sequence {sequence} of sender {sender:x} already applied)"
            bitmap |= 1 << back
        _SLOT.pack_into(self._map, offset, sender, epoch, highest, bitmap, max(stamp, timestamp))
        return None
