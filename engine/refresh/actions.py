"""Renewal actions: what runs after staples change, so that a renewal reaches
the servers that read files (an nginx reload, a push to HAProxy, a command).

An action is run for a batch of certificates, never for each one: the
renewals that arrive together (a worker pass renews many at once) wait
BATCH_DELAY for each other, and an action runs at most once per its
``min_interval`` (one nginx reload a minute, not one per renewal). A staple
that stops being servable cannot wait for that: its action runs at once,
so that a server never keeps stapling an expired response. A failed run is
retried with backoff (RETRY_BASE doubling, at most RETRY_CAP, jittered),
its certificates kept pending with whatever changed meanwhile.

Actions run on the runner's own thread, one at a time: a reload that hangs
holds up the next action's run, never a renewal.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from engine.clock import SYSTEM_CLOCK, Clock, iso
from engine.errors import StapleError
from engine.ocsp.certs import Leaf

#: renewals arriving within this of each other are one batch
BATCH_DELAY = 1.0
#: retries of a failed run: RETRY_BASE doubling, at most RETRY_CAP, +- a quarter
RETRY_BASE = 5.0
RETRY_CAP = 300.0


class ActionError(StapleError):
    """An action's run failed: what it did stays done, the rest is retried."""

    reason = "action_failed"


@dataclass(frozen=True)
class ActionResult:
    #: one line for the log: what it did
    detail: str
    #: cert_id -> when the staple it now serves stops being servable (None: it serves none)
    expires: dict[str, float | None] = field(default_factory=dict)


class Action(Protocol):
    name: str
    #: seconds between two runs at least, unless a staple expired
    min_interval: float

    def run(self, leaves: list[Leaf]) -> ActionResult:
        """Bring these certificates' served staples in line with the cache; ActionError if not."""
        ...


@dataclass
class ActionState:
    """An action as operators see it (logs, metrics, the dashboard)."""

    name: str
    runs: int = 0
    last_run: float | None = None
    last_success: float | None = None
    #: consecutive failed runs
    failures: int = 0
    last_error: str | None = None
    #: when it runs next (None: nothing pending)
    next_run: float | None = None
    #: certificates waiting for it
    pending: int = 0


@dataclass(frozen=True)
class ActionEvent:
    when: float
    #: info | error
    level: str
    action: str
    #: ran | failed
    outcome: str
    detail: str
    certificates: int


class _Slot:
    """One action's schedule: what is pending, when it runs, which served staples expire when."""

    def __init__(self, action: Action) -> None:
        self.action = action
        self.state = ActionState(action.name)
        self.pending: dict[str, Leaf] = {}
        #: cert_id -> (when its served staple expires, the leaf)
        self.expiries: dict[str, tuple[float, Leaf]] = {}


class ActionRunner:
    def __init__(
        self,
        actions: Iterable[Action],
        *,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] = random.random,
        on_event: Callable[[ActionEvent], None] = lambda event: None,
    ) -> None:
        self.clock = clock
        self.rand = rand
        self.on_event = on_event
        self._slots = [_Slot(action) for action in actions]
        self._lock = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- what happened ------------------------------------------------------------

    def changed(self, leaves: Iterable[Leaf]) -> None:
        """These certificates' cached staples changed (renewed, or gone): batch them."""
        leaves = list(leaves)
        if not leaves or not self._slots:
            return
        now = self.clock.now()
        with self._lock:
            for slot in self._slots:
                for leaf in leaves:
                    slot.pending[leaf.cert_id] = leaf
                state = slot.state
                if state.next_run is None:
                    earliest = now if state.last_run is None else state.last_run + slot.action.min_interval
                    state.next_run = max(now + BATCH_DELAY, earliest)
                state.pending = len(slot.pending)
            self._lock.notify()

    # -- running --------------------------------------------------------------------

    def run_due(self) -> float | None:
        """Run every action that is due now; the time the next one is due (None: nothing pending)."""
        now = self.clock.now()
        for slot in self._slots:
            batch = self._take(slot, now)
            if batch:
                self._run(slot, batch)
        return self.next_due()

    def run_now(self, leaves: list[Leaf]) -> list[ActionEvent]:
        """Run every action once for ``leaves``, now, whatever is scheduled (warm,
        prefetch --once); the events of the runs that failed."""
        failed: list[ActionEvent] = []
        on_event = self.on_event

        def collect(event: ActionEvent) -> None:
            if event.outcome == "failed":
                failed.append(event)
            on_event(event)

        self.on_event = collect
        try:
            for slot in self._slots:
                if leaves:
                    self._run(slot, list(leaves))
        finally:
            self.on_event = on_event
        return failed

    def next_due(self) -> float | None:
        with self._lock:
            return self._next_due_locked()

    def _take(self, slot: _Slot, now: float) -> list[Leaf]:
        with self._lock:
            for cert_id, (when, leaf) in list(slot.expiries.items()):
                if when <= now:  # its served staple just ran out: at once, whatever min_interval says
                    del slot.expiries[cert_id]
                    slot.pending[cert_id] = leaf
                    slot.state.next_run = now
            if slot.state.next_run is None or slot.state.next_run > now:
                return []
            if not slot.pending:
                slot.state.next_run = None  # nothing to run: no due time (the thread would spin on it)
                return []
            batch = list(slot.pending.values())
            slot.pending.clear()
            slot.state.next_run = None
            slot.state.pending = 0
            return batch

    def _run(self, slot: _Slot, batch: list[Leaf]) -> None:
        started = self.clock.now()
        try:
            result = slot.action.run(batch)
        except StapleError as error:
            self._failed(slot, batch, started, str(error))
            return
        except Exception as error:  # a bug in an action must not end the runner
            self._failed(slot, batch, started, f"internal error: {type(error).__name__}: {error}")
            return
        with self._lock:
            state = slot.state
            state.runs += 1
            state.last_run = state.last_success = started
            state.failures, state.last_error = 0, None
            by_id = {leaf.cert_id: leaf for leaf in batch}
            for cert_id, when in result.expires.items():
                if when is None:
                    slot.expiries.pop(cert_id, None)
                elif cert_id in by_id:
                    slot.expiries[cert_id] = (when, by_id[cert_id])
        self.on_event(ActionEvent(self.clock.now(), "info", slot.action.name, "ran", result.detail, len(batch)))

    def _failed(self, slot: _Slot, batch: list[Leaf], started: float, why: str) -> None:
        with self._lock:
            state = slot.state
            state.runs += 1
            state.last_run = started
            state.failures += 1
            state.last_error = why
            for leaf in batch:
                slot.pending.setdefault(leaf.cert_id, leaf)  # with whatever arrived meanwhile
            state.pending = len(slot.pending)
            delay = min(RETRY_BASE * 2 ** (state.failures - 1), RETRY_CAP) * (0.75 + self.rand() / 2)
            state.next_run = self.clock.now() + delay
        detail = f"{why}; {len(batch)} certificates kept pending, retry at {iso(state.next_run)}"
        self.on_event(ActionEvent(self.clock.now(), "error", slot.action.name, "failed", detail, len(batch)))

    def states(self) -> list[ActionState]:
        with self._lock:
            return [ActionState(**vars(slot.state)) for slot in self._slots]

    # -- the thread -------------------------------------------------------------------

    def start(self) -> None:
        if self._slots and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="staplectl-actions", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                due = self._next_due_locked()
                wait = None if due is None else max(0.0, due - self.clock.now())
                if wait is None or wait > 0:
                    self._lock.wait(wait)
                    if self._stopping:
                        return
            self.run_due()

    def _next_due_locked(self) -> float | None:
        times = [s.state.next_run for s in self._slots if s.state.next_run is not None]
        times += [when for s in self._slots for when, _ in s.expiries.values()]
        return min(times, default=None)
