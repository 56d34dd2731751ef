"""Run one job per certificate on a bounded set of threads, fairly.

What ``warm`` needs, beside a plain thread pool:

- Fairness between responders. The next job goes to the responder with
  the fewest jobs in flight, among those with work waiting. One hanging
  responder so holds at most its share of the threads (after the first
  round, only the threads it already had), and the certificates of every
  other responder keep moving; a lone responder gets every thread.
- No two jobs of one stripe at once. The second would only wait in a
  thread for the stripe the first holds; with a hanging responder, for
  the whole fetch deadline. It is set aside instead and started when the
  stripe's job ends, and the thread takes other work.

Free of typer and rich (a dashboard could use it as it is). Not an engine
module only because warm is its one user so far.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class FairPool(Generic[T, R]):
    def __init__(
        self,
        concurrency: int,
        run: Callable[[T], R],
        *,
        group_of: Callable[[T], Hashable],
        stripe_of: Callable[[T], Hashable],
        on_done: Callable[[T, R], None] = lambda item, result: None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be 1 or more")
        self.concurrency = concurrency
        self._run = run
        self._group_of = group_of
        self._stripe_of = stripe_of
        self._on_done = on_done
        lock = threading.Lock()
        # Two conditions on one lock, and map() woken only when all is done:
        # waking the waiting threads at every job's end cost more CPU per
        # certificate than building its OCSP request.
        self._cv = threading.Condition(lock)
        self._all_done = threading.Condition(lock)
        self._queues: dict[Hashable, deque[tuple[int, T, Hashable]]] = {}
        self._in_flight: dict[Hashable, int] = {}
        self._busy_stripes: set[Hashable] = set()
        self._parked: dict[Hashable, list[tuple[int, T, Hashable, Hashable]]] = {}
        self._results: list[R | None] = []
        self._left = 0

    def map(self, items: Iterable[T]) -> list[R]:
        """Run every item; results in the order of the items.

        ``run`` must not raise: it turns its own failures into results.
        """
        items = list(items)
        self._results = [None] * len(items)
        self._left = len(items)
        for index, item in enumerate(items):
            group = self._group_of(item)
            self._queues.setdefault(group, deque()).append((index, item, self._stripe_of(item)))
            self._in_flight.setdefault(group, 0)
        threads = [
            threading.Thread(target=self._worker, name=f"warm-{n}", daemon=True)
            for n in range(min(self.concurrency, len(items)))
        ]
        for thread in threads:
            thread.start()
        with self._all_done:
            # A timed wait, so that Ctrl-C reaches the main thread promptly.
            while self._left:
                self._all_done.wait(0.5)
        for thread in threads:
            thread.join()
        return self._results  # type: ignore[return-value]

    def _take(self) -> tuple[int, T, Hashable, Hashable] | None:
        """The next job that may start now (the condition held), or None."""
        while True:
            waiting = [g for g, q in self._queues.items() if q]
            if not waiting:
                return None
            group = min(waiting, key=self._in_flight.__getitem__)
            index, item, stripe = self._queues[group].popleft()
            if stripe in self._busy_stripes:
                self._parked.setdefault(stripe, []).append((index, item, group, stripe))
                continue
            self._busy_stripes.add(stripe)
            self._in_flight[group] += 1
            return index, item, group, stripe

    def _finish(self, group: Hashable, stripe: Hashable) -> None:
        self._in_flight[group] -= 1
        self._busy_stripes.discard(stripe)
        # Back to the front of their queues, in their original order.
        released = self._parked.pop(stripe, [])
        for index, item, parked_group, _ in reversed(released):
            self._queues[parked_group].appendleft((index, item, stripe))
        self._left -= 1
        if not self._left:
            self._cv.notify_all()  # the idle workers return
            self._all_done.notify_all()
        # Otherwise no one to wake: the released jobs share one stripe, so
        # one of them at most may start, and the finishing worker, back in
        # _take, starts it (or other work) itself.

    def _worker(self) -> None:
        while True:
            with self._cv:
                job = self._take()
                while job is None:
                    if not any(self._queues.values()) and not self._parked:
                        return
                    self._cv.wait()
                    job = self._take()
            index, item, group, stripe = job
            try:
                result = self._run(item)
                self._results[index] = result
                self._on_done(item, result)
            finally:
                with self._cv:
                    self._finish(group, stripe)
