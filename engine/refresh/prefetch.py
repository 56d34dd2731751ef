"""The prefetch worker (docs/design.md, "The prefetch worker"): renew every staple before it lapses.

One worker keeps up to 100,000 certificates fresh with a fixed number of
threads (engine.refresh.worker_threads: a dispatcher that sleeps until the
earliest due time, and ``concurrency`` workers that run one refresh each;
no thread or timer per certificate, no polling while nothing is due). Jobs
go through ``Stapler.refresh``, so they take the certificate's fetch lock
and look in the cache again: a staple the request path or another process
just fetched is not fetched twice.

When to run each certificate next is engine.refresh.schedule's business;
this module runs jobs, keeps the per-certificate state
(engine.refresh.worker_state) that ``inspect`` and the dashboard read,
watches the cache, the state file and the responders for outages
(engine.refresh.watches), and reports every outcome as a WorkerEvent
(engine.refresh.worker_events).
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any

from engine.ocsp.certs import Leaf
from engine.ocsp.issuers import fingerprint
from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import MustStapleWithoutOCSPError, StapleError, UnexpectedError
from engine.locks.fetchlocks import LockTimeoutError
from engine.refresh.freshness import expires_at
from engine.refresh.outcome import NO_OCSP, must_staple_without_ocsp
from engine.responders.health import responder_key
from engine.refresh.schedule import Schedule, Ticket, after_answer, plan_answer, plan_busy, plan_failure
from engine.ocsp.staple import Staple
from engine.refresh.reader import staple_digest
from engine.refresh.stapler import Refresh, Stapler, owner_id
from engine.refresh.survey import first_look
from engine.refresh.worker_state import CertState, HistoryEntry, StateStore, StateStoreError
from engine.refresh import worker_events as events
from engine.refresh.worker_events import WorkerEvent, WorkerOptions
from engine.refresh.watches import Watches
from engine.refresh.worker_threads import WorkerThreads
from engine.store.outages import StoreWatch

__all__ = ["AUDIT_BATCH", "PrefetchWorker", "WorkerEvent", "WorkerOptions"]

#: cached staples the started worker looks at with each heartbeat (see
#: audit): 100,000 certificates are all looked at within about 3 minutes
AUDIT_BATCH = 5000
_numbers = itertools.count(1)


#: new certificates a load takes on at once (see load)
LOAD_BATCH = 5000


class _Known:
    """What the state a previous run left says of one batch of a first load's certificates."""

    __slots__ = ("previous", "validated", "issued")

    def __init__(
        self, previous: dict[str, CertState] | None = None, validated: dict[str, bytes] | None = None,
        issued: dict[str, bytes] | None = None,
    ) -> None:  # fmt: skip
        #: cert_id -> its state: failure counts carry over
        self.previous = previous or {}
        #: cert_id -> SHA-256 of the staple validated last (engine.refresh.reader)
        self.validated = validated or {}
        #: cert_id -> fingerprint of the issuer its signature verified with
        self.issued = issued or {}


class _Cert:
    __slots__ = ("leaf", "state", "planned_from")

    def __init__(self, leaf: Leaf, state: CertState) -> None:
        self.leaf = leaf
        self.state = state
        #: thisUpdate of the staple the current due time was planned to
        #: renew (see _refresh); None until a run found one
        self.planned_from: float | None = None


def _knew(before: CertState | None, staple: Staple) -> bool:
    """Was this the last staple the previous run saw for the certificate?"""
    return before is not None and (before.this_update, before.status) == (staple.this_update, staple.status)


def _responder_url(leaf: Leaf) -> str | None:
    try:
        return leaf.responder_url()
    except StapleError:
        return None  # its refresh fails with the reason, and is reported then


class PrefetchWorker(WorkerThreads, Watches):
    def __init__(
        self,
        stapler: Stapler,
        *,
        state: StateStore | None = None,
        options: WorkerOptions = WorkerOptions(),
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] = random.random,
        on_event: Callable[[WorkerEvent], None] = lambda event: None,
    ) -> None:
        self.stapler = stapler
        self.policy = stapler.policy  # one policy: the stapler's "due" must agree with our schedule
        self.state = state
        self.options = options
        self.clock = clock
        self.rand = rand
        self.on_event = on_event
        self.worker_id = f"{owner_id()}/{next(_numbers)}"
        self.started = clock.now()
        self._lock = threading.Lock()
        self._dispatch_cv = threading.Condition(self._lock)
        self._work_cv = threading.Condition(self._lock)
        # Held around every state write, so that a job ending for a
        # certificate that load() just removed cannot write its row back.
        self._state_lock = threading.Lock()
        self._schedule = Schedule(options.per_responder)
        self._certs: dict[str, _Cert] = {}
        self._running = 0
        self._handoff: deque[Ticket] = deque()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._loaded = False
        self._audit_order: list[str] = []
        self._audit_pos = 0
        self._audit_now = False
        self.cache_watch = StoreWatch()
        self.state_watch = StoreWatch()
        #: responders (by responder_key) this worker found not answering
        self._responder_watch: dict[str, StoreWatch] = {}
        #: the loaded certificates that name no OCSP responder, by cert_id: never scheduled
        self.without_ocsp: dict[str, Leaf] = {}
        #: keep the digest of each staple validated, so that a restart need
        #: not verify it again (engine.refresh.reader): our own store only
        self._remembers = state is not None and not stapler.cache.shared

    # -- certificates -----------------------------------------------------------

    def load(self, leaves: Iterable[Leaf]) -> tuple[int, int]:
        """Make the schedule hold exactly these leaves; return (added, removed).

        A reload without restart: a certificate already scheduled keeps its
        due time and failure count (unless its responder changed: then it
        is due now), new ones are due now unless their cached staple is
        fresh (engine.refresh.survey: then at its renewal), removed ones
        leave the schedule and the state. The first load picks up the
        failure counts a previous run left in the state, and drops rows it
        no longer needs. New certificates are taken on LOAD_BATCH at a time
        (a look in the cache, the schedule, one transaction), so that what
        a load holds at once does not grow with the number of certificates.
        """
        now = self.clock.now()
        incoming: dict[str, Leaf] = {}
        without: dict[str, Leaf] = {}
        for leaf in leaves:
            (incoming if leaf.has_responder else without).setdefault(leaf.cert_id, leaf)
        # the first load reads what a previous run left, a batch at a time
        first = not self._loaded and self.state is not None
        left = self.state.cert_ids() if first else []  # type: ignore[union-attr]
        changed: list[CertState] = []
        with self._state_lock:
            with self._lock:
                removed = [(cid, cert.leaf.name) for cid, cert in self._certs.items() if cid not in incoming]
                for cert_id, _ in removed:
                    del self._certs[cert_id]
                    self._schedule.remove(cert_id)
                # in cert_id order: a batch's rows then fill their own pages of
                # the state's tables, not some of every page (a transaction per
                # batch wrote 600 MB at 100,000 certificates in file order, 180 MB so)
                new = sorted((leaf for cert_id, leaf in incoming.items() if cert_id not in self._certs),
                             key=lambda leaf: leaf.cert_id)  # fmt: skip
                for cert_id, leaf in incoming.items():
                    cert = self._certs.get(cert_id)
                    if cert is not None and (row := self._update(cert, leaf, now)) is not None:
                        changed.append(row)
                self._loaded = True
                self._dispatch_cv.notify()
            if self.state is not None:
                gone = [*(cert_id for cert_id, _ in removed), *(c for c in left if c not in incoming)]
                self.state.remove(gone)
                self.state.put_many(changed)
        for cert_id, name in removed:
            self._emit(WorkerEvent(now, "info", cert_id, name, "removed", "left the schedule"))
        for start in range(0, len(new), LOAD_BATCH):
            self._take_on(new[start : start + LOAD_BATCH], first, now)
        self._no_ocsp(without, now)
        return len(new), len(removed)

    def _take_on(self, leaves: list[Leaf], first: bool, now: float) -> None:
        """Schedule new certificates (in cert_id order): a first look at their
        cached staples, then their state, history and digests in one
        transaction, then their events. ``first``: of the first load."""
        known = self._known((leaves[0].cert_id, leaves[-1].cert_id)) if first else _Known()
        try:
            fresh = first_look(self.stapler, leaves, now, known.validated)
        except StapleError:
            fresh = {}  # the store cannot be read: all due now, and their jobs say why
        validated = {}
        if self._remembers:
            digests = ((cert_id, staple_digest(staple.der)) for cert_id, staple in fresh.items())
            validated = {cert_id: digest for cert_id, digest in digests if known.validated.get(cert_id) != digest}
        # the issuer each leaf was verified with, for the next start's load_all
        bound = ((leaf.cert_id, fingerprint(leaf.issuer)) for leaf in leaves)
        bound = [(cert_id, issuer) for cert_id, issuer in bound if known.issued.get(cert_id) != issuer]
        # a staple the previous run already knew gets no history row: at every
        # start of a crash loop, rows saying nothing new would push out (20
        # kept a certificate) the ones that say why it failed
        news = {cert_id for cert_id, staple in fresh.items() if not _knew(known.previous.get(cert_id), staple)}
        #: cert_id -> (level, detail) of what the first look found fresh, as a job would say it
        said: dict[str, tuple[str, str]] = {}
        with self._state_lock:
            with self._lock:
                added = [self._add(leaf, known.previous.pop(leaf.cert_id, None), now, fresh.get(leaf.cert_id), said)
                         for leaf in leaves]  # fmt: skip
                self._dispatch_cv.notify()
            if self.state is not None:
                history = [(cert_id, HistoryEntry(now, "fresh", detail))
                           for cert_id, (_, detail) in said.items() if cert_id in news]  # fmt: skip
                self.state.put_many(added, history, validated.items(), bound)
        for row in added:
            for event in events.added(now, row, said.get(row.cert_id), responder_key(row.responder)):
                self._emit(event)

    def _known(self, between: tuple[str, str]) -> _Known:
        state: StateStore = self.state  # type: ignore[assignment]  # a first load's
        validated = state.validated(between) if self._remembers else {}
        return _Known({s.cert_id: s for s in state.all(between)}, validated, state.issued(between))

    def _no_ocsp(self, without: dict[str, Leaf], now: float) -> None:
        """Certificates that name no OCSP responder: not scheduled, said once each
        (an error only for a must-staple one, which no server can serve)."""
        for cert_id, leaf in without.items():
            if cert_id in self.without_ocsp:
                continue
            if leaf.must_staple:
                event = WorkerEvent(now, "error", cert_id, leaf.name, NO_OCSP, must_staple_without_ocsp(leaf),
                                    MustStapleWithoutOCSPError.reason)  # fmt: skip
            else:
                detail = "names no OCSP responder (none in its certificate, no url configured): nothing to fetch"
                event = WorkerEvent(now, "info", cert_id, leaf.name, NO_OCSP, detail)
            self._emit(event)
        self.without_ocsp = without

    def _identity(self, leaf: Leaf) -> dict[str, Any]:
        """The state fields a load sets. One string object per distinct
        responder URL, and the name doubles as the path: at 100,000
        certificates, copies cost tens of megabytes."""
        url = _responder_url(leaf)
        return {"name": leaf.name, "path": leaf.path_text, "responder": sys.intern(url) if url else None}

    def _add(
        self, leaf: Leaf, before: CertState | None, now: float, fresh: Staple | None, said: dict[str, tuple[str, str]]
    ) -> CertState:
        """A new certificate: due now, or with a fresh staple (first_look) at
        the renewal a job finding it would have planned (its words in ``said``)."""
        cert_id = leaf.cert_id
        fields = self._identity(leaf)
        fields["next_attempt"] = due = now
        if fresh is not None:
            plan = plan_answer("fresh", fresh, now, now, self.policy, self.rand())
            fields.update(plan.changes)
            due, said[cert_id] = plan.due, (plan.level, plan.detail)
        state = replace(before, **fields) if before else CertState(cert_id, **fields)
        cert = self._certs[cert_id] = _Cert(leaf, state)
        cert.planned_from = fresh.this_update if fresh is not None else None
        self._schedule.add(cert_id, responder_key(state.responder), due)
        return state

    def _update(self, cert: _Cert, leaf: Leaf, now: float) -> CertState | None:
        """An unchanged certificate keeps its schedule; a changed name or responder is recorded."""
        cert.leaf = leaf
        old = cert.state
        identity = self._identity(leaf)
        if (old.name, old.path, old.responder) == (identity["name"], identity["path"], identity["responder"]):
            return None
        cert.state = replace(old, **identity)
        if identity["responder"] != old.responder:
            # A new responder (a --url added, a reissued AIA): try it now,
            # not after the backoff the old one earned.
            self._schedule.move(old.cert_id, responder_key(identity["responder"]), now)
            cert.state = replace(cert.state, next_attempt=now)
        return cert.state

    # -- the schedule -------------------------------------------------------------

    def next_due(self) -> float | None:
        with self._lock:
            return self._schedule.next_due()

    def schedule(self) -> list[tuple[str, float]]:
        """(cert_id, due) of every certificate, earliest first."""
        with self._lock:
            return self._schedule.items()

    def run_due(self) -> list[WorkerEvent]:
        """Run every job due now to completion, within the limits; return their events.

        For ``prefetch --once`` and tests with a FrozenClock. "Now" is read
        once: a job rescheduled during the run is due later, so the run ends.
        """
        if self._threads:
            raise RuntimeError("run_due() is for a worker that is not start()ed")
        now = self.clock.now()
        events: list[WorkerEvent] = []
        pending: set[Future[WorkerEvent | None]] = set()
        with ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="prefetch-once") as pool:
            while True:
                with self._lock:
                    for ticket in self._take(now):
                        pending.add(pool.submit(self._run, ticket))
                if not pending:
                    return events
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                events += [event for event in (f.result() for f in finished) if event is not None]

    def _take(self, now: float) -> list[Ticket]:
        """Take due jobs up to the concurrency limit (self._lock held)."""
        taken = []
        while self._running < self.options.concurrency:
            ticket = self._schedule.take(now)
            if ticket is None:
                break
            self._running += 1
            taken.append(ticket)
        return taken

    # -- one job ------------------------------------------------------------------

    def _run(self, ticket: Ticket) -> WorkerEvent | None:
        with self._lock:
            cert = self._certs.get(ticket.cert_id)
        if cert is None:
            self._finish(ticket, None, None, None)  # removed between take and now
            return None
        leaf, before, reason, validated = cert.leaf, cert.state, None, None
        started = self.clock.now()
        try:
            result: Refresh | Exception = self._refresh(cert)
        except Exception as exc:  # every outcome is planned for, a bug included
            result = exc
        now = self.clock.now()
        self._watch_cache(result, now)
        self._watch_responder(ticket.responder, result, now)
        if isinstance(result, LockTimeoutError):
            action, reason = "busy", result.reason
            plan = plan_busy(result, self.options.lock_timeout, started, now, self.policy)
        elif isinstance(result, Exception):
            error = result
            if not isinstance(error, StapleError):
                # A bug: reported and retried like a failure, so that one
                # certificate tripping it does not take a worker thread down.
                traceback.print_exception(error)
                error = UnexpectedError(f"{leaf.name}: unexpected {type(error).__name__} in refresh: {error}")
            action, reason = "failed", error.reason
            usable = self._usable_cached(leaf, now)
            plan = plan_failure(error, before.failures + 1, usable, started, now, self.policy, self.rand())
        else:
            action = result.action
            plan = plan_answer(action, result.staple, started, now, self.policy, self.rand())
            if action != "leased":
                cert.planned_from = result.staple.this_update  # only this job's thread touches it
            validated = staple_digest(result.staple.der) if self._remembers else None
        changes = plan.changes
        event = WorkerEvent(
            now, plan.level, ticket.cert_id, leaf.name, action, plan.detail, reason,
            changes.get("status", before.status), changes.get("this_update", before.this_update),
            changes.get("next_update", before.next_update), ticket.responder, now - started,
        )  # fmt: skip
        return self._finish(ticket, plan.due, event, changes, validated)

    def _refresh(self, cert: _Cert) -> Refresh:
        """Stapler.refresh, told which staple this run was planned to renew.

        renew_at puts our run before the stapler's renewal point (jitter)
        or caps it (max_delay: a 7-day response is looked at daily, so a
        revocation is noticed within a day). Unless told, the stapler would
        call that staple fresh, and we would look again every min_delay
        until the renewal point and max_delay would mean nothing. A newer
        staple (the request path or another process renewed it) is left
        alone.
        """
        return self.stapler.refresh(
            cert.leaf, replace_from=cert.planned_from, lock_timeout=self.options.lock_timeout
        )

    def _usable_cached(self, leaf: Leaf, now: float) -> Staple | None:
        try:
            staple = self.stapler.cached(leaf)
        except StapleError:
            return None  # the cache is down too: nothing we can count on
        return staple if self.stapler.usable(staple, now) else None

    def _finish(
        self, ticket: Ticket, due: float | None, event: WorkerEvent | None, changes: dict[str, Any] | None,
        validated: bytes | None = None,
    ) -> WorkerEvent | None:  # fmt: skip
        """Reschedule, record the state, one history row and the digest of
        the staple validated (``validated``), report."""
        with self._state_lock:
            with self._lock:
                current = self._schedule.done(ticket, due)
                self._running -= 1
                self._dispatch_cv.notify()
                cert = self._certs.get(ticket.cert_id) if current else None
                if cert is not None and changes is not None:
                    cert.state = replace(cert.state, **changes)
                state = cert.state if cert is not None else None
            if self._stopping or event is None:
                return None  # stop() returned; whoever called it may have closed the store
            if state is not None and self.state is not None:
                try:
                    self.state.put(state, HistoryEntry(event.when, event.action, event.detail), validated)
                except StateStoreError as error:
                    self._state_failed(error, event.when)
                else:
                    self._state_worked(event.when)
        self._emit(event)
        return event

    def _emit(self, event: WorkerEvent) -> None:
        try:
            self.on_event(event)
        except Exception:
            # A broken observer must not stop renewals.
            traceback.print_exc()

    # -- the background service (start, wake, stop: worker_threads) -------------

    def heartbeat(self) -> None:
        if self.state is None:
            return
        with self._lock:
            count = len(self._certs)
        self.state.heartbeat(self.worker_id, os.getpid(), self.started, self.clock.now(), count)

    def audit(self, count: int = AUDIT_BATCH) -> int:
        """Look at the cached staples of the next ``count`` certificates, in
        turn, and bring forward the run of any whose staple is gone or ends
        before that run. Returns how many were brought forward.

        The worker plans from what it fetched; this catches what happened
        without it: a memcached restart or eviction, an entry httpd
        overwrote, a shorter-lived staple another process stored. A
        certificate backing off after failures keeps its backoff: the
        audit must not turn it into a fetch per pass.
        """
        with self._lock:
            if self._audit_pos >= len(self._audit_order):
                self._audit_order, self._audit_pos = list(self._certs), 0
            ids = self._audit_order[self._audit_pos : self._audit_pos + count]
            self._audit_pos += count
            leaves = [self._certs[cert_id].leaf for cert_id in ids if cert_id in self._certs]
        if not leaves:
            return 0
        try:
            found = self.stapler.cached_many(leaves)
        except StapleError as error:
            self._watch_cache(error, self.clock.now())
            return 0  # the cache is down: nothing to correct until it answers
        now = self.clock.now()
        self._cache_answered(now)
        moved = 0
        with self._lock:
            for leaf in leaves:
                cert = self._certs.get(leaf.cert_id)
                if cert is None or cert.state.failures:
                    continue
                staple = found.get(leaf.cert_id)
                if not self.stapler.usable(staple, now):
                    due = now
                else:
                    planned = cert.state.next_attempt
                    if planned is not None and planned < expires_at(staple.this_update, staple.next_update, self.policy):
                        continue  # its run comes before it lapses: nothing to correct (no jitter creep)
                    due = after_answer(staple.this_update, staple.next_update, now, self.policy, self.rand(),
                                       staple.status)  # fmt: skip
                if self._schedule.advance(leaf.cert_id, due):
                    if staple is not None:
                        cert.planned_from = staple.this_update
                    cert.state = replace(cert.state, next_attempt=due)
                    moved += 1
            if moved:
                self._dispatch_cv.notify()
        return moved
