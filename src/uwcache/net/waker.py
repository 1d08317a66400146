"""A selector loop's wake-up line: another thread writes a byte so that ``select()`` returns.

The cache server and the UDP receiver both run one selector thread that ``close()`` must stop
from outside; this is the one copy of that plumbing."""

from __future__ import annotations

import selectors
import socket
import threading
from typing import Any, Optional


class Waker:
    """A non-blocking socket pair whose read end is registered on ``selector`` with ``data``."""

    def __init__(self, selector: selectors.BaseSelector, data: Any = None) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)
        selector.register(self.reader, selectors.EVENT_READ, data)

    def wake(self) -> None:
        """Make the selector return (a full pipe already means a wake-up is pending)."""
        try:
            self.writer.send(b"x")
        except OSError:
            pass

    def drain(self) -> None:
        """Read the pending wake-ups (in the selector thread, when the reader is ready)."""
        try:
            while self.reader.recv(4096):
                pass
        except OSError:  # BlockingIOError included: nothing left
            pass

    def close(self) -> None:
        for sock in (self.reader, self.writer):
            try:
                sock.close()
            except OSError:
                pass


def stop_thread(waker: Waker, thread: Optional[threading.Thread], timeout: float = 10.0) -> None:
    """Wake a selector thread that has been told to stop and wait for it (not from itself)."""
    waker.wake()
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout=timeout)
