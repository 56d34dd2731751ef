"""engine.refresh.fanout: warm's refreshes, many in flight from one thread.

Against the in-process responder (real signatures), the local store and
real stripes: each refresh must come to what Stapler.refresh would have,
and the odd cases (a stripe held elsewhere, https, a host name to look
up, a lease another instance holds) must go their own way and still end.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from engine.refresh import fanout as fanout_module
from engine.ocsp.certs import Leaf, load_leaf
from engine.errors import (
    CacheUnavailableError,
    ResponderTimeoutError,
    ResponderUnreachableError,
    SignatureError,
    StapleError,
    UnexpectedError,
)
from engine.refresh.fanout import Fanout, Result
from engine.locks.fetchlocks import FetchLocks, LockTimeoutError
from engine.store.providers.local import LocalProvider
from engine.refresh.stapler import Refresh, Stapler
from tests.responder import Behaviour, ScriptedResponder
from tests.servers import free_port
from tests.test_stapler import DUE, make_stapler


def leaves_of(pki, count: int, prefix: str, url: str | None = None) -> list[Leaf]:
    names = [f"{prefix}{n}" for n in range(count)]
    for name in names:
        if name not in pki.leaves:
            pki.leaf(name)
    return [load_leaf(pki.leaves[name].chain_path, url_override=url) for name in names]


def run(stapler: Stapler, leaves: list[Leaf], in_flight: int = 8, **options) -> list[Result]:
    results: list[Result | None] = [None] * len(leaves)
    calls = []

    def done(index: int, result: Result) -> None:
        assert threading.current_thread() is threading.main_thread()  # on the caller's thread
        calls.append(index)
        results[index] = result

    Fanout(stapler, in_flight, **options).run(leaves, done)
    assert sorted(calls) == list(range(len(leaves)))  # each exactly once
    return results  # type: ignore[return-value]


def test_every_certificate_is_fetched_validated_and_stored(tmp_path, pki, responder):
    leaves = leaves_of(pki, 30, "fan")
    stapler = make_stapler(tmp_path)
    results = run(stapler, leaves)
    assert all(isinstance(r, Refresh) and r.action == "updated" and r.staple.good for r in results)
    assert all(r.ttl > 0 for r in results)
    cached = stapler.cached_many(leaves)
    assert all(cached[leaf.cert_id] == result.staple for leaf, result in zip(leaves, results))
    assert responder.request_count == 30
    # every stripe let go: another holder gets each at once
    for leaf in leaves:
        with stapler.locks.hold(leaf.cert_id, timeout=0):
            pass


def test_fresh_staples_are_left_alone_unless_forced(tmp_path, pki, responder):
    leaves = leaves_of(pki, 10, "fan")
    stapler = make_stapler(tmp_path)
    run(stapler, leaves)
    responder.reset_counts()
    again = run(stapler, leaves)
    assert [r.action for r in again] == ["fresh"] * 10
    assert responder.request_count == 0
    forced = run(stapler, leaves, force=True)
    assert [r.action for r in forced] == ["updated"] * 10
    assert responder.request_count == 10


def test_a_due_staple_is_renewed(tmp_path, pki, responder):
    [leaf] = leaves_of(pki, 1, "fan")
    stapler = make_stapler(tmp_path)
    responder.script(pki.leaves["fan0"], DUE)
    [first] = run(stapler, [leaf])
    responder.script(pki.leaves["fan0"], None)
    [second] = run(stapler, [leaf])
    assert second.action == "updated" and second.previous == first.staple
    assert second.staple.this_update > first.staple.this_update


def test_an_invalid_answer_fails_that_certificate_and_keeps_the_cached_staple(tmp_path, pki, responder):
    leaves = leaves_of(pki, 3, "fan")
    stapler = make_stapler(tmp_path)
    before = run(stapler, leaves)
    responder.script(pki.leaves["fan1"], Behaviour(corrupt_signature=True))
    after = run(stapler, leaves, force=True)
    assert isinstance(after[1], SignatureError)
    assert after[0].action == after[2].action == "updated"
    assert stapler.cached(leaves[1]) == before[1].staple  # the failed fetch replaced nothing


def test_staples_are_stored_in_batches_while_exchanges_are_out(tmp_path, pki, responder, monkeypatch):
    # A delay far beyond the test: only the batch size, or the loop having
    # nothing else to do, may trigger a store.
    monkeypatch.setattr(fanout_module, "STORE_BATCH", 3)
    monkeypatch.setattr(fanout_module, "STORE_DELAY", 3600.0)
    hanging = ScriptedResponder(pki)
    hanging.default = Behaviour(delay=30)
    with hanging:
        slow = leaves_of(pki, 1, "hang", url=hanging.url)
        fast = leaves_of(pki, 6, "fan")
        stapler = make_stapler(tmp_path, timeout=1.5, stripes=1024)
        stores: list[tuple[int, float]] = []
        store_fetched_many = stapler.store_fetched_many

        def spy(fetched):
            stores.append((len(fetched), time.monotonic() - started))
            return store_fetched_many(fetched)

        stapler.store_fetched_many = spy  # type: ignore[method-assign]
        started = time.monotonic()
        results = run(stapler, slow + fast, in_flight=7)
    assert isinstance(results[0], ResponderTimeoutError)
    assert all(isinstance(r, Refresh) and r.action == "updated" for r in results[1:])
    assert sum(size for size, _ in stores) == 6
    # while the hanging exchange was out, only whole batches were stored;
    # a remainder (if any) once nothing else was left, after its deadline
    for size, when in stores:
        assert size >= 3 or when >= 1.5, stores
    assert all(stapler.cached(leaf) is not None for leaf in fast)


def test_a_lone_staple_is_stored_at_once_when_nothing_else_is_out(tmp_path, pki, responder, monkeypatch):
    monkeypatch.setattr(fanout_module, "STORE_DELAY", 3600.0)
    leaves = leaves_of(pki, 2, "fan")
    stapler = make_stapler(tmp_path)
    started = time.monotonic()
    results = run(stapler, leaves, in_flight=1)
    assert all(isinstance(r, Refresh) and r.action == "updated" for r in results)
    assert time.monotonic() - started < 30  # not the hour's STORE_DELAY


def test_a_hanging_responder_holds_only_its_share(tmp_path, pki, responder):
    # Two responders: the healthy one's certificates all finish while the
    # hanging one's wait out their deadline, and those fail as timeouts.
    hanging = ScriptedResponder(pki)
    hanging.default = Behaviour(delay=30)
    with hanging:
        slow = leaves_of(pki, 6, "hang", url=hanging.url)
        fast = leaves_of(pki, 24, "fan")
        stapler = make_stapler(tmp_path, timeout=1.5, stripes=1024)  # few shared stripes
        finished: dict[int, float] = {}
        started = time.monotonic()
        results: list[Result | None] = [None] * 30

        def done(index: int, result: Result) -> None:
            finished[index] = time.monotonic() - started
            results[index] = result

        Fanout(stapler, 4).run(slow + fast, done)
    assert all(isinstance(r, ResponderTimeoutError) for r in results[:6])
    assert all(isinstance(r, Refresh) and r.action == "updated" for r in results[6:])
    # While the healthy responder had work, the hanging one had its half of
    # the 4 slots, so the healthy certificates were all done within the
    # first 1.5 s deadline (had the hanging one taken every slot, they would
    # have waited for it). Then a lone responder gets every slot: 4 of its
    # certificates within about the first deadline, its last 2 in a second.
    # (A healthy certificate sharing a stripe with a hanging one waits for
    # it, by design: never two refreshes of one stripe at once.)
    hanging_stripes = {stapler.locks.stripe_of(leaf.cert_id) for leaf in slow}
    free = [i for i, leaf in enumerate(fast, 6) if stapler.locks.stripe_of(leaf.cert_id) not in hanging_stripes]
    assert len(free) >= 18 and max(finished[i] for i in free) < 1.5
    rounds = sorted(finished[i] for i in range(6))
    assert rounds[3] < 2.25 and rounds[4] >= 2.9


def test_a_stripe_held_elsewhere_is_waited_for_in_the_background(tmp_path, pki, responder):
    leaves = leaves_of(pki, 8, "fan")
    stapler = make_stapler(tmp_path)
    # another process's FetchLocks would be the same flock; a second
    # thread here holding the stripe shows the same to the loop
    other = FetchLocks(tmp_path / "locks", 64)
    held = other.hold(leaves[0].cert_id)
    taken, release = threading.Event(), threading.Event()

    def holder() -> None:
        with held:
            taken.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    taken.wait(5)
    timer = threading.Timer(0.5, release.set)
    timer.start()
    try:
        results = run(stapler, leaves, lock_timeout=5)
    finally:
        release.set()
        thread.join()
    assert all(isinstance(r, Refresh) and r.action == "updated" for r in results)
    stats = stapler.locks.stats()[stapler.locks.stripe_of(leaves[0].cert_id)]
    assert stats.contended >= 1 and stats.max_wait >= 0.3


def test_a_stripe_held_too_long_fails_with_the_lock_timeout(tmp_path, pki, responder):
    [leaf, other_leaf] = leaves_of(pki, 2, "fan")
    stapler = make_stapler(tmp_path)
    taken, release = threading.Event(), threading.Event()

    def holder() -> None:
        with stapler.locks.hold(leaf.cert_id):
            taken.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    taken.wait(5)
    try:
        results = run(stapler, [leaf, other_leaf], lock_timeout=0.3)
    finally:
        release.set()
        thread.join()
    assert isinstance(results[0], LockTimeoutError)
    assert isinstance(results[1], Refresh)


def test_a_host_name_is_looked_up_once_and_used(tmp_path, pki, responder, monkeypatch):
    url = f"http://localhost:{responder.port}/"
    leaves = leaves_of(pki, 6, "fan", url=url)
    stapler = make_stapler(tmp_path)
    lookups: list[str] = []
    real = socket.getaddrinfo

    def counted(host, *args, **kwargs):  # the real lookup, counted
        lookups.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counted)
    results = run(stapler, leaves, in_flight=2)  # three rounds: the later ones must reuse the first lookup
    assert all(isinstance(r, Refresh) and r.action == "updated" for r in results), results
    assert lookups.count("localhost") == 1  # one per responder, not per certificate


def test_https_goes_through_the_blocking_transport(tmp_path, pki, responder):
    closed = f"https://127.0.0.1:{free_port()}/"
    [leaf] = leaves_of(pki, 1, "fan", url=closed)
    [result] = run(make_stapler(tmp_path), [leaf])
    assert isinstance(result, ResponderUnreachableError) and "refused" in str(result)


def test_a_refused_connection_fails_with_the_transports_message(tmp_path, pki, responder):
    [leaf] = leaves_of(pki, 1, "fan", url=f"http://127.0.0.1:{free_port()}/")
    [result] = run(make_stapler(tmp_path), [leaf])
    assert isinstance(result, ResponderUnreachableError) and "connection refused" in str(result)


def test_a_certificate_without_a_responder_fails_alone(tmp_path, pki, responder):
    leaves = [load_leaf(pki.no_aia.chain_path)] + leaves_of(pki, 2, "fan")
    results = run(make_stapler(tmp_path), leaves)
    assert isinstance(results[0], StapleError) and results[0].reason == "no_responder_url"
    assert [r.action for r in results[1:]] == ["updated", "updated"]


class _FailingWrites(LocalProvider):
    """The local store with its disk gone bad: reads work, writes fail."""

    def set_many(self, writes):
        raise CacheUnavailableError(f"local cache {self.path}: set_many failed: disk I/O error")


def test_a_failed_store_fails_the_certificates_it_held(tmp_path, pki, responder):
    from engine.store.cache import Cache

    leaves = leaves_of(pki, 5, "fan")
    stapler = make_stapler(tmp_path)
    stapler.cache = Cache(_FailingWrites(tmp_path / "bad.db"))
    results = run(stapler, leaves)
    assert all(isinstance(r, CacheUnavailableError) for r in results)
    assert stapler.cached_many(leaves) == {leaf.cert_id: None for leaf in leaves}


def test_a_bug_costs_one_certificate(tmp_path, pki, responder, monkeypatch):
    import engine.refresh.fanout

    leaves = leaves_of(pki, 4, "fan")
    real = engine.refresh.fanout.validate_answer

    def validate_answer(body, leaf, *args):  # a bug for one certificate
        if leaf.cert_id == leaves[2].cert_id:
            raise KeyError("boom")
        return real(body, leaf, *args)

    monkeypatch.setattr(engine.refresh.fanout, "validate_answer", validate_answer)
    results = run(make_stapler(tmp_path), leaves)
    assert isinstance(results[2], UnexpectedError) and "KeyError" in str(results[2])
    assert [results[i].action for i in (0, 1, 3)] == ["updated"] * 3


def test_an_exception_out_of_the_loop_lets_every_stripe_go(tmp_path, pki, responder):
    # What Ctrl-C does: the loop ends mid-run; nothing may stay held.
    responder.default = Behaviour(delay=0.5)
    leaves = leaves_of(pki, 10, "fan")
    stapler = make_stapler(tmp_path)

    def done(index: int, result: Result) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Fanout(stapler, 8).run(leaves, done)
    for leaf in leaves:
        with stapler.locks.hold(leaf.cert_id, timeout=0):
            pass


def test_never_more_in_flight_than_asked(tmp_path, pki, responder):
    responder.default = Behaviour(delay=0.2)  # long enough for 4 to overlap
    responder.reset_counts()
    leaves = leaves_of(pki, 12, "fan")
    stapler = make_stapler(tmp_path)
    results = run(stapler, leaves, in_flight=4)
    assert all(isinstance(r, Refresh) for r in results)
    assert responder.request_count == 12 and responder.max_in_flight == 4


def test_a_lease_held_by_another_instance(tmp_path, pki, responder, memcached):
    uri = f"memcache://127.0.0.1:{memcached.port}/?namespace=fan{time.monotonic_ns()}"
    leaves = leaves_of(pki, 2, "fan")
    ours = make_stapler(tmp_path, cache_uri=uri, lease=True, lease_ttl=1)
    theirs = make_stapler(tmp_path / "theirs", cache_uri=uri, lease=True)
    responder.script(pki.leaves["fan1"], DUE)
    assert theirs.cache.add_lease(leaves[0].cert_id, "other-host:1", 30)
    # leaves[0]: the lease is theirs and nothing is cached: wait for their
    # staple (lease_ttl, in the background), then fetch ourselves;
    # leaves[1]: ours to fetch
    results = run(ours, leaves)
    assert [r.action for r in results] == ["updated", "updated"]
    # leaves[1] is now cached, usable and due, and they hold its lease:
    # they renew it, we keep ours as it is and ask no one
    assert theirs.cache.add_lease(leaves[1].cert_id, "other-host:1", 30)
    responder.reset_counts()
    [again] = run(ours, [leaves[1]])
    assert again.action == "leased" and again.staple == results[1].staple
    assert responder.request_count == 0


def test_in_flight_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        Fanout(make_stapler(tmp_path), 0)


def test_run_over_nothing(tmp_path):
    assert run(make_stapler(tmp_path), []) == []


def test_each_certificate_is_held_on_its_own_and_all_are_in_flight_at_once(tmp_path, pki, responder):
    # One stripe for all (the figures' grouping): still a lock per
    # certificate, and 8 exchanges in flight at once, not one after another.
    responder.default = Behaviour(delay=0.3)
    responder.reset_counts()
    leaves = leaves_of(pki, 8, "fan")
    stapler = make_stapler(tmp_path, stripes=1)
    results = run(stapler, leaves, in_flight=8)
    assert responder.max_in_flight == 8  # all at once, not one after another
    assert all(isinstance(r, Refresh) and r.action == "updated" for r in results)
    [stats] = stapler.locks.stats()
    assert stats.acquisitions == 8 and stats.contended == 0
    assert stats.holders == ()  # all let go


def test_a_certificate_held_elsewhere_holds_up_no_other(tmp_path, pki, responder):
    # Another holder (a thread of another FetchLocks on the directory; a
    # prefetch service's process would be the same) keeps one certificate
    # through the whole run: the other 23 of its stripe are renewed while
    # it waits, and it is renewed once let go.
    leaves = leaves_of(pki, 24, "fan")
    stapler = make_stapler(tmp_path, stripes=1)
    other = FetchLocks(tmp_path / "locks", 1)
    holding, let_go = threading.Event(), threading.Event()
    done_while_held: list[int] = []

    def other_holder() -> None:
        with other.hold(leaves[0].cert_id, timeout=10):
            holding.set()
            let_go.wait(30)

    thread = threading.Thread(target=other_holder)
    thread.start()
    assert holding.wait(10)

    def on_done(index: int, result) -> None:
        if not let_go.is_set():
            done_while_held.append(index)
        if len(done_while_held) == 23:
            let_go.set()

    results: dict[int, object] = {}
    Fanout(stapler, 4, lock_timeout=30).run(leaves, lambda i, r: (on_done(i, r), results.__setitem__(i, r)))
    thread.join(10)
    other.close()
    assert sorted(done_while_held) == list(range(1, 24))
    assert all(isinstance(r, Refresh) and r.action == "updated" for r in results.values()), results
    assert len(results) == 24


def test_a_pass_over_fresh_staples_never_waits(tmp_path, pki, responder, monkeypatch):
    # Nothing to fetch: every round's certificates end at once, and the
    # loop must go on to the next round, not sleep on an idle selector
    # (made 60 s here: one such wait would show).
    monkeypatch.setattr(fanout_module, "_IDLE", 60.0)
    leaves = leaves_of(pki, 120, "fresh")
    stapler = make_stapler(tmp_path)
    run(stapler, leaves, in_flight=64)
    started = time.monotonic()
    results = run(stapler, leaves, in_flight=4)  # 30 rounds
    assert [r.action for r in results] == ["fresh"] * 120
    assert time.monotonic() - started < 30
