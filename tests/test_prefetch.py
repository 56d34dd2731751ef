"""The prefetch worker against the scripted responder and a real local store.

Scheduling is tested with a FrozenClock and run_due(): nothing sleeps to let
time pass. The threaded tests (start/stop, a hanging responder) wait on
conditions with a generous deadline; no assertion is about how fast
anything ran, except that stop() comes back within its grace period.
"""

from __future__ import annotations

import itertools
import multiprocessing
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace

import pytest

from engine.store.cache import Cache
from engine.ocsp.certs import Leaf, load_leaf
from engine.clock import FrozenClock, iso
from engine.refresh.fetch import FetchOptions
from engine.locks.fetchlocks import FetchLocks
from engine.refresh.freshness import DEFAULT_POLICY, FreshnessPolicy, backoff, expires_at, renew_at
from engine.responders.health import responder_key
from engine.refresh.prefetch import PrefetchWorker, WorkerEvent, WorkerOptions
from engine.store.providers import open_provider
from engine.refresh.schedule import LAPSED_RETRY, MIN_RETRY, Schedule, after_answer, after_failure
from engine.refresh.stapler import Stapler
from engine.refresh.worker_state import StateStore
from engine.responders.transport import TransportOptions
from tests.loopback import LOOPBACK
from tests.responder import Behaviour, ScriptedResponder

PATIENCE = 30.0
SPAWN = multiprocessing.get_context("spawn")
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


# -- scheduling, with a frozen clock ---------------------------------------------


class TestRenewal:
    def test_new_certificates_are_due_at_once_and_fetched(self, rig, pki, responder):
        r = rig()
        leaves = [new_leaf(pki), new_leaf(pki)]
        assert r.worker.load(leaves) == (2, 0)
        assert r.worker.schedule() == sorted((leaf.cert_id, r.clock.now()) for leaf in leaves)
        assert r.worker.next_due() == r.clock.now()
        assert [e.action for e in r.events] == ["added", "added"]
        events = r.worker.run_due()
        assert sorted(e.action for e in events) == ["updated", "updated"]
        assert {e.level for e in events} == {"info"}
        for leaf in leaves:
            assert requests(responder, leaf) == 1
            assert r.stapler.cached(leaf) is not None

    def test_after_success_the_next_run_is_renew_at(self, rig, pki):
        r = rig()
        leaf = new_leaf(pki)
        r.worker.load([leaf])
        now = r.clock.now()
        r.worker.run_due()
        staple = r.stapler.cached(leaf)
        expected = renew_at(staple.this_update, staple.next_update, now, r.policy, 0.5)
        assert r.due(leaf) == expected
        assert r.worker.next_due() == expected
        row = r.state.get(leaf.cert_id)
        assert row.next_attempt == expected
        assert (row.status, row.failures, row.this_update, row.last_success) == ("good", 0, staple.this_update, now)
        assert [h.action for h in r.state.history(leaf.cert_id)] == ["updated"]

    def test_nothing_runs_before_due_and_the_renewal_runs_at_due(self, rig, pki, responder):
        r = rig()
        leaf = new_leaf(pki)
        r.worker.load([leaf])
        r.worker.run_due()
        first = r.stapler.cached(leaf)
        due = r.due(leaf)
        assert r.run_at(due - 0.001) == []
        assert requests(responder, leaf) == 1
        (event,) = r.run_at(due)
        # renew_at is jittered before the stapler's own renewal point: the
        # worker renews anyway, since nobody renewed this staple meanwhile
        assert event.action == "updated"
        assert requests(responder, leaf) == 2
        assert r.stapler.cached(leaf).der != first.der

    def test_a_staple_renewed_elsewhere_is_not_fetched_again(self, rig, pki, responder):
        r = rig()
        leaf = new_leaf(pki)
        r.worker.load([leaf])
        r.worker.run_due()
        responder.script(leaf.serial, Behaviour(this_update_offset=-30))  # newer than the worker's
        assert r.stapler.refresh(leaf, force=True).action == "updated"  # a one-shot `fetch`, say
        newer = r.stapler.cached(leaf)
        (event,) = r.run_at(r.due(leaf))
        assert event.action == "fresh"
        assert requests(responder, leaf) == 2
        assert r.due(leaf) == renew_at(newer.this_update, newer.next_update, r.clock.now(), r.policy, 0.5)

    def test_revoked_and_unknown_are_answers_scheduled_like_good(self, rig, pki, responder):
        r = rig()
        revoked, unknown = new_leaf(pki), new_leaf(pki)
        responder.script(revoked.serial, Behaviour(cert_status="revoked"))
        responder.script(unknown.serial, Behaviour(cert_status="unknown"))
        r.worker.load([revoked, unknown])
        now = r.clock.now()
        events = by_cert(r.worker.run_due())
        for leaf, status in ((revoked, "revoked"), (unknown, "unknown")):
            event = events[leaf.cert_id]
            assert (event.action, event.level) == ("updated", "warning")
            assert status in event.detail
            staple = r.stapler.cached(leaf)
            assert r.due(leaf) == renew_at(staple.this_update, staple.next_update, now, r.policy, 0.5)
            row = r.state.get(leaf.cert_id)
            assert (row.status, row.failures) == (status, 0)


class TestFailures:
    def test_backoff_doubles_and_resets_after_success(self, rig, pki, responder):
        r = rig()
        base = r.policy.backoff_base
        leaf = new_leaf(pki)
        r.worker.load([leaf])
        r.worker.run_due()  # a day-long staple: its end is far, the backoff may double
        responder.script(leaf.serial, Behaviour(http_status=503))
        due = r.due(leaf)
        for failures, expected in ((1, base), (2, 2 * base), (3, 4 * base)):
            (event,) = r.run_at(due)
            assert (event.action, event.level, event.reason) == ("failed", "warning", "http_status")
            assert "HTTP 503" in event.detail and "the last good staple is served until" in event.detail
            assert r.due(leaf) - due == expected == backoff(failures, r.policy, 0.5)
            assert r.state.get(leaf.cert_id).failures == failures
            due = r.due(leaf)
        responder.script(leaf.serial, None)
        (event,) = r.run_at(due)
        assert event.action == "updated"
        row = r.state.get(leaf.cert_id)
        assert (row.failures, row.last_error, row.last_reason) == (0, None, None)
        # the count starts again from one
        responder.script(leaf.serial, Behaviour(http_status=503))
        due = r.due(leaf)
        (event,) = r.run_at(due)
        assert (event.action, event.level) == ("failed", "warning")  # a good staple is still cached
        assert r.due(leaf) - due == base

    def test_an_outage_across_next_update_leaves_no_hour_of_backoff(self, rig, pki, responder):
        """The responder is down for 100 s across the staple's nextUpdate: the
        retries as the end nears must not leave the certificate an hour of
        backoff; once it is back, the staple is there within a minute."""
        r = rig(policy=FreshnessPolicy(min_delay=5))
        leaf = new_leaf(pki)
        responder.script(leaf.serial, Behaviour(this_update_offset=0, next_update_offset=120))
        r.worker.load([leaf])
        (first,) = r.worker.run_due()
        next_update = first.next_update
        responder.script(leaf.serial, Behaviour(http_status=503))
        down_until = next_update + 50  # down from the renewal point to 50 s past nextUpdate
        due = r.due(leaf)
        while due < down_until:
            (event,) = r.run_at(due)
            assert event.action == "failed"
            due = r.due(leaf)
            assert due - r.clock.now() <= LAPSED_RETRY  # never an hour, whatever the count
        assert r.state.get(leaf.cert_id).failures >= 5  # the retries came quickly near the end
        back = down_until
        ahead = due - time.time()  # the responder signs with the wall clock; ours has moved on
        responder.script(leaf.serial, Behaviour(this_update_offset=ahead, next_update_offset=ahead + 120))
        (event,) = r.run_at(due)
        assert event.action == "updated" and r.clock.now() - back <= 60

    @pytest.mark.parametrize(
        "behaviour", [Behaviour(signer="rogue"), Behaviour(http_status=404)], ids=["rogue-signer", "http-404"]
    )
    def test_a_permanent_failure_waits_the_cap(self, rig, pki, responder, behaviour):
        r = rig()
        leaf = new_leaf(pki)
        responder.script(leaf.serial, behaviour)
        r.worker.load([leaf])
        now = r.clock.now()
        (event,) = r.worker.run_due()
        assert event.action == "failed" and "permanent" in event.detail
        assert r.due(leaf) == now + r.policy.backoff_cap

    def test_no_responder_url_is_permanent(self, rig, pki):
        r = rig()
        leaf = load_leaf(pki.no_aia.cert_path, issuer_path=pki.intermediate.cert_path)
        r.worker.load([leaf])
        now = r.clock.now()
        (event,) = r.worker.run_due()
        assert event.reason == "no_responder_url"
        assert r.due(leaf) == now + r.policy.backoff_cap
        assert r.state.get(leaf.cert_id).responder is None

    def test_the_last_good_staple_is_kept_and_renewed_before_it_expires(self, rig, pki, responder):
        r = rig(policy=FreshnessPolicy(backoff_base=600, backoff_cap=3600))
        leaf = new_leaf(pki)
        responder.script(leaf.serial, Behaviour(next_update_offset=600))
        r.worker.load([leaf])
        r.worker.run_due()
        good = r.stapler.cached(leaf)
        responder.script(leaf.serial, Behaviour(http_status=500))
        due = r.due(leaf)
        (event,) = r.run_at(due)
        assert (event.action, event.level) == ("failed", "warning")
        assert "served until" in event.detail
        # a backoff of 600 s would outlast the staple: halfway to its expiry instead
        assert good.next_update < due + 600
        assert r.due(leaf) == due + (good.next_update - due) / 2
        assert r.stapler.cached(leaf).der == good.der
        lookup = r.stapler.staple(leaf)  # the request path still serves it
        assert (lookup.source, lookup.staple.der) == ("cache", good.der)
        row = r.state.get(leaf.cert_id)
        assert (row.status, row.next_update, row.failures) == ("good", good.next_update, 1)
        # past its expiry nothing usable is left: an error, and the cache is not touched
        (event,) = r.run_at(good.next_update + 1)
        assert (event.action, event.level) == ("failed", "error")
        assert r.stapler.cached(leaf).der == good.der


class TestRobustness:
    def test_an_unexpected_error_is_a_failure_not_a_dead_thread(self, rig, pki, monkeypatch, capsys):
        r = rig()
        leaf = new_leaf(pki)
        r.worker.load([leaf])

        def broken(*args, **kwargs):
            raise ZeroDivisionError("a bug")

        monkeypatch.setattr(r.stapler, "refresh", broken)
        now = r.clock.now()
        (event,) = r.worker.run_due()
        assert (event.action, event.level, event.reason) == ("failed", "error", "internal_error")
        assert "ZeroDivisionError" in event.detail
        assert r.due(leaf) == now + r.policy.backoff_base
        assert "ZeroDivisionError: a bug" in capsys.readouterr().err

    def test_a_broken_observer_does_not_stop_renewals(self, rig, pki, responder):
        r = rig()
        leaves = [new_leaf(pki), new_leaf(pki)]

        def observer(event):
            raise RuntimeError("observer bug")

        r.worker.on_event = observer
        r.worker.load(leaves)
        assert len(r.worker.run_due()) == 2
        assert all(r.state.get(leaf.cert_id).last_success is not None for leaf in leaves)

    def test_events_as_dicts(self, rig, pki):
        r = rig()
        r.worker.load([new_leaf(pki)])
        data = r.worker.run_due()[0].to_dict()
        assert data["when"].endswith("Z") and data["action"] == "updated" and data["reason"] is None


class TestBusy:
    def test_a_stripe_held_elsewhere_is_busy_not_a_failure(self, rig, pki, tmp_path):
        r = rig(lock_timeout=0.05)
        leaf = new_leaf(pki)
        r.worker.load([leaf])
        held, release = threading.Event(), threading.Event()

        def holder():
            with FetchLocks(tmp_path / "locks") as locks, locks.hold(leaf.cert_id):
                held.set()
                release.wait(PATIENCE)

        thread = threading.Thread(target=holder)
        thread.start()
        try:
            assert held.wait(PATIENCE)
            now = r.clock.now()
            (event,) = r.worker.run_due()
        finally:
            release.set()
            thread.join()
        assert (event.action, event.level, event.reason) == ("busy", "info", "lock_timeout")
        assert r.due(leaf) == now + r.policy.min_delay
        assert r.state.get(leaf.cert_id).failures == 0


class TestReload:
    def test_reload_adds_and_removes_and_keeps_the_rest(self, rig, pki, responder):
        r = rig()
        a, b, c = new_leaf(pki), new_leaf(pki), new_leaf(pki)
        r.worker.load([a, b])
        r.worker.run_due()
        due_b = r.due(b)
        r.clock.advance(60)
        r.events.clear()
        assert r.worker.load([b, c]) == (1, 1)
        assert dict(r.worker.schedule()) == {b.cert_id: due_b, c.cert_id: r.clock.now()}
        assert sorted((e.action, e.cert_id) for e in r.events) == sorted([("added", c.cert_id), ("removed", a.cert_id)])
        assert r.state.get(a.cert_id) is None
        assert r.state.get(b.cert_id).last_success is not None
        assert r.worker.load([b, c]) == (0, 0)  # the same set again changes nothing
        (event,) = r.worker.run_due()
        assert event.cert_id == c.cert_id
        assert [requests(responder, leaf) for leaf in (a, b, c)] == [1, 1, 1]

    def test_a_new_responder_is_tried_at_once(self, rig, pki, responder):
        r = rig()
        leaf = new_leaf(pki)
        responder.script(leaf.serial, Behaviour(http_status=404))
        r.worker.load([leaf])
        r.worker.run_due()
        assert r.due(leaf) == r.clock.now() + r.policy.backoff_cap
        moved = replace(leaf, url_override=responder.url.replace("127.0.0.1", "localhost"))
        assert r.worker.load([moved]) == (0, 0)
        assert r.due(leaf) == r.clock.now()
        assert r.state.get(leaf.cert_id).responder == moved.url_override

    def test_a_restart_keeps_failure_counts_and_drops_stale_rows(self, rig, pki, responder, tmp_path):
        first = rig()
        leaf, gone = new_leaf(pki), new_leaf(pki)
        responder.script(leaf.serial, Behaviour(http_status=503))
        first.worker.load([leaf, gone])
        first.worker.run_due()
        first.run_at(first.due(leaf))
        assert first.state.get(leaf.cert_id).failures == 2
        second = rig(state_path=first.state.path)
        second.clock.set(first.clock.now())
        assert second.worker.load([leaf]) == (1, 0)
        assert second.due(leaf) == second.clock.now()  # due at once, whatever the old backoff
        assert second.state.get(gone.cert_id) is None
        now = second.clock.now()
        second.worker.run_due()
        assert second.state.get(leaf.cert_id).failures == 3
        # nothing usable is cached: retried within LAPSED_RETRY, not 4 x backoff_base
        assert second.due(leaf) == now + min(4 * second.policy.backoff_base, LAPSED_RETRY)


def _read_state(path, cert_id, results):
    with StateStore(path) as store:
        row = store.get(cert_id)
        results.put((row.to_dict() if row else None, [h.to_dict() for h in store.history(cert_id)]))


def test_state_rows_are_readable_from_another_process(rig, pki, responder):
    r = rig()
    leaf = new_leaf(pki)
    responder.script(leaf.serial, Behaviour(http_status=503))
    r.worker.load([leaf])
    r.worker.run_due()
    results = SPAWN.Queue()
    reader = SPAWN.Process(target=_read_state, args=(r.state.path, leaf.cert_id, results))
    reader.start()
    row, history = results.get(timeout=PATIENCE)
    reader.join(PATIENCE)
    assert row["failures"] == 1
    assert "HTTP 503" in row["last_error"] and row["last_reason"] == "http_status"
    assert row["next_attempt"] == iso(r.due(leaf))
    assert row["name"] == str(leaf.path) and row["responder"] == responder.url
    assert [h["action"] for h in history] == ["failed"]


# -- the background service, with real threads -----------------------------------


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


# -- the schedule on its own -------------------------------------------------------


class TestSchedule:
    def test_due_order_and_nothing_early(self):
        schedule = Schedule(per_responder=2)
        schedule.add("b", "r1", 20.0)
        schedule.add("a", "r2", 10.0)
        assert schedule.take(9.9) is None
        assert schedule.take(20.0).cert_id == "a"
        assert schedule.take(20.0).cert_id == "b"
        assert schedule.take(20.0) is None

    def test_a_full_responder_parks_its_jobs_and_others_go_on(self):
        schedule = Schedule(per_responder=2)
        for n in range(4):
            schedule.add(f"slow{n}", "slow", float(n))
        schedule.add("fast", "fast", 10.0)
        first, second = schedule.take(10.0), schedule.take(10.0)
        assert (first.cert_id, second.cert_id) == ("slow0", "slow1")
        assert schedule.take(10.0).cert_id == "fast"  # past the two parked ones
        assert schedule.take(10.0) is None
        assert schedule.in_flight("slow") == 2
        assert schedule.next_wakeup() is None and schedule.next_due() == 2.0
        assert schedule.done(first, 100.0)
        assert schedule.take(10.0).cert_id == "slow2"  # a slot freed: the earliest parked
        assert schedule.take(10.0) is None

    def test_a_certificate_runs_once_at_a_time_and_wakes_the_next_of_its_responder(self):
        schedule = Schedule(per_responder=1)
        schedule.add("a", "r", 0.0)
        schedule.add("b", "r", 1.0)
        schedule.add("c", "q", 2.0)
        a = schedule.take(5.0)
        assert a.cert_id == "a"
        assert schedule.take(5.0).cert_id == "c"  # past b, parked behind r
        assert schedule.take(5.0) is None  # a is running: not taken again, whatever is due
        schedule.done(a, 3.0)
        assert schedule.take(5.0).cert_id == "b"  # woken first, before a's new due time
        assert schedule.take(5.0) is None
        assert schedule.next_due() == 3.0

    def test_removed_jobs_vanish_even_when_parked_or_running(self):
        schedule = Schedule(per_responder=1)
        schedule.add("a", "r", 0.0)
        schedule.add("b", "r", 0.0)
        running = schedule.take(0.0)
        assert schedule.take(0.0) is None  # b parked
        schedule.remove("b")
        schedule.remove(running.cert_id)
        assert schedule.done(running, 50.0) is False
        assert schedule.take(100.0) is None and len(schedule) == 0 and schedule.in_flight("r") == 0

    def test_move_requeues_a_parked_job_on_its_new_responder(self):
        schedule = Schedule(per_responder=1)
        schedule.add("a", "r1", 0.0)
        schedule.add("b", "r1", 0.0)
        schedule.take(0.0)
        assert schedule.take(0.0) is None
        schedule.move("b", "r2", 5.0)
        assert schedule.take(5.0).cert_id == "b"

    def test_many_removals_compact_the_heap(self):
        schedule = Schedule(per_responder=2)
        for n in range(5000):
            schedule.add(str(n), "r", float(n))
        for n in range(4990):
            schedule.remove(str(n))
        assert len(schedule._heap) < 5000
        assert [schedule.take(1e9).cert_id for _ in range(2)] == ["4990", "4991"]

    def test_responder_key_is_the_origin(self):
        assert responder_key("http://OCSP.example.test/ca1") == responder_key("http://ocsp.example.test:80/ca2")
        assert responder_key("https://ocsp.example.test/") != responder_key("http://ocsp.example.test/")
        assert responder_key(None) == ""

    def test_plans_never_come_sooner_than_min_retry(self):
        policy = FreshnessPolicy(min_delay=0)
        assert after_answer(0.0, 10.0, 9.999, policy, 0.0) == 9.999 + MIN_RETRY
        assert after_failure(1, True, 100.5, 100.0, policy, 0.5) == 100.0 + MIN_RETRY

    def test_failure_plans(self):
        policy = DEFAULT_POLICY
        assert after_failure(3, True, 1e9, 0.0, policy, 0.5) == 4 * policy.backoff_base
        # nothing usable left: a temporary failure is tried again within LAPSED_RETRY
        assert after_failure(3, True, None, 0.0, policy, 0.5) == LAPSED_RETRY
        slow = replace(policy, backoff_base=300.0)
        assert after_failure(1, True, None, 0.0, slow, 0.5) == 300.0  # never sooner than its base
        assert after_failure(1, False, None, 0.0, policy, 0.5) == policy.backoff_cap
        expires = expires_at(0.0, 100.0, policy)
        assert after_failure(1, True, expires, 60.0, policy, 0.5) == 60.0 + (100.0 - 60.0) / 2
        assert after_failure(1, True, 1e6, 20.0, policy, 0.5) == 20.0 + policy.backoff_base


def test_the_worker_modules_import_no_front_end():
    program = (
        "import sys, engine.refresh.prefetch, engine.refresh.schedule, engine.ocsp.certfiles, engine.refresh.worker_state\n"
        "print(sorted({'staplectl', 'typer', 'rich', 'textual'} & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class TestAudit:
    """What the worker did not do itself: a flushed cache, a shorter-lived staple."""

    def test_a_staple_gone_from_the_cache_is_fetched_at_once(self, rig, pki, responder):
        r = rig()
        leaf = new_leaf(pki)
        r.worker.load([leaf])
        r.worker.run_due()
        assert r.due(leaf) > r.clock.now() + 3600  # planned hours ahead
        r.stapler.cache.delete(leaf.cert_id)  # memcached restarted, say
        assert r.worker.audit() == 1
        assert r.due(leaf) == r.clock.now()
        (event,) = r.worker.run_due()
        assert event.action == "updated" and requests(responder, leaf) == 2

    def test_a_shorter_lived_staple_stored_elsewhere_is_renewed_before_it_lapses(self, rig, pki, responder):
        r = rig()
        leaf = new_leaf(pki)
        r.worker.load([leaf])
        r.worker.run_due()
        responder.script(leaf.serial, Behaviour(this_update_offset=0, next_update_offset=600))
        assert r.stapler.refresh(leaf, force=True).action == "updated"  # `warm --force` elsewhere
        short = r.stapler.cached(leaf)
        assert r.worker.audit() == 1
        assert r.clock.now() < r.due(leaf) < short.next_update
        (event,) = r.run_at(r.due(leaf))
        assert event.action == "updated"  # replaced, not called fresh

    def test_a_well_planned_certificate_is_left_alone_pass_after_pass(self, rig, pki):
        r = rig(rand=0.9)  # jitter that would creep the due time earlier if recomputed
        leaf = new_leaf(pki)
        r.worker.load([leaf])
        r.worker.run_due()
        due = r.due(leaf)
        assert [r.worker.audit() for _ in range(3)] == [0, 0, 0]
        assert r.due(leaf) == due

    def test_a_failing_certificate_keeps_its_backoff(self, rig, pki, responder):
        r = rig()
        leaf = new_leaf(pki)
        responder.script(leaf.serial, Behaviour(http_status=500))
        r.worker.load([leaf])
        r.worker.run_due()
        due = r.due(leaf)
        assert due > r.clock.now()
        assert r.worker.audit() == 0  # nothing cached, but no fetch per pass
        assert r.due(leaf) == due
