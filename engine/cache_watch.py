"""Whether the cache is reachable, as the prefetch worker sees it.

When memcached or redis goes down, every job fails on it. An operator
needs to hear that once when it starts and once when it ends, not once per
certificate, and the worker needs to know when it ends: the certificates
that failed on the cache are due again at once, since a restarted cache is
empty and backoff meant for a failing responder must not keep its staples
out of it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from engine.errors import CacheUnavailableError, StapleError
from engine.stripes import StripeTimeoutError


@dataclass(frozen=True, slots=True)
class Outage:
    since: float
    #: the first error of the outage
    error: str
    #: when it ended; None while it goes on
    until: float | None = None


def is_cache_down(error: BaseException) -> bool:
    return isinstance(error, CacheUnavailableError)


def says_cache_worked(error: BaseException) -> bool:
    """Does a refresh that failed so prove the cache answered?

    A refresh reads the cache before anything else, so an error met later
    (the responder's, the validation's) means the read worked. A busy
    stripe comes before the read and proves nothing.
    """
    return isinstance(error, StapleError) and not is_cache_down(error) and not isinstance(error, StripeTimeoutError)


class CacheWatch:
    """The current outage, if any, and how many there were. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current: Outage | None = None
        self.outages = 0

    def failed(self, error: BaseException, now: float) -> Outage | None:
        """A cache call failed; the new Outage if this one starts it."""
        with self._lock:
            if self.current is not None:
                return None
            self.current = Outage(now, str(error))
            self.outages += 1
            return self.current

    def worked(self, now: float) -> Outage | None:
        """A cache call worked; the Outage it ends, if any."""
        with self._lock:
            if self.current is None:
                return None
            ended = Outage(self.current.since, self.current.error, now)
            self.current = None
            return ended

    @property
    def up(self) -> bool:
        return self.current is None
