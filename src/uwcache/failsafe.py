"""How the framework layers (Django, Flask-Caching, cachelib, ``memoize``) survive cache failures.

A cache is an optimisation: by default a failure of the cache (a closed or full cache, a
region that does not match, a directory that cannot be opened, a value written with another
serializer) must not fail the request that used it. The layers catch :data:`FAILURES`, log
them at a limited rate (one record per owner and kind of failure per 10 seconds, with a count
of what was suppressed) and behave as on a miss. With ``ignore_exceptions=False`` (Django:
``OPTIONS["IGNORE_EXCEPTIONS"] = False``) they raise instead.

Programming errors are not cache failures and always raise: a value that cannot be pickled,
a key that is not valid for the framework (Django's ``InvalidCacheKey``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Callable, Dict, Tuple, Type

from .errors import CacheError

__all__ = ["FAILURES", "RateLimitedLog", "FailurePolicy"]

#: What counts as a cache failure: every uwcache error and operating-system errors
#: (opening a region or a key file).
FAILURES: Tuple[Type[BaseException], ...] = (CacheError, OSError)


class RateLimitedLog:
    """At most one record per ``interval`` seconds per kind, counting what it suppressed.

    The one copy: the framework layers' :class:`FailurePolicy`, the serializers and the
    network (``uwcache.net``: a flood of bad packets or connections must not flood the log)."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: Dict[str, Tuple[float, int]] = {}
        self._lock = threading.Lock()

    def __call__(self, level: int, kind: str, msg: str, *args: Any) -> bool:
        """Log unless ``kind`` was logged less than ``interval`` ago; True if logged."""
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(kind, (-1e18, 0))
            if now - last < self.interval:
                self._last[kind] = (last, suppressed + 1)
                return False
            self._last[kind] = (now, 0)
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self.logger.log(level, msg, *args)
        return True



class FailurePolicy:
    """One backend's choice between "log and miss" (default) and "raise"."""

    __slots__ = ("owner", "ignore", "failures", "_log")

    def __init__(self, owner: str, logger: logging.Logger, ignore: bool = True) -> None:
        if not isinstance(ignore, bool):
            raise TypeError(f"{owner}: ignore_exceptions must be True or False, got {ignore!r}")
        self.owner = owner
        self.ignore = ignore
        self.failures = 0  #: cache failures this backend turned into misses in this process
        self._log = RateLimitedLog(logger)

    def handle(self, operation: str, exc: BaseException) -> None:
        """Re-raise ``exc`` if this backend raises; else count and log it (rate-limited)."""
        if not self.ignore:
            raise exc
        self.failures += 1
        self._log(
            logging.WARNING, type(exc).__name__,
            "%s: cache %s failed, treated as a miss (%s: %s); set ignore_exceptions=False to raise instead",
            self.owner, operation, type(exc).__name__, exc,
        )

    def warn(self, kind: str, msg: str, *args: Any) -> None:
        """A rate-limited warning for a write that was refused but is not a failure (a value
        too large for an item, a full cache): the call already answers False."""
        self._log(logging.WARNING, kind, msg, *args)


def guarded(miss: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a backend method so that a cache failure inside it gives ``miss`` (a value, or
    a callable given the call's ``(args, kwargs)``), or raises, as ``self.failure_policy`` says."""

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except FAILURES as exc:
                self.failure_policy.handle(method.__name__, exc)
                return miss(args, kwargs) if callable(miss) else miss

        return wrapper

    return decorate
