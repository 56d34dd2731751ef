"""The prefetch worker's schedule: when each certificate is next due, and
which due certificate may run now. No threads, no clock, no I/O.

Two parts:

- Planning: pure functions from a job's outcome (an answer, a failure, a
  busy fetch lock) to a Plan: the next attempt, built on engine.refresh.freshness,
  how to report it, and what the certificate's state records.
- ``Schedule``: due times in a heap of (due, seq, cert_id) with lazy
  deletion, O(log n) per operation for 100,000 certificates, and a gate
  a due certificate must pass to run: its responder has fewer than
  ``per_responder`` fetches in flight. (A certificate has one entry, so
  one job at a time; fetch locks are per certificate, so jobs of
  different certificates never wait on each other and need no gate.)

  A certificate stopped at the gate is parked behind it until a job of its
  responder ends, and the heap goes on to the next due certificate. One hanging
  responder so holds at most ``per_responder`` workers, and the
  certificates of every other responder keep being renewed (HAProxy's
  single updater stalled them all, haproxy #3498).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any

from engine.clock import iso
from engine.errors import StapleError
from engine.locks.fetchlocks import LockTimeoutError
from engine.refresh.freshness import UNKNOWN_RECHECK, FreshnessPolicy, backoff, expires_at, renew_at
from engine.ocsp.staple import Staple

#: no attempt is planned sooner than this after the last: a policy with
#: min_delay 0, or a staple about to lapse, must not spin a worker
MIN_RETRY = 1.0
#: a certificate with nothing usable left is tried again at least this
#: often (or every backoff_base, if longer) while its failures are
#: temporary: the retries just before its staple lapsed must not leave it
#: an hour of backoff once its responder is back
LAPSED_RETRY = 60.0


# -- planning -------------------------------------------------------------------


def after_answer(
    this_update: float, next_update: float | None, now: float, policy: FreshnessPolicy, rand: float,
    status: str = "good",
) -> float:
    """After a current answer (good, revoked or unknown): renew it on time; an
    unknown one within UNKNOWN_RECHECK (the responder's "not yet")."""
    due = renew_at(this_update, next_update, now, policy, rand)
    if status == "unknown":
        due = min(due, now + UNKNOWN_RECHECK)
    return max(due, now + MIN_RETRY)


def after_wait(now: float, policy: FreshnessPolicy) -> float:
    """After a busy fetch lock or another instance's lease: look again soon."""
    return now + max(policy.min_delay, MIN_RETRY)


def after_failure(
    failures: int,
    temporary: bool,
    expires: float | None,
    now: float,
    policy: FreshnessPolicy,
    rand: float,
) -> float:
    """After the ``failures``-th failure in a row.

    Exponential backoff; a permanent failure (a 4xx, a response signed by
    the wrong key) waits the cap, since asking again soon only hammers the
    responder. ``expires`` is when the cached staple that is still usable
    lapses: if the backoff would outlast it, try again halfway to that
    moment instead, so the last good response gets its chances to be
    renewed before it truly expires. Those retries come quickly one after
    another as the staple nears its end; once nothing usable is left, a
    temporary failure is tried again within LAPSED_RETRY whatever their
    count, so a responder back after an outage finds the certificate asking.
    """
    delay = backoff(failures, policy, rand) if temporary else policy.backoff_cap
    if expires is not None and expires < now + delay:
        delay = (expires - now) / 2
    elif expires is None and temporary:
        delay = min(delay, max(policy.backoff_base, LAPSED_RETRY))
    return now + max(delay, MIN_RETRY)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one job's outcome means."""

    due: float
    #: info | warning | error
    level: str
    detail: str
    #: the CertState fields to set
    changes: dict[str, Any]


def plan_answer(action: str, staple: Staple, started: float, now: float, policy: FreshnessPolicy, rand: float) -> Plan:
    """After Stapler.refresh answered: updated, fresh, or leased (another instance refreshes).

    revoked and unknown are answers like good, scheduled the same way, and
    reported as warnings.
    """
    changes: dict[str, Any] = {
        "status": staple.status, "this_update": staple.this_update, "next_update": staple.next_update,
        "last_attempt": started,
    }  # fmt: skip
    until = f"nextUpdate {iso(staple.next_update)}" if staple.next_update else "no nextUpdate"
    if action == "leased":
        due = after_wait(now, policy)
        detail = f"another instance holds the lease; {staple.status}, {until}; look again at {iso(due)}"
    else:
        due = after_answer(staple.this_update, staple.next_update, now, policy, rand, staple.status)
        changes.update(last_success=now, failures=0, last_error=None, last_reason=None)
        what = "fetched" if action == "updated" else "cached staple still fresh"
        detail = f"{staple.status} ({what}), thisUpdate {iso(staple.this_update)}, {until}; renew at {iso(due)}"
    changes["next_attempt"] = due
    return Plan(due, "info" if staple.good else "warning", detail, changes)


def plan_busy(error: LockTimeoutError, waited: float, started: float, now: float, policy: FreshnessPolicy) -> Plan:
    """The certificate's fetch lock stayed held elsewhere: not a failure, someone is probably fetching it."""
    due = after_wait(now, policy)
    detail = f"fetch lock held elsewhere for {waited:g} s; look again at {iso(due)}"
    return Plan(due, "info", detail, {"last_attempt": started, "next_attempt": due})


def plan_failure(
    error: StapleError,
    failures: int,
    usable: Staple | None,
    started: float,
    now: float,
    policy: FreshnessPolicy,
    rand: float,
) -> Plan:
    """The ``failures``-th failure in a row; ``usable`` is the cached staple still servable, if any.

    An error without ``temporary`` (an InputError: no responder URL, a bad
    one) is permanent: a configuration problem is not fixed by asking
    again soon. The cache is not touched: the last good response stays in
    it, and is served, until it expires.
    """
    temporary = bool(getattr(error, "temporary", False))
    expires = expires_at(usable.this_update, usable.next_update, policy) if usable else None
    due = after_failure(failures, temporary, expires, now, policy, rand)
    changes: dict[str, Any] = {
        "failures": failures, "last_error": str(error), "last_reason": error.reason,
        "last_attempt": started, "next_attempt": due,
    }  # fmt: skip
    if usable is not None:
        changes.update(status=usable.status, this_update=usable.this_update, next_update=usable.next_update)
        left = f"the last good staple is served until {iso(expires)}"
    else:
        left = "no usable staple is cached"
    kind = "temporary" if temporary else "permanent"
    detail = f"{error} ({kind}, failure {failures} in a row); {left}; retry at {iso(due)}"
    return Plan(due, "warning" if usable is not None else "error", detail, changes)


# -- the schedule ---------------------------------------------------------------

_QUEUED, _PARKED, _RUNNING = "queued", "parked", "running"
#: a gate: ("responder", key)
Gate = tuple[str, object]


@dataclass(slots=True)  # one per certificate: 100,000 in a big worker
class _Entry:
    cert_id: str
    responder: str
    due: float
    seq: int
    where: str = _QUEUED


@dataclass(frozen=True, slots=True)
class Ticket:
    """A certificate taken to run; handed back to ``done``."""

    cert_id: str
    responder: str
    seq: int
    due: float


class Schedule:
    """Due times and the gates. Not thread-safe: callers lock."""

    def __init__(self, per_responder: int) -> None:
        if per_responder < 1:
            raise ValueError(f"per_responder must be 1 or more, not {per_responder}")
        self.per_responder = per_responder
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._in_flight: dict[str, int] = {}
        #: per gate, (seq, cert_id) of due certificates waiting for it
        self._parked: dict[Gate, deque[tuple[int, str]]] = {}
        #: taken out of _parked when their gate opened: due and, probably, runnable
        self._ready: deque[tuple[int, str]] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, cert_id: object) -> bool:
        return cert_id in self._entries

    def in_flight(self, responder: str) -> int:
        return self._in_flight.get(responder, 0)

    def add(self, cert_id: str, responder: str, due: float) -> None:
        """Schedule a new certificate."""
        if cert_id in self._entries:
            raise ValueError(f"{cert_id} is scheduled already; move() changes it")
        self._entries[cert_id] = entry = _Entry(cert_id, responder, due, next(self._seq))
        self._push(entry)

    def move(self, cert_id: str, responder: str, due: float) -> None:
        """A reloaded certificate with another responder: due at ``due``, counted
        against the new one. A running one is only relabelled: done() plans its
        next run, and its slot stays with the responder it was taken for.
        """
        entry = self._entries[cert_id]
        entry.responder = responder
        if entry.where != _RUNNING:
            # Re-queued even when parked: it must not wait behind a gate
            # of a responder it no longer uses.
            entry.where, entry.due, entry.seq = _QUEUED, due, next(self._seq)
            self._push(entry)

    def advance(self, cert_id: str, due: float) -> bool:
        """Bring a waiting certificate's run forward to ``due``; never later,
        never a running one (done() plans that). True when it moved."""
        entry = self._entries.get(cert_id)
        if entry is None or entry.where == _RUNNING or due >= entry.due:
            return False
        entry.where, entry.due, entry.seq = _QUEUED, due, next(self._seq)
        self._push(entry)
        return True

    def remove(self, cert_id: str) -> None:
        # Its heap and parked items die lazily: their seq no longer matches.
        self._entries.pop(cert_id, None)
        if len(self._heap) > 2 * len(self._entries) + 1024:
            self._compact()

    def take(self, now: float) -> Ticket | None:
        """A due certificate past its gate, marked running; else None."""
        while self._ready:
            entry = self._live(*self._ready.popleft(), _PARKED)
            if entry is not None:
                ticket = self._try(entry)
                if ticket is not None:
                    return ticket
        while self._heap and self._heap[0][0] <= now:
            _, seq, cert_id = heapq.heappop(self._heap)
            entry = self._live(seq, cert_id, _QUEUED)
            if entry is not None:
                ticket = self._try(entry)
                if ticket is not None:
                    return ticket
        return None

    def done(self, ticket: Ticket, due: float | None) -> bool:
        """A run has ended: open its gate and schedule the certificate at ``due``.

        Returns False when the certificate was removed (or replaced) while it
        ran: then nothing is scheduled, and its outcome concerns nobody.
        """
        left = self._in_flight[ticket.responder] - 1
        if left:
            self._in_flight[ticket.responder] = left
        else:
            del self._in_flight[ticket.responder]
        self._unpark_one(("responder", ticket.responder))
        entry = self._entries.get(ticket.cert_id)
        if entry is None or entry.seq != ticket.seq or entry.where != _RUNNING:
            return False
        entry.where = _QUEUED
        if due is not None:
            entry.due = due
        entry.seq = next(self._seq)
        self._push(entry)
        return True

    def next_wakeup(self) -> float | None:
        """When the next queued certificate falls due (parked ones wait for a gate, not a time)."""
        while self._heap:
            due, seq, cert_id = self._heap[0]
            if self._live(seq, cert_id, _QUEUED) is not None:
                return due
            heapq.heappop(self._heap)
        return None

    def next_due(self) -> float | None:
        """The earliest due time of any certificate waiting to run, parked or queued."""
        dues = [self.next_wakeup()]
        for waiting in (self._ready, *self._parked.values()):
            dues += [e.due for e in (self._live(s, c, _PARKED) for s, c in waiting) if e is not None]
        known = [due for due in dues if due is not None]
        return min(known) if known else None

    def items(self) -> list[tuple[str, float]]:
        """(cert_id, due) of every certificate, earliest first; a running one shows the due time it was taken at."""
        return sorted(((e.cert_id, e.due) for e in self._entries.values()), key=lambda item: (item[1], item[0]))

    # -- inside ----------------------------------------------------------------

    def _push(self, entry: _Entry) -> None:
        heapq.heappush(self._heap, (entry.due, entry.seq, entry.cert_id))

    def _live(self, seq: int, cert_id: str, where: str) -> _Entry | None:
        entry = self._entries.get(cert_id)
        if entry is None or entry.seq != seq or entry.where != where:
            return None
        return entry

    def _try(self, entry: _Entry) -> Ticket | None:
        """Start it if its gate is open, else park it behind it."""
        if self._in_flight.get(entry.responder, 0) < self.per_responder:
            entry.where = _RUNNING
            self._in_flight[entry.responder] = self._in_flight.get(entry.responder, 0) + 1
            return Ticket(entry.cert_id, entry.responder, entry.seq, entry.due)
        self._park(entry, ("responder", entry.responder))
        return None

    def _park(self, entry: _Entry, gate: Gate) -> None:
        entry.where = _PARKED
        self._parked.setdefault(gate, deque()).append((entry.seq, entry.cert_id))

    def _unpark_one(self, gate: Gate) -> None:
        waiting = self._parked.get(gate)
        while waiting:
            seq, cert_id = waiting.popleft()
            if self._live(seq, cert_id, _PARKED) is not None:
                self._ready.append((seq, cert_id))
                break
        if not waiting:
            self._parked.pop(gate, None)

    def _compact(self) -> None:
        """Drop the heap items of removed certificates: a reload that removes
        many would otherwise leave them until their due time comes."""
        self._heap = [(e.due, e.seq, e.cert_id) for e in self._entries.values() if e.where == _QUEUED]
        heapq.heapify(self._heap)
