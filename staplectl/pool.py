"""Run one job per certificate on a bounded set of threads, fairly.

The order is engine.fairqueue's: fair between responders, never two jobs
of one stripe at once. ``warm`` itself runs its refreshes on one thread
(engine.fanout); this pool is for work that blocks a thread per job
(the dashboard's refresh actions).

Free of typer and rich (a dashboard could use it as it is).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from engine.fairqueue import FairQueue, Job

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
        self._queue: FairQueue[T] = FairQueue([], group_of=group_of, stripe_of=stripe_of)
        self._results: list[R | None] = []

    def map(self, items: Iterable[T]) -> list[R]:
        """Run every item; results in the order of the items.

        ``run`` must not raise: it turns its own failures into results.
        """
        items = list(items)
        self._results = [None] * len(items)
        self._queue = FairQueue(items, group_of=self._group_of, stripe_of=self._stripe_of)
        threads = [
            threading.Thread(target=self._worker, name=f"pool-{n}", daemon=True)
            for n in range(min(self.concurrency, len(items)))
        ]
        for thread in threads:
            thread.start()
        with self._all_done:
            # A timed wait, so that Ctrl-C reaches the main thread promptly.
            while self._queue.left:
                self._all_done.wait(0.5)
        for thread in threads:
            thread.join()
        return self._results  # type: ignore[return-value]

    def _finish(self, job: Job[T]) -> None:
        self._queue.finish(job)
        if not self._queue.left:
            self._cv.notify_all()  # the idle workers return
            self._all_done.notify_all()
        # Otherwise no one to wake: the released jobs share one stripe, so
        # one of them at most may start, and the finishing worker, back in
        # take, starts it (or other work) itself.

    def _worker(self) -> None:
        while True:
            with self._cv:
                job = self._queue.take()
                while job is None:
                    if not self._queue.waiting:
                        return
                    self._cv.wait()
                    job = self._queue.take()
            try:
                result = self._run(job.item)
                self._results[job.index] = result
                self._on_done(job.item, result)
            finally:
                with self._cv:
                    self._finish(job)
