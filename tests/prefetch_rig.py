"""The rig the prefetch worker's tests drive, and the helpers they share
(tests/test_prefetch.py, tests/test_prefetch_service.py).

``rig()`` makes a PrefetchWorker on a FrozenClock, a real local store and
real fetch locks, fetching from the session's scripted responder; every
one made is stopped and closed after the test. A test module puts ``rig``
in its own namespace (``rig = prefetch_rig.rig``): pytest looks for
fixtures there.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import pytest

from engine.store.cache import Cache
from engine.ocsp.certs import Leaf, load_leaf
from engine.clock import FrozenClock
from engine.refresh.fetch import FetchOptions
from engine.locks.fetchlocks import FetchLocks
from engine.refresh.freshness import DEFAULT_POLICY, FreshnessPolicy
from engine.refresh.prefetch import PrefetchWorker, WorkerEvent, WorkerOptions
from engine.store.providers import open_provider
from engine.refresh.stapler import Stapler
from engine.refresh.worker_state import StateStore
from engine.responders.transport import TransportOptions
from tests.loopback import LOOPBACK

PATIENCE = 30.0
_names = itertools.count()


@dataclass
class Rig:
    worker: PrefetchWorker
    clock: FrozenClock
    stapler: Stapler
    state: StateStore
    events: list[WorkerEvent]

    @property
    def policy(self) -> FreshnessPolicy:
        return self.stapler.policy

    def due(self, leaf: Leaf) -> float:
        return dict(self.worker.schedule())[leaf.cert_id]

    def run_at(self, when: float) -> list[WorkerEvent]:
        self.clock.set(when)
        return self.worker.run_due()

    def close(self) -> None:
        # A hung fetch ends when its responder stops (torn down before us):
        # its thread must let go of its stripe before the locks close.
        assert self.worker.stop(timeout=PATIENCE)
        self.state.close()
        self.stapler.cache.close()
        self.stapler.locks.close()


@pytest.fixture
def rig(tmp_path, responder):
    made = []

    def make(policy=DEFAULT_POLICY, rand=0.5, timeout=10.0, state_path=None, stripes=64, **options) -> Rig:
        clock = FrozenClock(time.time())
        fetch_options = FetchOptions(transport=TransportOptions(timeout=timeout, allow=LOOPBACK))
        cache = Cache(open_provider(f"local:{tmp_path / 's.db'}"))
        locks = FetchLocks(tmp_path / "locks", stripes)
        stapler = Stapler(cache, locks, fetch_options=fetch_options, policy=policy, clock=clock)
        state = StateStore(state_path or tmp_path / "state" / "worker.db")
        events: list[WorkerEvent] = []
        worker = PrefetchWorker(
            stapler, state=state, options=WorkerOptions(**options), clock=clock,
            rand=lambda: rand, on_event=events.append,
        )  # fmt: skip
        made.append(Rig(worker, clock, stapler, state, events))
        return made[-1]

    yield make
    for each in made:
        each.close()


def new_leaf(pki, **kwargs) -> Leaf:
    """A leaf of its own: the responder counts requests per serial for the whole session."""
    return load_leaf(pki.leaf(f"prefetch-{next(_names)}", **kwargs).chain_path)


def requests(responder, leaf: Leaf) -> int:
    return responder.requests_for(leaf.serial)


def by_cert(events: list[WorkerEvent]) -> dict[str, WorkerEvent]:
    return {event.cert_id: event for event in events}


def updated(events: list[WorkerEvent]) -> set[str]:
    return {event.cert_id for event in events if event.action == "updated"}


def leaves_inside(pki, locks: FetchLocks, stripes: set[int], count: int) -> list[Leaf]:
    """``count`` new leaves each of which maps to one of ``stripes``."""
    found: list[Leaf] = []
    while len(found) < count:
        leaf = new_leaf(pki)
        if locks.stripe_of(leaf.cert_id) in stripes:
            found.append(leaf)
    return found


def eventually(condition, what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {PATIENCE} s: {what}")
        time.sleep(0.01)
