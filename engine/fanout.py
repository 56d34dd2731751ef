"""Many refreshes in flight from one thread: what ``warm`` runs.

For each certificate, what ``Stapler.refresh`` does: take its stripe, look
in the cache again, fetch when the staple is missing or due, validate,
store, let the stripe go. But with up to ``in_flight`` exchanges on one
selector (engine.exchange) instead of a blocked thread each, the second
looks of the certificates started together in one read of the cache
(``cached_many``), and the staples that arrive together in one write
(``keep_many``). Threads handing the GIL to each other cost more CPU than
the exchanges did; on a small machine shared with a responder, that CPU is
the responder's.

The order is engine.fairqueue's: fair between responders, never two of
one stripe at once. A stripe is held from before the second look until
the staple is stored (or the refresh failed), as in ``Stapler.refresh``.

What would block the loop goes to a few background threads, through the
blocking ``Stapler.refresh`` itself:

- a stripe another process holds (a prefetch service mid-fetch): waiting
  for it may take that fetch's whole deadline;
- an https responder (engine.exchange speaks plain HTTP);
- a lease another instance holds, with nothing usable cached: waiting for
  its staple;
- looking up a responder's host name (getaddrinfo blocks), once per host.
"""

from __future__ import annotations

import ipaddress
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.certs import Leaf
from engine.errors import StapleError, UnexpectedError
from engine.exchange import Addresses, Exchange, resolve
from engine.fairqueue import FairQueue, Job
from engine.fetch import accept, prepare
from engine.request import OCSPQuery
from engine.schedule import responder_key
from engine.staple import Staple
from engine.stapler import AWAIT, Refresh, Stapler
from engine.stripes import Held, StripeTimeoutError
from engine.transport import Plan, plan

#: background threads: for stripes held elsewhere, https, leases, DNS
BACKGROUND_THREADS = 4
#: the longest the loop sleeps with nothing due, so Ctrl-C is seen
_IDLE = 0.5

#: what a refresh comes to: a Refresh, or the error that ended it
Result = Refresh | StapleError


@dataclass(eq=False)
class _Task:
    """One certificate on its way through the loop."""

    job: Job[Leaf]
    held: Held | None = None
    current: Staple | None = None
    url: str = ""
    query: OCSPQuery | None = None
    plan: Plan | None = None
    exchange: Exchange | None = None

    @property
    def leaf(self) -> Leaf:
        return self.job.item


def responder_group(leaf: Leaf) -> str:
    """The responder a certificate's refresh asks: what fairness counts by."""
    try:
        return responder_key(leaf.responder_url())
    except StapleError:
        return ""  # its refresh fails with the reason


class Fanout:
    def __init__(
        self,
        stapler: Stapler,
        in_flight: int,
        *,
        force: bool = False,
        lock_timeout: float | None = None,
        background_threads: int = BACKGROUND_THREADS,
    ) -> None:
        if in_flight < 1:
            raise ValueError("in_flight must be 1 or more")
        self.stapler = stapler
        self.in_flight = in_flight
        self.force = force
        #: how long a background refresh waits for a stripe held elsewhere
        self.lock_timeout = lock_timeout
        self.background_threads = background_threads

    def run(self, leaves: Sequence[Leaf], on_done: Callable[[int, Result], None]) -> None:
        """Refresh every leaf; ``on_done(index, result)`` once for each, on this thread."""
        _Run(self, leaves, on_done).run()


class _Run:
    """One Fanout.run: the loop and everything in flight."""

    def __init__(self, fanout: Fanout, leaves: Sequence[Leaf], on_done: Callable[[int, Result], None]) -> None:
        self.fanout = fanout
        self.stapler = fanout.stapler
        self.on_done = on_done
        locks = self.stapler.locks
        self.queue: FairQueue[Leaf] = FairQueue(
            leaves, group_of=responder_group, stripe_of=lambda leaf: locks.stripe_of(leaf.cert_id)
        )
        self.selector = selectors.DefaultSelector()
        self.active = 0
        #: (host, port) -> addresses, or the error looking them up raised
        self.addresses: dict[tuple[str, int], Addresses | StapleError] = {}
        #: tasks waiting for their host to be looked up
        self.resolving: dict[tuple[str, int], list[_Task]] = {}
        self.exchanges: dict[Exchange, _Task] = {}
        #: validated staples to store together at the end of this round
        self.arrived: list[tuple[_Task, Staple]] = []
        self.background = _Background(fanout.background_threads, self.selector)

    # -- the loop --------------------------------------------------------------

    def run(self) -> None:
        try:
            while self.queue.left:
                self._start_what_may()
                self._wait()
                self._store_arrived()
        finally:
            self._abandon()

    def _start_what_may(self) -> None:
        starting = []
        while self.active < self.fanout.in_flight:
            job = self.queue.take()
            if job is None:
                break
            self.active += 1
            starting.append(_Task(job))
        if starting:
            self._start(starting)

    def _wait(self) -> None:
        now = time.monotonic()
        timeout = _IDLE
        if self.exchanges:
            timeout = min(timeout, max(0.0, min(e.deadline for e in self.exchanges) - now))
        for key, events in self.selector.select(timeout):
            if key.data is self.background:
                self.background.drain_wakeups()
                continue
            exchange: Exchange = key.data
            if exchange.step(events):
                self._exchanged(exchange)
        now = time.monotonic()
        for exchange in [e for e in self.exchanges if e.deadline <= now]:
            exchange.expire()
            self._exchanged(exchange)
        for handle, outcome in self.background.results():
            handle(outcome)

    # -- starting: stripe, second look, exchange -------------------------------

    def _start(self, tasks: list[_Task]) -> None:
        held = []
        for task in tasks:
            try:
                task.held = self.stapler.locks.hold(task.leaf.cert_id, timeout=0).__enter__()
            except StripeTimeoutError:
                self._refresh_in_background(task)  # held elsewhere: wait for it there
                continue
            except StapleError as error:
                self._finish(task, error)
                continue
            held.append(task)
        if not held:
            return
        try:
            currents = self.stapler.cached_many([task.leaf for task in held])
        except StapleError as error:
            for task in held:
                self._finish(task, error)
            return
        for task in held:
            self._guarded(task, lambda task=task: self._look(task, currents.get(task.leaf.cert_id)))

    def _look(self, task: _Task, current: Staple | None) -> None:
        task.current = current
        verdict = self.stapler.second_look(task.leaf, current, force=self.fanout.force)
        if isinstance(verdict, Refresh):
            self._finish(task, verdict)
            return
        if verdict == AWAIT:
            self._refresh_in_background(task, release=True)
            return
        task.url, task.query = prepare(task.leaf, self.stapler.fetch_options)
        task.plan = plan(task.url, task.query.der, self.stapler.fetch_options.transport)
        if task.plan.tls:
            self._refresh_in_background(task, release=True)
            return
        self._connect(task)

    def _connect(self, task: _Task) -> None:
        assert task.plan is not None
        where = (task.plan.host, task.plan.port)
        addresses = self.addresses.get(where)
        if addresses is None:
            try:
                ipaddress.ip_address(task.plan.host)
            except ValueError:
                self._resolve_in_background(where, task)
                return
            addresses = self.addresses[where] = resolve(task.plan)  # a literal: no lookup
        if isinstance(addresses, StapleError):
            self._finish(task, addresses)
            return
        deadline = time.monotonic() + self.stapler.fetch_options.transport.timeout
        exchange = Exchange(task.plan, addresses, deadline, self.selector)
        task.exchange = exchange
        if exchange.done:  # refused at once
            self.exchanges[exchange] = task
            self._exchanged(exchange)
        else:
            self.exchanges[exchange] = task

    # -- finishing: validate, store, report --------------------------------------

    def _exchanged(self, exchange: Exchange) -> None:
        task = self.exchanges.pop(exchange)

        def validated() -> None:
            assert task.query is not None
            staple = accept(
                exchange.body(), task.leaf, task.url, task.query, self.stapler.fetch_options, self.stapler.clock
            )
            self.arrived.append((task, staple))

        self._guarded(task, validated)

    def _store_arrived(self) -> None:
        if not self.arrived:
            return
        arrived, self.arrived = self.arrived, []
        try:
            refreshes: list[Result] = list(
                self.stapler.keep_many([(task.leaf, staple, task.current) for task, staple in arrived])
            )
        except StapleError as error:
            refreshes = [error] * len(arrived)
        for (task, _), result in zip(arrived, refreshes):
            self._finish(task, result)

    def _guarded(self, task: _Task, step: Callable[[], None]) -> None:
        """Run one step of a task; its failure ends that task alone."""
        try:
            step()
        except StapleError as error:
            self._finish(task, error)
        except Exception as exc:  # a bug must cost one row, not the whole run
            self._finish(task, UnexpectedError(f"{task.leaf.name}: unexpected {type(exc).__name__}: {exc}"))

    def _finish(self, task: _Task, result: Result) -> None:
        self._release(task)
        self.queue.finish(task.job)
        self.active -= 1
        self.on_done(task.job.index, result)

    def _release(self, task: _Task) -> None:
        if task.held is not None:
            held, task.held = task.held, None
            held.__exit__(None, None, None)

    # -- what goes to the background ---------------------------------------------

    def _refresh_in_background(self, task: _Task, *, release: bool = False) -> None:
        if release:
            self._release(task)  # Stapler.refresh takes it again, on its own thread
        fanout = self.fanout

        def refresh() -> Refresh:
            return self.stapler.refresh(task.leaf, force=fanout.force, lock_timeout=fanout.lock_timeout)

        def done(outcome: Result) -> None:
            self._finish(task, outcome)

        self.background.submit(refresh, done, task.leaf.name)

    def _resolve_in_background(self, where: tuple[str, int], task: _Task) -> None:
        waiting = self.resolving.setdefault(where, [])
        waiting.append(task)
        if len(waiting) > 1:
            return  # already being looked up
        assert task.plan is not None
        host_plan = task.plan

        def resolved(outcome: Any) -> None:
            self.addresses[where] = outcome
            for waiter in self.resolving.pop(where):
                self._guarded(waiter, lambda waiter=waiter: self._connect(waiter))

        self.background.submit(lambda: resolve(host_plan), resolved, host_plan.host)

    def _abandon(self) -> None:
        """After the last task, or on the way out of an exception (Ctrl-C)."""
        for exchange, task in list(self.exchanges.items()):
            exchange.close()
            self._release(task)
        for tasks in self.resolving.values():
            for task in tasks:
                self._release(task)
        for task, _ in self.arrived:
            self._release(task)
        self.background.close()
        self.selector.close()


class _Background:
    """A few daemon threads for what would block the loop; results come
    back through a queue, and a byte on a socket pair wakes the selector.

    Daemon threads, so that Ctrl-C need not wait for a hanging responder's
    deadline: a refresh cut short holds its stripe as a flock, which the
    kernel lets go when the process ends.
    """

    def __init__(self, threads: int, selector: selectors.BaseSelector) -> None:
        self._size = threads
        self._threads: list[threading.Thread] = []
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[Any], None], str] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[Callable[[Any], None], Any]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        selector.register(self._wake_r, selectors.EVENT_READ, self)

    def submit(self, work: Callable[[], Any], then: Callable[[Any], None], name: str) -> None:
        if len(self._threads) < self._size:
            thread = threading.Thread(target=self._serve, name=f"fanout-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._jobs.put((work, then, name))

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            work, then, name = job
            try:
                outcome = work()
            except StapleError as error:
                outcome = error
            except Exception as exc:
                outcome = UnexpectedError(f"{name}: unexpected {type(exc).__name__}: {exc}")
            self._done.put((then, outcome))
            try:
                self._wake_w.send(b"!")
            except BlockingIOError:
                pass  # the loop has wake-ups enough waiting

    def drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def results(self) -> list[tuple[Callable[[Any], None], Any]]:
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        self._wake_r.close()
        self._wake_w.close()
