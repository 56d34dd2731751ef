"""The prefetch worker against the scripted responder and a real local store.

Scheduling is tested with a FrozenClock and run_due(): nothing sleeps to let
time pass. The worker as a background service, with real threads, is tested
in tests/test_prefetch_service.py, its schedule on its own in
tests/test_schedule.py; the rig both worker files drive is in
tests/prefetch_rig.py.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import time

import pytest

from engine.ocsp.certs import load_leaf
from engine.clock import iso
from engine.locks.fetchlocks import FetchLocks
from engine.refresh.freshness import UNKNOWN_RECHECK, FreshnessPolicy, backoff, renew_at
from engine.refresh.schedule import LAPSED_RETRY
from engine.refresh.worker_state import StateStore
from tests import prefetch_rig
from tests.prefetch_rig import PATIENCE, by_cert, new_leaf, requests
from tests.responder import Behaviour

#: the fixture, by name in this module, where pytest looks for it
rig = prefetch_rig.rig
SPAWN = multiprocessing.get_context("spawn")


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

    def test_revoked_and_unknown_are_answers_revoked_scheduled_like_good_unknown_asked_again_soon(
        self, rig, pki, responder
    ):
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
            on_time = renew_at(staple.this_update, staple.next_update, now, r.policy, 0.5)
            # unknown is the responder's "not yet": asked again within UNKNOWN_RECHECK
            assert r.due(leaf) == (on_time if status == "revoked" else min(on_time, now + UNKNOWN_RECHECK))
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

    def test_a_certificate_without_ocsp_is_said_once_and_never_scheduled(self, rig, pki, responder):
        """No OCSP URL (Let's Encrypt's since 2025): nothing to fetch, not a failure;
        it stays out of the schedule instead of failing every backoff_cap."""
        r = rig()
        no_ocsp = load_leaf(pki.no_aia.cert_path, issuer_path=pki.intermediate.cert_path)
        other = new_leaf(pki)
        r.worker.load([no_ocsp, other])
        [said] = [e for e in r.events if e.cert_id == no_ocsp.cert_id]
        assert (said.action, said.level) == ("no_ocsp", "info") and "names no OCSP responder" in said.detail
        assert [cert_id for cert_id, _ in r.worker.schedule()] == [other.cert_id]
        assert r.state.get(no_ocsp.cert_id) is None and set(r.worker.without_ocsp) == {no_ocsp.cert_id}
        r.events.clear()
        r.worker.load([no_ocsp, other])  # a reload says nothing new
        assert r.events == []
        events = r.worker.run_due()
        assert [e.cert_id for e in events] == [other.cert_id]
        # given a url, it is scheduled like any other
        with_url = load_leaf(pki.no_aia.cert_path, issuer_path=pki.intermediate.cert_path, url_override=responder.url)
        r.worker.load([with_url, other])
        assert with_url.cert_id in {cert_id for cert_id, _ in r.worker.schedule()} and not r.worker.without_ocsp

    def test_a_must_staple_certificate_without_ocsp_is_an_error(self, rig, pki):
        r = rig()
        issued = pki.leaf("must-staple-no-ocsp", must_staple=True, aia=False)
        leaf = load_leaf(issued.cert_path, issuer_path=pki.intermediate.cert_path)
        r.worker.load([leaf])
        [said] = r.events
        assert (said.action, said.level, said.reason) == ("no_ocsp", "error", "must_staple_without_ocsp")
        assert "no server can staple it" in said.detail
        assert r.worker.schedule() == []

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
        assert data["when"].endswith("Z") and data["event"] == "updated" and data["reason"] is None


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
        moved = leaf.replace(url_override=responder.url.replace("127.0.0.1", "localhost"))
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
    assert [h["event"] for h in history] == ["failed"]


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
