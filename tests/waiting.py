"""Polling helpers for conditions another thread or process makes true."""
import time
from typing import Callable


def wait_until(cond: Callable[[], object], timeout: float = 5.0, step: float = 0.001) -> bool:
    """Poll cond() every `step` seconds until it is true (True) or `timeout` passes (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition",
             step: float = 0.01) -> None:
    """wait_until, failing the test with `what` when the time runs out."""
    if not wait_until(predicate, timeout, step):
        raise AssertionError(f"timed out waiting for {what}")
