"""The worker's first look at new certificates (engine.refresh.survey):
a fresh cached staple is known at load, with no job, no fetch lock and no
request; anything else is due now and its job runs as before."""

from __future__ import annotations

import threading

from engine.refresh.freshness import renew_at
from engine.refresh.survey import BATCH, cached_staples
from tests import prefetch_rig
from tests.prefetch_rig import new_leaf, requests
from tests.responder import Behaviour

rig = prefetch_rig.rig


def fetched(r, leaves):
    for leaf in leaves:
        assert r.stapler.refresh(leaf).action == "updated"  # `warm` before the service starts, say
    return {leaf.cert_id: r.stapler.cached(leaf) for leaf in leaves}


def test_a_fresh_cached_staple_is_known_at_load_without_a_job(rig, pki, responder):
    r = rig(lock_timeout=0.05)
    leaves = [new_leaf(pki) for _ in range(3)]
    staples = fetched(r, leaves)
    now = r.clock.now()
    assert r.worker.load(leaves) == (3, 0)
    for leaf in leaves:
        staple = staples[leaf.cert_id]
        planned = renew_at(staple.this_update, staple.next_update, now, r.policy, 0.5)
        assert r.due(leaf) == planned > now
        row = r.state.get(leaf.cert_id)
        assert (row.status, row.this_update, row.last_success, row.next_attempt) == ("good", staple.this_update, now, planned)
        assert [h.action for h in r.state.history(leaf.cert_id)] == ["fresh"]
        assert [e.action for e in r.events if e.cert_id == leaf.cert_id] == ["added", "fresh"]
    fresh = [e for e in r.events if e.action == "fresh"]
    assert {e.level for e in fresh} == {"info"} and all("renew at" in e.detail for e in fresh)
    # nothing is due: held fetch locks do not matter, and nobody is asked
    held, release = threading.Event(), threading.Event()

    def hold():
        with r.stapler.locks.hold(leaves[0].cert_id):
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        assert r.worker.run_due() == []
    finally:
        release.set()
        holder.join()
    assert all(requests(responder, leaf) == 1 for leaf in leaves)
    # and at its planned time the renewal runs as a job
    (event,) = [e for e in r.run_at(r.due(leaves[0])) if e.cert_id == leaves[0].cert_id]
    assert event.action == "updated" and requests(responder, leaves[0]) == 2


def test_what_is_missing_invalid_or_due_is_due_now_and_its_job_fetches(rig, pki, responder):
    r = rig()
    missing, planted, due, fresh = (new_leaf(pki) for _ in range(4))
    # `due`'s staple has an hour of its three days left: past its renewal point
    responder.script(due.serial, Behaviour(this_update_offset=-3 * 86400, next_update_offset=3600))
    staples = fetched(r, [due, fresh])
    assert r.stapler.due(staples[due.cert_id], r.clock.now())
    # a genuine response, for another certificate, stored under this one's key
    r.stapler.cache.set(planted.cert_id, staples[fresh.cert_id].der, 3600)
    now = r.clock.now()
    r.worker.load([missing, planted, due, fresh])
    assert {leaf.cert_id for leaf in (missing, planted, due) if r.due(leaf) == now} == {
        missing.cert_id, planted.cert_id, due.cert_id}
    assert r.due(fresh) > now
    assert [h.action for h in r.state.history(planted.cert_id)] == []
    events = r.worker.run_due()
    assert sorted(e.cert_id for e in events if e.action == "updated") == sorted(
        leaf.cert_id for leaf in (missing, planted, due))


def test_a_revoked_staple_found_fresh_is_a_warning(rig, pki, responder):
    r = rig()
    leaf = new_leaf(pki)
    responder.script(leaf.serial, Behaviour(cert_status="revoked"))
    fetched(r, [leaf])
    r.worker.load([leaf])
    (event,) = [e for e in r.events if e.action == "fresh"]
    assert (event.level, event.status) == ("warning", "revoked")
    assert r.state.get(leaf.cert_id).status == "revoked"


def test_a_reload_looks_only_at_the_new_certificates(rig, pki, responder):
    r = rig()
    first, second = new_leaf(pki), new_leaf(pki)
    r.worker.load([first])
    r.worker.run_due()  # fetched: its plan is the job's
    planned = r.due(first)
    fetched(r, [second])
    r.events.clear()
    assert r.worker.load([first, second]) == (1, 0)
    assert r.due(first) == planned
    assert [(e.cert_id, e.action) for e in r.events] == [(second.cert_id, "added"), (second.cert_id, "fresh")]


def test_batches_are_read_and_validated_on_several_threads(rig, pki):
    r = rig()
    leaves = [new_leaf(pki) for _ in range(3)]
    staples = fetched(r, leaves[:2])
    seen = set()
    real = r.stapler.cached_many
    both = threading.Barrier(2, timeout=10)  # broken unless two batches are in flight at once

    def spy(batch, **kwargs):
        seen.add(threading.current_thread().name)
        both.wait()
        return real(batch, **kwargs)

    r.stapler.cached_many = spy
    many = leaves * (BATCH // 3 + 1)  # two batches: the same leaves again
    found = cached_staples(r.stapler, many, threads=2)
    assert {cert_id: s and s.der for cert_id, s in found.items()} == {
        leaves[0].cert_id: staples[leaves[0].cert_id].der, leaves[1].cert_id: staples[leaves[1].cert_id].der,
        leaves[2].cert_id: None}
    assert len(seen) == 2 and all(name.startswith("survey") for name in seen)


def test_new_certificates_are_taken_on_in_batches_and_none_is_left_out(rig, pki, monkeypatch):
    import engine.refresh.prefetch as prefetch

    monkeypatch.setattr(prefetch, "LOAD_BATCH", 2)
    r = rig()
    leaves = [new_leaf(pki) for _ in range(5)]
    staples = fetched(r, leaves[::2])  # 0, 2 and 4 have a fresh staple; 1 and 3 none
    now = r.clock.now()
    assert r.worker.load(leaves) == (5, 0)
    for n, leaf in enumerate(leaves):
        fresh = staples.get(leaf.cert_id)
        expected = renew_at(fresh.this_update, fresh.next_update, now, r.policy, 0.5) if fresh else now
        assert r.due(leaf) == expected, n
        assert r.state.get(leaf.cert_id).next_attempt == expected
        assert [h.action for h in r.state.history(leaf.cert_id)] == (["fresh"] if fresh else [])
    # taken on in cert_id order, each batch's events together
    assert [e.cert_id for e in r.events if e.action == "added"] == sorted(leaf.cert_id for leaf in leaves)
    assert r.state.issued().keys() == {leaf.cert_id for leaf in leaves}


def test_a_restart_finding_the_staple_it_knew_writes_no_history_row(rig, pki, tmp_path):
    """A crash loop's starts would otherwise each write a "fresh" row per
    certificate, and push out (20 are kept) the rows that say why it failed."""
    from dataclasses import replace

    state_path = tmp_path / "state" / "history.db"
    first = rig(state_path=state_path)
    leaves = [new_leaf(pki) for _ in range(2)]
    fetched(first, leaves)
    first.worker.load(leaves)
    for leaf in leaves:
        assert [h.action for h in first.state.history(leaf.cert_id)] == ["fresh"]
    # the previous run knew an older staple of the first certificate
    known = first.state.get(leaves[0].cert_id)
    first.state.put(replace(known, this_update=known.this_update - 3600))
    first.close()
    again = rig(state_path=state_path)
    again.clock.advance(60)
    assert again.worker.load(leaves) == (2, 0)
    assert [h.action for h in again.state.history(leaves[0].cert_id)] == ["fresh", "fresh"]  # news
    assert [h.action for h in again.state.history(leaves[1].cert_id)] == ["fresh"]  # nothing new
    # the log says what the first look found all the same
    assert sorted(e.cert_id for e in again.events if e.action == "fresh") == sorted(leaf.cert_id for leaf in leaves)
