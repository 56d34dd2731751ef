"""What the dashboard asks of the engine: refreshes, and the in-process worker.

No textual here: the app runs these in its worker threads and only gets
their outcomes back.

A refresh goes through engine.refresh.fanout, the same path as ``warm`` (and the
prefetch worker's ``Stapler.refresh`` underneath): the certificate's
fetch lock (so it waits behind a worker fetching the same certificate,
and shows in the lock figures), a second look in the cache, a validated
fetch, and a store that never replaces a valid staple with a failure.
Each batch opens its own Stapler and closes it after: the local store
keeps a connection per thread until it is closed, and the app's worker
thread for a batch is new every time.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence

from engine.api import (
    Clock, Fanout, Leaf, Outcome, PrefetchWorker, Refresh, StapleError, Stapler, StateStore, UnexpectedError,
    WorkerOptions, failed, no_responder, outcome_of,
)



def describe(outcomes: Sequence[Outcome]) -> str:
    """One line for a batch: '3 updated, 1 failed (timeout 1)'."""
    if len(outcomes) == 1:
        return f"{outcomes[0].leaf.name}: {outcomes[0].message}"
    actions = Counter(o.result for o in outcomes)
    text = ", ".join(f"{n} {action}" for action, n in sorted(actions.items()))
    reasons = Counter(o.reason for o in outcomes if not o.ok)
    if reasons:
        text += " (" + ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items(), key=str)) + ")"
    return text


class Refresher:
    def __init__(self, open_stapler: Callable[[], Stapler], *, lock_timeout: float, concurrency: int = 8) -> None:
        self._open = open_stapler
        #: long enough to outlast one fetch by whoever holds the certificate (as warm)
        self.lock_timeout = lock_timeout
        self.concurrency = concurrency

    def refresh(self, leaves: Sequence[Leaf], *, force: bool) -> list[Outcome]:
        """Refresh each leaf; never raises (a failure is an Outcome). One that names
        no OCSP responder is "no OCSP" (engine no_responder), nothing asked."""
        asking = [leaf for leaf in leaves if leaf.has_responder]
        done = {id(outcome.leaf): outcome for outcome in self._refresh(asking, force)}
        return [done[id(leaf)] if leaf.has_responder else no_responder(leaf) for leaf in leaves]

    def _refresh(self, leaves: Sequence[Leaf], force: bool) -> list[Outcome]:
        if not leaves:
            return []
        try:
            stapler = self._open()
        except StapleError as error:
            return [failed(None, leaf, error) for leaf in leaves]
        except Exception as error:  # a lock directory we may not create is an OSError, not ours
            unexpected = UnexpectedError(f"cannot open the cache and locks: {error}")
            return [failed(None, leaf, unexpected) for leaf in leaves]
        results: dict[int, Refresh | StapleError] = {}
        try:
            # Fair between responders, as warm: a hanging responder holds
            # its share of the slots, not all.
            fanout = Fanout(stapler, self.concurrency, force=force, lock_timeout=self.lock_timeout)
            fanout.run(leaves, results.__setitem__)
            return [outcome_of(stapler, leaf, results[index]) for index, leaf in enumerate(leaves)]
        finally:
            _close(stapler)


def _close(stapler: Stapler) -> None:
    try:
        stapler.close()
    except (StapleError, RuntimeError):
        pass  # RuntimeError: a thread still holds a fetch lock (a fetch past its deadline); the process lets go at exit


class InProcessPrefetch:
    """``dashboard --prefetch``: the prefetch worker, in this process, for as long as the app runs."""

    def __init__(self, open_stapler: Callable[[], Stapler], state_path, leaves: list[Leaf], *,
                 options: WorkerOptions, clock: Clock) -> None:  # fmt: skip
        self._open = open_stapler
        self.state_path = state_path
        self.leaves = leaves
        self.options = options
        self.clock = clock
        self.worker: PrefetchWorker | None = None
        self._stapler: Stapler | None = None
        self._state: StateStore | None = None
        self._lock = threading.Lock()  # stop() waits for a start() under way
        self._stopped = False

    def start(self) -> None:
        with self._lock:
            if self._stopped or self.worker is not None:
                return
            self._state = StateStore(self.state_path)
            self._stapler = self._open()
            self.worker = PrefetchWorker(self._stapler, state=self._state, options=self.options, clock=self.clock)
            self.worker.load(self.leaves)
            self.worker.start()

    def stop(self) -> bool:
        with self._lock:
            self._stopped = True
            clean = self.worker.stop() if self.worker is not None else True
            if self._stapler is not None:
                _close(self._stapler)
            if self._state is not None:
                self._state.close()
            return clean
