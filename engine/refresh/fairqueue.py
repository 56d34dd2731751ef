"""Which certificate's refresh to start next, fairly.

The order engine.refresh.fanout (``warm``, the dashboard's refresh) starts
refreshes in, with two rules beside first come, first served:

- Fairness between responders. The next job goes to the responder with
  the fewest jobs in flight, among those with work waiting. A job is in
  flight from ``take`` until ``off_the_wire`` (its exchange is over) or
  ``finish``: what a job does after its answer came (validation, the
  store) no longer weighs on its responder. One hanging
  responder so holds at most its share of the slots (after the first
  round, only the slots it already had), and the certificates of every
  other responder keep moving; a lone responder gets every slot.
- No two jobs of one key at once (``key_of`` says what may not run
  twice: engine.refresh.fanout gives the certificate). The second is set aside
  and comes back, at the front of its queue, when the first ends.

No threads and no locks here: a caller with threads would hold its own
lock around ``take`` and ``finish``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Container, Hashable, Iterable
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")


class Job(NamedTuple, Generic[T]):
    index: int
    item: T
    group: Hashable
    key: Hashable


class FairQueue(Generic[T]):
    def __init__(
        self,
        items: Iterable[T],
        *,
        group_of: Callable[[T], Hashable],
        key_of: Callable[[T], Hashable],
    ) -> None:
        self._group_of = group_of
        self._key_of = key_of
        self._queues: dict[Hashable, deque[Job[T]]] = {}
        self._in_flight: dict[Hashable, int] = {}
        self._busy_keys: set[Hashable] = set()
        self._parked: dict[Hashable, list[Job[T]]] = {}
        #: indices of jobs off the wire but not finished
        self._off: set[int] = set()
        #: jobs not finished yet, started or not
        self.left = 0
        #: jobs added so far: the next one's index
        self.added = 0
        for item in items:
            self.add(item)

    def add(self, item: T) -> None:
        """One more job, after those already there (its index is ``added``)."""
        group = self._group_of(item)
        self._queues.setdefault(group, deque()).append(Job(self.added, item, group, self._key_of(item)))
        self._in_flight.setdefault(group, 0)
        self.added += 1
        self.left += 1

    def take(self, limit: int | None = None, exempt: Container[Hashable] = ()) -> Job[T] | None:
        """The next job that may start now, or None (all started, or waiting on busy keys).

        ``limit``: no group but those ``exempt`` gets more jobs in flight
        than this (a caller that does not know every job yet keeps room for
        groups to come).
        """
        while True:
            waiting = [
                g for g, q in self._queues.items()
                if q and (limit is None or g in exempt or self._in_flight[g] < limit)
            ]  # fmt: skip
            if not waiting:
                return None
            group = min(waiting, key=self._in_flight.__getitem__)
            job = self._queues[group].popleft()
            if job.key in self._busy_keys:
                self._parked.setdefault(job.key, []).append(job)
                continue
            self._busy_keys.add(job.key)
            self._in_flight[group] += 1
            return job

    def off_the_wire(self, job: Job[T]) -> None:
        """``job`` no longer counts as in flight for its group; its key
        stays busy until ``finish``."""
        if job.index not in self._off:
            self._off.add(job.index)
            self._in_flight[job.group] -= 1

    def finish(self, job: Job[T]) -> None:
        """``job`` has ended: its slot and its key are free again."""
        if job.index in self._off:
            self._off.discard(job.index)
        else:
            self._in_flight[job.group] -= 1
        self._busy_keys.discard(job.key)
        # Back to the front of their queues, in their original order.
        for parked in reversed(self._parked.pop(job.key, [])):
            self._queues[parked.group].appendleft(parked)
        self.left -= 1

    @property
    def waiting(self) -> bool:
        """Jobs not started yet, startable now or parked behind a key."""
        return any(self._queues.values()) or bool(self._parked)
