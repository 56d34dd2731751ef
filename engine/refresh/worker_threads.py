"""The prefetch worker as a background service: a dispatcher thread and
``concurrency`` worker threads (the other half of engine.refresh.prefetch's
PrefetchWorker, which mixes this in).

The dispatcher sleeps on a condition until the earliest due time, a job
ending or wake(): no polling. Every HEARTBEAT_INTERVAL it writes the
worker's heartbeat and audits a batch of cached staples (PrefetchWorker.audit).
Worker threads take the tickets it hands over and run them. All threads are
daemons: a fetch hanging in a socket never keeps the process from exiting.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from engine.refresh.worker_state import StateStoreError

if TYPE_CHECKING:
    from engine.clock import Clock
    from engine.refresh.schedule import Schedule, Ticket
    from engine.refresh.worker_events import WorkerOptions
    from engine.refresh.worker_state import StateStore

#: seconds between heartbeats (and audits) of a started worker
HEARTBEAT_INTERVAL = 10.0


class WorkerThreads:
    """start(), wake(), stop() and the loops; PrefetchWorker provides the rest."""

    # PrefetchWorker's: its settings and locks, and heartbeat(), audit(),
    # _take(), _run(), _state_failed(), _state_worked()
    options: WorkerOptions
    clock: Clock
    state: StateStore | None
    worker_id: str
    started: float
    _lock: threading.Lock
    _dispatch_cv: threading.Condition
    _work_cv: threading.Condition
    _schedule: Schedule
    _handoff: deque[Ticket]
    _threads: list[threading.Thread]
    _stopping: bool
    _running: int
    _audit_now: bool

    def start(self) -> None:
        with self._lock:
            if self._threads or self._stopping:
                raise RuntimeError("a worker is started once")
            self.started = self.clock.now()
            self._threads = [threading.Thread(target=self._dispatch_loop, name="prefetch-dispatch", daemon=True)]
            self._threads += [
                threading.Thread(target=self._work_loop, name=f"prefetch-{n}", daemon=True)
                for n in range(self.options.concurrency)
            ]
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        """Look at the schedule now (after a clock change, a load, a "refresh now")."""
        with self._lock:
            self._dispatch_cv.notify()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop dispatching and wait at most ``timeout`` (default stop_grace) for running jobs.

        Returns True when every thread ended; False when some are still in a
        fetch: they are daemon threads, left to end with their deadline or
        the process, and record nothing more. A worker never started has
        nothing to stop (run_due() goes on working).
        """
        if not self._threads:
            return True
        grace = self.options.stop_grace if timeout is None else timeout
        end = time.monotonic() + grace
        with self._lock:
            self._stopping = True
            self._dispatch_cv.notify_all()
            self._work_cv.notify_all()
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        if self.state is not None:
            try:
                self.state.forget_worker(self.worker_id)
            except StateStoreError:
                pass  # the heartbeat goes stale on its own
        return not any(thread.is_alive() for thread in self._threads)

    def _dispatch_loop(self) -> None:
        next_beat = 0.0
        while True:
            if time.monotonic() >= next_beat:
                try:
                    self.heartbeat()
                except StateStoreError as error:
                    self._state_failed(error, self.clock.now())
                else:
                    self._state_worked(self.clock.now())
                self.audit()
                next_beat = time.monotonic() + HEARTBEAT_INTERVAL
            elif self._audit_now:
                self._audit_now = False
                self.audit()  # the cache is back: look for what it lost now, not at the next beat
            with self._lock:
                if self._stopping:
                    return
                now = self.clock.now()
                for ticket in self._take(now):
                    self._handoff.append(ticket)
                    self._work_cv.notify()
                # Wake for the next beat at the latest: also notices a wall clock that jumped.
                timeout = next_beat - time.monotonic()
                if self._running < self.options.concurrency:
                    wakeup = self._schedule.next_wakeup()
                    if wakeup is not None:
                        timeout = min(timeout, wakeup - now)
                # else a job ending notifies us
                if timeout > 0:
                    self._dispatch_cv.wait(timeout)

    def _work_loop(self) -> None:
        while True:
            with self._lock:
                while not self._handoff and not self._stopping:
                    self._work_cv.wait()
                if self._stopping:
                    return
                ticket = self._handoff.popleft()
            self._run(ticket)
