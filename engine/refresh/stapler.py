"""The request path and refreshes under the fetch locks (docs/design.md, "The request path").

``Stapler.staple(leaf)`` is what a handshake would call. It reads the cache
without taking any fetch lock, and in the common case returns at once.
Only when nothing usable is cached (or, with prefetch off, when the staple
is due) does it take the certificate's fetch lock, look in the cache again
(another thread or process may have refreshed it while we waited), fetch
if still needed, and store. Every wait on that slow path is bounded by the
request budget: past it the answer is "no staple" (or the staple we
already have), never a handshake kept waiting.

``Stapler.refresh(leaf)`` is the same slow path for the prefetch worker,
``warm`` and ``fetch``: wait for the fetch lock, look again, fetch when due.
Reading the cache (``cached``, ``usable``, ``due``) is engine.refresh.reader's
StapleReader, which check and export use alone.

With ``lease`` on and a cache shared by several hosts (memcached, redis),
a refresher first adds a lease key with a TTL: one instance refreshes, the
others find the lease taken and use what it stores.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from enum import Enum

from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import StapleError
from engine.locks.fetchlocks import FetchLocks, LockTimeoutError
from engine.ocsp.certs import Leaf
from engine.ocsp.staple import Staple
from engine.refresh.fetch import FetchOptions, check_not_older, fetch, staple_write, store
from engine.refresh.freshness import DEFAULT_POLICY, FreshnessPolicy, expires_at
from engine.refresh.reader import StapleReader
from engine.responders.health import Asking, ResponderHealth, responder_key
from engine.store.cache import Cache

#: how often an instance that lost the lease looks for the winner's staple
LEASE_POLL = 0.05


class Verdict(Enum):
    """What second_look says when it has no Refresh to give."""

    #: nothing usable is cached, or it is due: fetch
    FETCH = "fetch"
    #: another instance holds the lease and nothing usable is cached: wait
    #: a while for its staple, then fetch
    AWAIT = "await"


FETCH, AWAIT = Verdict.FETCH, Verdict.AWAIT


@dataclass(frozen=True)
class StaplerOptions:
    #: a prefetch worker keeps staples fresh: the request path serves a due
    #: (but usable) staple at once instead of refreshing it itself
    prefetch: bool = True
    #: how long the request path may wait, fetch lock and responder together
    request_budget: float = 2.0
    #: one instance refreshes for all that share the cache
    lease: bool = False
    lease_ttl: int = 30


@dataclass(frozen=True)
class Lookup:
    """What the request path answers: a staple to send, or None and why."""

    staple: Staple | None
    #: cache | fetched | stale (due or refresh failed, still usable) | none
    source: str
    error: StapleError | None = None


@dataclass(frozen=True)
class Refresh:
    staple: Staple
    #: updated | fresh (nothing to do) | leased (another instance refreshes)
    action: str
    previous: Staple | None = None
    #: the TTL the staple was stored with; 0 when this refresh stored nothing
    ttl: int = 0


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Stapler(StapleReader):
    """The request path (staple) and one refresh (refresh), on top of reading."""

    def __init__(
        self,
        cache: Cache,
        locks: FetchLocks,
        *,
        fetch_options: FetchOptions = FetchOptions(),
        policy: FreshnessPolicy = DEFAULT_POLICY,
        options: StaplerOptions = StaplerOptions(),
        clock: Clock = SYSTEM_CLOCK,
        health: ResponderHealth | None = None,
    ) -> None:
        super().__init__(cache, policy=policy, clock=clock)
        self.locks = locks
        #: responders marked down, shared with every process on the host
        #: (None: every request goes out, as in a one-off library use)
        self.health = health
        self.fetch_options = fetch_options
        self.options = options

    def close(self) -> None:
        """Close the cache and let go of the lock directory (RuntimeError while
        a thread of this process still holds a fetch lock)."""
        try:
            super().close()
        finally:
            self.locks.close()

    # -- the request path ----------------------------------------------------

    def staple(self, leaf: Leaf) -> Lookup:
        """A staple to send now, never waiting past the request budget."""
        current = self.cached(leaf)
        now = self.clock.now()
        if self.usable(current, now) and (self.options.prefetch or not self.due(current, now)):
            return Lookup(current, "cache")
        deadline = time.monotonic() + self.options.request_budget
        fallback = current if self.usable(current, now) else None
        try:
            result = self.refresh(leaf, lock_timeout=self.options.request_budget, deadline=deadline)
        except StapleError as error:
            return Lookup(fallback, "stale" if fallback else "none", error)
        if not self.usable(result.staple, self.clock.now()):
            return Lookup(fallback, "stale" if fallback else "none")
        return Lookup(result.staple, "fetched" if result.action == "updated" else "cache")

    # -- refreshing ----------------------------------------------------------

    def refresh(
        self,
        leaf: Leaf,
        *,
        force: bool = False,
        replace_from: float | None = None,
        lock_timeout: float | None = None,
        deadline: float | None = None,
    ) -> Refresh:
        """Make sure a current staple is cached: fetch unless one is fresh.

        Takes the certificate's fetch lock (waiting at most ``lock_timeout``), looks in the
        cache again, and fetches only when the staple is missing, unusable
        or due, or ``force``, or when it is still one whose thisUpdate is
        ``replace_from`` or older: the prefetch worker's way of saying "the
        staple I planned to renew now", which its own schedule (jitter,
        max_delay) may put before the renewal point; a newer one, which
        someone else fetched meanwhile, is left alone. A failed or invalid
        fetch raises and leaves the cache as it was. ``deadline``
        (time.monotonic) bounds the fetch.
        """
        with self.locks.hold(leaf.cert_id, timeout=lock_timeout):
            return self._refresh_held(leaf, force, replace_from, deadline)

    def _refresh_held(
        self, leaf: Leaf, force: bool, replace_from: float | None, deadline: float | None
    ) -> Refresh:
        current = self.cached(leaf)
        verdict = self.second_look(leaf, current, force=force, replace_from=replace_from)
        if isinstance(verdict, Refresh):
            return verdict
        if verdict == AWAIT:
            theirs = self._await_other_instance(leaf, deadline)
            if theirs is not None:
                return Refresh(theirs, "leased", current)
            # the other instance gave nothing in time: fetch ourselves
            # rather than leave a handshake without a staple
        options = self.fetch_options
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockTimeoutError("request budget spent waiting for the fetch lock", leaf.cert_id)
            transport = replace(options.transport, timeout=min(options.transport.timeout, left))
            options = replace(options, transport=transport)
        with self._asking(leaf, current):
            staple = fetch(leaf, options, self.clock)
        check_not_older(staple, current, f"response from {leaf.responder_url()}")
        return self.store_fetched(leaf, staple, current)

    def second_look(
        self, leaf: Leaf, current: Staple | None, *, force: bool = False, replace_from: float | None = None
    ) -> Refresh | Verdict:
        """What to do, the fetch lock held and ``current`` read again from the cache.

        A Refresh when there is nothing to fetch (the staple is fresh, or
        another instance holds the lease and a usable staple is cached);
        FETCH; or AWAIT, when another instance holds the lease and nothing
        usable is cached: wait a while for its staple, then fetch.
        """
        now = self.clock.now()
        wanted = replace_from is not None and current is not None and current.this_update <= replace_from
        if not force and not wanted and self.usable(current, now) and not self.due(current, now):
            return Refresh(current, "fresh", current)  # type: ignore[arg-type]
        if self.options.lease and self.cache.shared and not force:
            if not self.cache.add_lease(leaf.cert_id, owner_id(), self.options.lease_ttl):
                if self.usable(current, now):
                    return Refresh(current, "leased", current)  # type: ignore[arg-type]
                return AWAIT
        return FETCH

    def ask(self, leaf: Leaf, current: Staple | None) -> Asking | None:
        """Leave to ask the leaf's responder (engine.responders.health), or None when
        health is not kept; raises ResponderDownError when it is down.
        ``current``: the cached staple, which may earn an early probe."""
        if self.health is None:
            return None
        return self.health.ask(responder_key(leaf.responder_url()), self._expires(current))

    def _asking(self, leaf: Leaf, current: Staple | None) -> AbstractContextManager[None]:
        if self.health is None:
            return nullcontext()
        return self.health.asking(responder_key(leaf.responder_url()), self._expires(current))

    def _expires(self, current: Staple | None) -> float | None:
        """When ``current`` stops being servable; None when it already has (or is absent)."""
        if current is None or not self.usable(current, self.clock.now()):
            return None
        return expires_at(current.this_update, current.next_update, self.policy)

    def store_fetched(self, leaf: Leaf, staple: Staple, current: Staple | None) -> Refresh:
        """Store a fetched, validated staple; what the refresh came to."""
        ttl = store(self.cache, leaf, staple, self.clock.now(), self.policy)
        self._remember(leaf, staple)
        return Refresh(staple, "updated", current, ttl)

    def store_fetched_many(self, fetched: list[tuple[Leaf, Staple, Staple | None]]) -> list[Refresh]:
        """``store_fetched`` for several (leaf, staple, current): one write to the store for all."""
        now = self.clock.now()
        writes = [staple_write(self.cache, leaf, staple, now, self.policy) for leaf, staple, _ in fetched]
        self.cache.set_many([write for write in writes if write is not None])
        refreshes = []
        for (leaf, staple, current), write in zip(fetched, writes):
            self._remember(leaf, staple)
            refreshes.append(Refresh(staple, "updated", current, write.ttl if write is not None else 0))
        return refreshes

    def _await_other_instance(self, leaf: Leaf, deadline: float | None) -> Staple | None:
        """Poll the shared cache while another instance holds the lease."""
        give_up = time.monotonic() + self.options.lease_ttl
        if deadline is not None:
            give_up = min(give_up, deadline)
        while time.monotonic() < give_up:
            time.sleep(LEASE_POLL)
            staple = self.cached(leaf)
            if self.usable(staple, self.clock.now()):
                return staple
        return None


