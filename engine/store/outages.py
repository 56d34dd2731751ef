"""Whether a store works, as the prefetch worker sees it: the cache, and
its own state (worker.db).

When memcached or redis goes down, or the local store's disk fills up,
every job fails on it. An operator needs to hear that once when it starts
and once when it ends, not once per certificate, and the worker needs to
know when it ends: the certificates that failed on the cache are due again
at once, since a restarted cache is empty and backoff meant for a failing
responder must not keep its staples out of it.

What ends an outage depends on its kind (the error's reason; the worker's
state is written, not read, so its outages end with a write):

- cache_unavailable (unreachable, cannot open): any call that works;
- cache_unwritable (disk full, read-only file system): a write that works,
  since reads kept working all along;
- cache_damaged (a corrupt file): nothing short of a restart, after the
  operator repaired the file; entries that can still be read are renewed
  meanwhile, and the outage is not announced again for each of them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from engine.errors import CacheUnavailableError, StapleError, StoreDamagedError, StoreUnwritableError
from engine.locks.fetchlocks import LockTimeoutError


@dataclass(frozen=True, slots=True)
class Outage:
    since: float
    #: the first error of the outage
    error: str
    #: its reason: cache_unavailable | cache_unwritable | cache_damaged
    reason: str = CacheUnavailableError.reason
    #: when it ended; None while it goes on
    until: float | None = None


def is_cache_down(error: BaseException) -> bool:
    return isinstance(error, CacheUnavailableError)


def says_cache_worked(error: BaseException) -> bool:
    """Does a refresh that failed so prove the cache answered?

    A refresh reads the cache before anything else, so an error met later
    (the responder's, the validation's) means the read worked. A busy
    fetch lock comes before the read and proves nothing.
    """
    return isinstance(error, StapleError) and not is_cache_down(error) and not isinstance(error, LockTimeoutError)


class StoreWatch:
    """One store's current outage, if any, and how many there were. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current: Outage | None = None
        self.outages = 0

    def failed(self, error: BaseException, now: float) -> Outage | None:
        """A cache call failed; the new Outage if this one starts it."""
        with self._lock:
            if self.current is not None:
                return None
            reason = error.reason if isinstance(error, StapleError) else CacheUnavailableError.reason
            self.current = Outage(now, str(error), reason)
            self.outages += 1
            return self.current

    def worked(self, now: float, *, wrote: bool = False) -> Outage | None:
        """A cache call worked (a write, if ``wrote``); the Outage it ends, if any."""
        with self._lock:
            current = self.current
            if current is None or current.reason == StoreDamagedError.reason:
                return None
            if current.reason == StoreUnwritableError.reason and not wrote:
                return None
            self.current = None
            return Outage(current.since, current.error, current.reason, now)

    @property
    def up(self) -> bool:
        return self.current is None
