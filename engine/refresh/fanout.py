"""Many refreshes in flight from one thread: what ``warm`` runs.

For each certificate, what ``Stapler.refresh`` does: take its fetch lock,
look in the cache again, fetch when the staple is missing or due, validate,
store, let the lock go. But with up to ``in_flight`` exchanges on one
selector (engine.responders.exchange) instead of a blocked thread each, the second
looks of the certificates started together in one read of the cache
(``cached_many``), and the staples validated since the last store in one
write (``store_fetched_many``; see STORE_BATCH). Threads handing the GIL to each
other cost more CPU than the exchanges did (even for the signature check,
which releases it); on a small machine shared with a responder, that CPU
is the responder's.

The order is engine.refresh.fairqueue's: fair between responders, never one
certificate twice at once. A certificate's lock is held from before the
second look until the staple is stored (or the refresh failed), as in
``Stapler.refresh``, and tried without waiting: locks are per certificate
(engine.locks.fetchlocks), so the only one that can be busy is the same
certificate's, held by someone fetching it.

What would block the loop goes to a few background threads, through the
blocking ``Stapler.refresh`` itself:

- a certificate another process holds (a prefetch service mid-fetch):
  waiting for it may take that fetch's whole deadline;
- an https responder (engine.responders.exchange speaks plain HTTP);
- a lease another instance holds, with nothing usable cached: waiting for
  its staple;
- looking up a responder's host name (getaddrinfo blocks), once per host.
"""

from __future__ import annotations

import ipaddress
import selectors
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from engine.ocsp.certs import Leaf
from engine.errors import FetchError, StapleError, UnexpectedError
from engine.responders.exchange import Addresses, Exchange
from engine.refresh.background import Background
from engine.refresh.fairqueue import FairQueue, Job
from engine.refresh.fetch import check_not_older, query_for, validate_answer
from engine.locks.fetchlocks import Held, LockTimeoutError
from engine.responders.health import Asking, responder_key
from engine.ocsp.request import OCSPQuery
from engine.ocsp.staple import Staple
from engine.refresh.stapler import AWAIT, Refresh, Stapler
from engine.responders.transport import Plan, plan, resolve

#: background threads: for certificates held elsewhere, https, leases, DNS
BACKGROUND_THREADS = 4
#: the longest the loop sleeps with nothing due, so Ctrl-C is seen
_IDLE = 0.5
#: validated staples are stored together (one transaction, one pipeline)
#: once this many have arrived, or the first of them has waited STORE_DELAY
#: seconds, or nothing else is going on: a transaction per round's few
#: staples cost more than the exchanges (docs/benchmarks.md, "What
#: changed in stop 9"). A staple waiting to be stored keeps its certificate held.
STORE_BATCH = 32
STORE_DELAY = 0.01
#: leaves read in a round spent waiting on exchanges (a file each, and
#: finding its issuer): enough to have read them all early on, little
#: enough not to keep answers waiting
_READ_WHILE_WAITING = 16

#: what a refresh comes to: a Refresh, or the error that ended it
Result = Refresh | StapleError


@dataclass(eq=False)
class _Task:
    """One certificate on its way through the loop."""

    job: Job[Leaf]
    #: counted among the fanout's in_flight: started and not yet answered
    in_slot: bool = False
    #: its certificate's fetch lock, while the task holds it
    held: Held | None = None
    current: Staple | None = None
    query: OCSPQuery | None = None
    plan: Plan | None = None
    exchange: Exchange | None = None
    #: leave to ask its responder (engine.responders.health), until the exchange ends
    asking: Asking | None = None

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
        #: how long a background refresh waits for a certificate held elsewhere
        self.lock_timeout = lock_timeout
        self.background_threads = background_threads

    def run(self, leaves: Iterable[Leaf], on_done: Callable[[int, Result], None]) -> None:
        """Refresh every leaf; ``on_done(index, result)`` once for each, on this thread.

        ``leaves`` is read as the loop goes (engine.ocsp.certfiles.Loading reads a
        file each), so that the first exchanges are out while the rest load.
        """
        _Run(self, leaves, on_done).run()


class _Run:
    """One Fanout.run: the loop and everything in flight."""

    def __init__(self, fanout: Fanout, leaves: Iterable[Leaf], on_done: Callable[[int, Result], None]) -> None:
        self.fanout = fanout
        self.stapler = fanout.stapler
        self.on_done = on_done
        locks = self.stapler.locks
        self.locks = locks
        # what must never run twice at once is a certificate
        self.queue: FairQueue[Leaf] = FairQueue([], group_of=responder_group, key_of=lambda leaf: leaf.cert_id)
        self.source: Iterator[Leaf] | None = iter(leaves)
        #: the fetch locks held, by certificate
        self.holds: dict[str, Held] = {}
        #: responders that have sent something back in this run
        self.answering: set[Hashable] = set()
        self.selector = selectors.DefaultSelector()
        #: tasks in a slot (see _Task.in_slot)
        self.active = 0
        #: exchanges over, their answers not yet validated
        self.answered: list[_Task] = []
        #: (host, port) -> addresses, or the error looking them up raised
        self.addresses: dict[tuple[str, int], Addresses | StapleError] = {}
        #: tasks waiting for their host to be looked up
        self.resolving: dict[tuple[str, int], list[_Task]] = {}
        self.exchanges: dict[Exchange, _Task] = {}
        #: validated staples to store together (see STORE_BATCH), and since when
        self.arrived: list[tuple[_Task, Staple]] = []
        self.arrived_since = 0.0
        self.background = Background(fanout.background_threads, self.selector)

    # -- the loop --------------------------------------------------------------

    def run(self) -> None:
        try:
            while self.queue.left or self.source is not None:
                self._start_what_may()
                self._wait()
                # what the round freed goes out before the round's CPU work
                # (validation, the store), which would otherwise delay it
                self._start_what_may()
                self._validate_answered()
                self._store_arrived()
        finally:
            self._abandon()

    def _start_what_may(self) -> None:
        starting: list[_Task] = []
        read = False
        while self.active < self.fanout.in_flight:
            # While leaves are still to be read, a responder that has not
            # answered yet gets at most half the slots: the first leaves
            # read may all be a hanging responder's, and those of the
            # others must find room when read. One that answers (in a few
            # ms, when healthy) gets them all.
            limit = None if self.source is None else max(1, self.fanout.in_flight // 2)
            job = self.queue.take(limit, exempt=self.answering)
            if job is None:
                # read once per round here (more while waiting, in _wait):
                # reading them all now would keep every answer waiting
                if not read and self._read(self.fanout.in_flight):
                    read = True
                    continue
                break
            self.active += 1
            starting.append(_Task(job, in_slot=True))
        if starting:
            self._start(starting)

    def _read(self, count: int) -> bool:
        """Take up to ``count`` more leaves from the source; False when it has none left."""
        if self.source is None:
            return False
        for _ in range(count):
            leaf = next(self.source, None)
            if leaf is None:
                self.source = None
                break
            self.queue.add(leaf)
        return True

    def _wait(self) -> None:
        now = time.monotonic()
        # Block only when something will wake us: an exchange, or work in
        # the background; and not while leaves are left to read, which is
        # what the time waiting is spent on. Otherwise what was started
        # ended at once (fresh staples, errors): on to the next.
        busy = self.exchanges or self.background.busy
        timeout = _IDLE if busy and self.source is None else 0.0
        if self.exchanges:
            timeout = min(timeout, max(0.0, min(e.deadline for e in self.exchanges) - now))
        if self.arrived:
            timeout = min(timeout, max(0.0, self.arrived_since + STORE_DELAY - now))
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
        if busy and self.source is not None:
            self._read(_READ_WHILE_WAITING)

    # -- starting: fetch lock, second look, exchange ---------------------------

    def _start(self, tasks: list[_Task]) -> None:
        held = []
        for task in tasks:
            cert_id = task.leaf.cert_id
            try:
                task.held = self.locks.hold(cert_id, timeout=0).__enter__()
            except LockTimeoutError:
                self._refresh_in_background(task)  # held elsewhere: wait for it there
                continue
            except StapleError as error:
                self._finish(task, error)
                continue
            self.holds[cert_id] = task.held
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
        url, task.query = query_for(task.leaf, self.stapler.fetch_options)
        task.plan = plan(url, task.query.der, self.stapler.fetch_options.transport)
        if task.plan.tls:
            self._refresh_in_background(task, release=True)
            return
        task.asking = self.stapler.ask(task.leaf, task.current)  # a down responder: ResponderDownError, nothing sent
        self._connect(task)

    def _connect(self, task: _Task) -> None:
        assert task.plan is not None
        where = (task.plan.connect_host, task.plan.connect_port)  # the responder's, or its proxy's
        addresses = self.addresses.get(where)
        if addresses is None:
            try:
                ipaddress.ip_address(task.plan.connect_host)
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
        """Off the wire: its slot is free for the next exchange at once;
        the answer is validated after the round's new exchanges are out."""
        task = self.exchanges.pop(exchange)
        if exchange.answered:
            self.answering.add(task.job.group)
        elif task.asking is not None:
            # A responder that did not answer is marked down now, before the
            # freed slot starts another exchange to it (engine.responders.health)
            try:
                exchange.body()
            except FetchError as error:
                self._asked(task, error)
        self._off_the_wire(task)
        self.answered.append(task)

    def _validate_answered(self) -> None:
        answered, self.answered = self.answered, []
        for task in answered:
            self._guarded(task, lambda task=task: self._validate(task))

    def _validate(self, task: _Task) -> None:
        assert task.query is not None and task.plan is not None and task.exchange is not None
        options, clock = self.stapler.fetch_options, self.stapler.clock
        try:
            body = task.exchange.body()
        except FetchError as error:
            self._asked(task, error)
            raise
        self._asked(task, None)
        staple = validate_answer(body, task.leaf, task.plan.url, task.query, options, clock)
        check_not_older(staple, task.current, f"response from {task.plan.url}")
        if not self.arrived:
            self.arrived_since = time.monotonic()
        self.arrived.append((task, staple))

    def _store_due(self) -> bool:
        if not self.arrived:
            return False
        if len(self.arrived) >= STORE_BATCH or time.monotonic() - self.arrived_since >= STORE_DELAY:
            return True
        # nothing else will happen meanwhile: waiting would only delay the store
        return not self.exchanges and not self.answered and not self.background.busy

    def _store_arrived(self) -> None:
        if not self._store_due():
            return
        arrived, self.arrived = self.arrived, []
        try:
            refreshes: list[Result] = list(
                self.stapler.store_fetched_many([(task.leaf, staple, task.current) for task, staple in arrived])
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

    def _asked(self, task: _Task, error: FetchError | None, *, answered: bool = True) -> None:
        if task.asking is not None:
            asking, task.asking = task.asking, None
            asking.done(error, answered=answered)

    def _finish(self, task: _Task, result: Result) -> None:
        self._asked(task, None, answered=False)  # ended before its exchange did (a bug, Ctrl-C)
        self._release(task)
        self._off_the_wire(task)
        self.queue.finish(task.job)
        self.on_done(task.job.index, result)

    def _off_the_wire(self, task: _Task) -> None:
        if task.in_slot:
            task.in_slot = False
            self.queue.off_the_wire(task.job)
            self.active -= 1

    def _release(self, task: _Task) -> None:
        """The task is done with its certificate's fetch lock."""
        if task.held is None:
            return
        held, task.held = task.held, None
        del self.holds[held.cert_id]
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

        self.background.submit(lambda: resolve(host_plan), resolved, host_plan.connect_host)

    def _abandon(self) -> None:
        """After the last task, or on the way out of an exception (Ctrl-C)."""
        for exchange in self.exchanges:
            exchange.close()
        for held in self.holds.values():
            held.__exit__(None, None, None)
        self.holds.clear()
        self.background.close()
        self.selector.close()
