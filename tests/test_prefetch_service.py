"""The prefetch worker as a background service, with real threads: a hanging
responder holds at most its share of the threads and no other certificate,
stop() comes back while a fetch hangs, the dispatcher sleeps until something
is due and wakes when told.

The tests wait on conditions with a generous deadline; no assertion is
about how fast anything ran, except that stop() comes back within its grace
period.
"""

from __future__ import annotations

import time

import pytest

from tests import prefetch_rig
from tests.prefetch_rig import eventually, leaves_inside, new_leaf, requests, updated
from tests.responder import Behaviour, ScriptedResponder

#: the fixture, by name in this module, where pytest looks for it
rig = prefetch_rig.rig


@pytest.fixture
def hanging(pki):
    """A second responder that reads every request and never answers."""
    other = ScriptedResponder(pki)
    other.default = Behaviour(hang=True)
    other.start()
    yield other
    other.stop()


class TestService:
    def test_a_hanging_responder_holds_at_most_per_responder_workers(self, rig, pki, responder, hanging):
        # the transport timeout outlasts the test: a hung request stays in flight
        r = rig(timeout=120.0, concurrency=4, per_responder=2, stop_grace=0.5)
        stuck = [new_leaf(pki, ocsp_url=hanging.url) for _ in range(6)]
        # every one counted in a stripe a hung fetch is counted in: locks are
        # per certificate, so that makes no difference
        healthy = leaves_inside(pki, r.stapler.locks, {r.stapler.locks.stripe_of(l.cert_id) for l in stuck}, 12)
        r.worker.load(stuck + healthy)
        r.worker.start()
        renewed = {leaf.cert_id for leaf in healthy}
        eventually(lambda: renewed <= updated(r.events), "every healthy one renewed")
        eventually(lambda: hanging.request_count == 2, "two requests reach the hanging responder")
        assert [requests(responder, leaf) for leaf in healthy] == [1] * len(healthy)
        r.worker.wake()  # the four parked ones are due: they must still wait
        assert r.worker.next_due() <= r.clock.now()
        assert hanging.request_count == 2
        assert all(r.stapler.cached(leaf) is not None for leaf in healthy)

    def test_a_hung_fetch_holds_up_no_other_certificate(self, rig, pki, responder, hanging):
        # One stripe for all: striped locks parked every other certificate
        # behind the hung one (or, waiting, for the whole lock_timeout).
        r = rig(timeout=120.0, concurrency=2, per_responder=2, lock_timeout=120.0, stop_grace=0.5, stripes=1)
        stuck = new_leaf(pki, ocsp_url=hanging.url)
        others = [new_leaf(pki) for _ in range(6)]
        r.worker.load([stuck, *others])
        r.worker.start()
        eventually(lambda: {leaf.cert_id for leaf in others} <= updated(r.events), "the others renewed")
        assert hanging.request_count == 1
        assert [requests(responder, leaf) for leaf in others] == [1] * 6
        assert not any(e.action == "busy" for e in r.events)

    def test_stop_returns_within_grace_while_a_fetch_hangs(self, rig, pki, hanging):
        r = rig(timeout=120.0, stop_grace=0.5)
        r.worker.load([new_leaf(pki, ocsp_url=hanging.url)])
        r.worker.start()
        eventually(lambda: hanging.request_count == 1, "the fetch reaches the responder")
        began = time.monotonic()
        assert r.worker.stop() is False  # one thread is still in its fetch
        assert time.monotonic() - began < 0.5 + 2.0

    def test_sleeps_until_due_and_wakes_when_told(self, rig, pki, responder):
        r = rig()
        leaf = new_leaf(pki)
        r.worker.load([leaf])
        r.worker.start()
        eventually(lambda: requests(responder, leaf) == 1, "the first fetch")
        eventually(lambda: r.state.get(leaf.cert_id).last_success is not None, "its state")
        assert [b.worker_id for b in r.state.workers()] == [r.worker.worker_id]
        r.clock.set(r.due(leaf))
        r.worker.wake()
        eventually(lambda: requests(responder, leaf) == 2, "the renewal after wake()")
        assert r.worker.stop() is True
        assert r.state.workers() == []

    def test_load_while_running_wakes_the_dispatcher(self, rig, pki, responder):
        r = rig()
        r.worker.start()
        leaf = new_leaf(pki)
        r.worker.load([leaf])
        eventually(lambda: requests(responder, leaf) == 1, "the new certificate fetched")
        with pytest.raises(RuntimeError):
            r.worker.run_due()
