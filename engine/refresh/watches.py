"""What the prefetch worker notices of the cache, its responders and its
state file as a whole (the other part of engine.refresh.prefetch's
PrefetchWorker, which mixes this in): an outage is said once when it
starts and once when it ends, and what failed because of it is due again
as soon as it ends, not after a backoff meant for a failing responder.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.errors import STORE_DOWN_REASONS, FetchError
from engine.redact import redact
from engine.refresh import worker_events as events
from engine.responders.health import RESPONDER_SILENT, responder_key
from engine.store.outages import Outage, StoreWatch, is_cache_down, says_cache_worked

if TYPE_CHECKING:
    from engine.refresh.schedule import Schedule
    from engine.refresh.stapler import Refresh, Stapler
    from engine.refresh.worker_events import WorkerEvent
    from engine.refresh.worker_state import CertState, StateStore, StateStoreError


class Watches:
    """The cache, responder and state watches; PrefetchWorker provides the rest."""

    # PrefetchWorker's: what the watches read and move, and _emit()
    stapler: Stapler
    state: StateStore | None
    cache_watch: StoreWatch
    state_watch: StoreWatch
    _responder_watch: dict[str, StoreWatch]
    _lock: threading.Lock
    _dispatch_cv: threading.Condition
    _schedule: Schedule
    _certs: dict[str, Any]
    _audit_now: bool
    _audit_order: list[str]
    _audit_pos: int

    def _emit(self, event: WorkerEvent) -> None:
        raise NotImplementedError

    # -- the cache as a whole ---------------------------------------------------

    def _watch_cache(self, result: Refresh | Exception, now: float) -> None:
        """Note what a refresh says of the cache: down, answering, or nothing."""
        if isinstance(result, Exception) and is_cache_down(result):
            outage = self.cache_watch.failed(result, now)
            if outage is not None:
                self._emit(events.cache_down(now, redact(self.stapler.cache.uri), outage))
        elif not isinstance(result, Exception) or says_cache_worked(result):
            self._cache_answered(now, wrote=not isinstance(result, Exception) and result.action == "updated")

    def _cache_answered(self, now: float, *, wrote: bool = False) -> None:
        ended = self.cache_watch.worked(now, wrote=wrote)
        if ended is not None:
            self._cache_back(ended, now)

    def _cache_back(self, outage: Outage, now: float) -> None:
        """The cache answers again: what failed on it is due now, not after its backoff.

        A restarted memcached or redis is empty; the next audit (run at
        once) also finds every staple that is missing.
        """
        with self._lock:
            due = self._due_now(lambda state: state.last_reason in STORE_DOWN_REASONS, now)
            self._audit_now = True
            self._audit_order, self._audit_pos = [], 0
        self._emit(events.cache_up(now, redact(self.stapler.cache.uri), outage, due))

    # -- responders --------------------------------------------------------------

    def _watch_responder(self, key: str, result: Refresh | Exception, now: float) -> None:
        """Say once that a responder stopped answering, and once that it is back.

        Meanwhile its certificates fail at once (engine.responders.health: one probe at
        a time), and each failure says so only with -v.
        """
        if isinstance(result, Exception):
            if getattr(result, "reason", None) in RESPONDER_SILENT:
                outage = self._responder_watch.setdefault(key, StoreWatch()).failed(result, now)
                if outage is not None:
                    self._emit(events.responder_down(now, key, outage))
                return
            if not isinstance(result, FetchError):
                return  # a busy fetch lock, the cache: nothing said of the responder
        watch = self._responder_watch.get(key)
        ended = watch.worked(now) if watch is not None else None
        if ended is None:
            return
        # what failed while it was silent is due now, not at its own retry
        with self._lock:
            due = self._due_now(
                lambda state: state.last_reason in RESPONDER_SILENT and responder_key(state.responder) == key, now
            )
        self._emit(events.responder_up(now, key, ended, due))

    def _due_now(self, failed: Callable[[CertState], bool], now: float) -> int:
        """Bring forward to ``now`` every certificate whose state ``failed``
        says the outage caused; how many moved (self._lock held)."""
        due = [
            cert_id for cert_id, cert in self._certs.items() if failed(cert.state) and self._schedule.advance(cert_id, now)
        ]  # fmt: skip
        for cert_id in due:
            self._certs[cert_id].state = replace(self._certs[cert_id].state, next_attempt=now)
        self._dispatch_cv.notify()
        return len(due)

    # -- the state file ---------------------------------------------------------

    def _state_failed(self, error: StateStoreError, now: float) -> None:
        if self.state_watch.failed(error, now) is not None:
            self._emit(events.state_down(now, str(self.state.path), error, error.reason))

    def _state_worked(self, now: float) -> None:
        ended = self.state_watch.worked(now, wrote=True)
        if ended is not None:
            self._emit(events.state_up(now, str(self.state.path), ended))
