"""The request path and refreshes under the fetch locks (docs/design.md, "The request path")."""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from pathlib import Path

from cryptography.x509 import ocsp

from engine.store.cache import Cache
from engine.ocsp.certs import load_leaf
from engine.refresh.fetch import FetchOptions, store
from engine.locks.fetchlocks import FetchLocks
from engine.store.providers import open_provider
from engine.ocsp.request import build_request
from engine.ocsp.staple import Staple
from engine.refresh.stapler import Stapler, StaplerOptions
from engine.responders.transport import TransportOptions, post
from tests.loopback import LOOPBACK, TRANSPORT
from tests.responder import Behaviour

#: renewal point already passed, still valid for 10 minutes
DUE = Behaviour(this_update_offset=-3000, next_update_offset=600)


def make_stapler(tmp_path: Path, *, cache_uri: str | None = None, stripes: int = 64, locks_dir: str = "locks", **options) -> Stapler:
    cache = Cache(open_provider(cache_uri or f"local:{tmp_path / 'staples.db'}"))
    fetch_options = FetchOptions(transport=TransportOptions(timeout=options.pop("timeout", 10.0), allow=LOOPBACK))
    return Stapler(cache, FetchLocks(tmp_path / locks_dir, stripes), fetch_options=fetch_options, options=StaplerOptions(**options))


def in_threads(count: int, target) -> list:
    results: list = [None] * count
    barrier = threading.Barrier(count)

    def run(i):
        barrier.wait()
        results[i] = target()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


class TestOneResponderRequest:
    def test_many_threads_cause_exactly_one_request(self, tmp_path, pki, responder):
        responder.script(pki.good, Behaviour(delay=0.3))
        stapler = make_stapler(tmp_path)
        leaf = load_leaf(pki.good.chain_path)
        results = in_threads(16, lambda: stapler.staple(leaf))
        assert responder.requests_for(pki.good) == 1
        assert all(r.staple and r.staple.status == "good" for r in results)
        assert sorted({r.source for r in results}) == ["cache", "fetched"]
        stats = stapler.locks.stats()[stapler.locks.stripe_of(leaf.cert_id)]
        assert stats.contended >= 1  # the others waited on the stripe, then looked again

    def test_several_processes_and_threads_cause_exactly_one_request(self, tmp_path, pki, responder):
        responder.script(pki.good, Behaviour(delay=0.3))
        context = multiprocessing.get_context("fork")
        barrier = context.Barrier(4)
        queue = context.Queue()
        procs = [
            context.Process(target=_child_lookups, args=(tmp_path, str(pki.good.chain_path), barrier, queue))
            for _ in range(4)
        ]
        for proc in procs:
            proc.start()
        outcomes = [queue.get(timeout=30) for _ in range(4 * 4)]
        for proc in procs:
            proc.join(10)
        assert responder.requests_for(pki.good) == 1
        assert all(status == "good" for status, _ in outcomes)
        assert [source for _, source in outcomes].count("fetched") == 1


def _child_lookups(tmp_path, chain_path, barrier, queue):
    stapler = make_stapler(tmp_path)
    leaf = load_leaf(Path(chain_path))
    barrier.wait()
    for result in in_threads(4, lambda: stapler.staple(leaf)):
        queue.put((result.staple.status if result.staple else None, result.source))


class TestStallIsolation:
    def test_hanging_responder_never_delays_cached_lookups_or_other_stripes(self, tmp_path, pki, responder):
        stapler = make_stapler(tmp_path, request_budget=30, timeout=30)
        hanging = load_leaf(pki.good.chain_path)
        cached = load_leaf(pki.other.chain_path)
        assert stapler.staple(cached).source == "fetched"
        # a third certificate, on another stripe than the hanging one
        fresh = load_leaf(pki.leaf("isolated").chain_path)
        while stapler.locks.stripe_of(fresh.cert_id) == stapler.locks.stripe_of(hanging.cert_id):
            fresh = load_leaf(pki.leaf(f"isolated{len(pki.leaves)}").chain_path)
        responder.script(pki.good, Behaviour(hang=True))

        done = threading.Event()
        stuck = threading.Thread(target=lambda: (stapler.staple(hanging), done.set()), daemon=True)
        stuck.start()
        _wait_for(lambda: responder.requests_for(pki.good) == 1)

        for _ in range(200):
            assert stapler.staple(cached).source == "cache"
        other = stapler.staple(fresh)
        assert other.source == "fetched" and other.staple.status == "good"
        # all of that happened while the hanging fetch was still held up
        assert not done.is_set()
        holder = stapler.locks.stats()[stapler.locks.stripe_of(hanging.cert_id)]
        assert holder.holder_cert_id == hanging.cert_id

    def test_the_same_certificate_waits_at_most_the_request_budget(self, tmp_path, pki, responder):
        stapler = make_stapler(tmp_path, stripes=1, request_budget=0.3, timeout=30)
        hanging = load_leaf(pki.good.chain_path)
        responder.script(pki.good, Behaviour(hang=True))
        slow = make_stapler(tmp_path, stripes=1, request_budget=30, timeout=30)
        threading.Thread(target=lambda: slow.staple(hanging), daemon=True).start()
        _wait_for(lambda: responder.requests_for(pki.good) == 1)
        result = stapler.staple(hanging)
        assert result.staple is None and result.source == "none"
        assert result.error is not None and result.error.reason == "lock_timeout"
        assert responder.requests_for(pki.good) == 1

    def test_another_certificate_never_waits_for_a_hanging_one(self, tmp_path, pki, responder):
        # One stripe for all: striped locks made these two wait on each other.
        stapler = make_stapler(tmp_path, stripes=1, request_budget=2, timeout=30)
        hanging = load_leaf(pki.good.chain_path)
        neighbour = load_leaf(pki.other.chain_path)
        responder.script(pki.good, Behaviour(hang=True))
        slow = make_stapler(tmp_path, stripes=1, request_budget=30, timeout=30)
        threading.Thread(target=lambda: slow.staple(hanging), daemon=True).start()
        _wait_for(lambda: responder.requests_for(pki.good) == 1)
        result = stapler.staple(neighbour)
        assert result.source == "fetched" and result.staple is not None, result.error
        assert [s.holder_cert_id for s in stapler.locks.stats()] == [hanging.cert_id]  # still out

    def test_hanging_responder_bounded_by_the_budget(self, tmp_path, pki, responder):
        # A responder timeout of 30 s: only the budget can end the fetch in 0.4.
        stapler = make_stapler(tmp_path, request_budget=0.4, timeout=30)
        responder.script(pki.good, Behaviour(hang=True))
        result = stapler.staple(load_leaf(pki.good.chain_path))
        assert result.staple is None
        assert result.error.reason == "timeout"
        # the fetch was given what was left of the budget, not the responder timeout
        within = float(str(result.error).split("within ", 1)[1].split(" s", 1)[0])
        assert 0 < within <= 0.4


def _wait_for(condition, timeout=10.0):
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        event.wait(0.01)
    raise AssertionError("condition not reached")


class TestPrefetchSetting:
    def test_prefetch_on_serves_a_due_staple_at_once(self, tmp_path, pki, responder):
        stapler = make_stapler(tmp_path, prefetch=True)
        leaf = load_leaf(pki.good.chain_path)
        responder.script(pki.good, DUE)
        assert stapler.staple(leaf).source == "fetched"
        assert stapler.staple(leaf).source == "cache"
        assert responder.requests_for(pki.good) == 1  # refresh left to the worker

    def test_prefetch_off_refreshes_a_due_staple_on_the_request_path(self, tmp_path, pki, responder):
        stapler = make_stapler(tmp_path, prefetch=False)
        leaf = load_leaf(pki.good.chain_path)
        responder.script(pki.good, DUE)
        first = stapler.staple(leaf)
        responder.script(pki.good, None)
        second = stapler.staple(leaf)
        assert second.source == "fetched"
        assert second.staple.this_update > first.staple.this_update
        assert responder.requests_for(pki.good) == 2

    def test_failed_refresh_keeps_serving_the_valid_staple(self, tmp_path, pki, responder):
        stapler = make_stapler(tmp_path, prefetch=False)
        leaf = load_leaf(pki.good.chain_path)
        responder.script(pki.good, DUE)
        first = stapler.staple(leaf)
        responder.script(pki.good, Behaviour(http_status=500))
        second = stapler.staple(leaf)
        assert second.source == "stale"
        assert second.staple.der == first.staple.der
        assert second.error.reason == "http_status"
        assert stapler.cached(leaf).der == first.staple.der  # nothing replaced it


class TestWhatIsServed:
    def test_forged_entry_in_the_cache_is_not_served(self, tmp_path, pki, responder):
        stapler = make_stapler(tmp_path)
        leaf = load_leaf(pki.good.chain_path)
        responder.script(pki.good, Behaviour(signer="rogue"))
        der = post(responder.url, build_request(leaf).der, TRANSPORT)
        response = ocsp.load_der_ocsp_response(der)
        forged = Staple.from_single(der, response, next(response.responses))
        store(stapler.cache, leaf, forged, forged.this_update + 1)
        assert stapler.cached(leaf) is None
        responder.script(pki.good, None)
        result = stapler.staple(leaf)
        assert result.source == "fetched"  # replaced by a genuine one
        assert stapler.cached(leaf).der != der

    def test_an_entry_whose_signature_does_not_verify_is_not_served(self, tmp_path, pki, responder):
        # The issuer's own response, one bit of its signature flipped: only
        # the signature check on the read can refuse it.
        stapler = make_stapler(tmp_path, request_budget=0.3)
        leaf = load_leaf(pki.good.chain_path)
        responder.script(pki.good, Behaviour(corrupt_signature=True))
        bad = post(responder.url, build_request(leaf).der, TRANSPORT)
        stapler.cache.set(leaf.cert_id, bad, 3600)  # planted, as anyone who can write a shared cache could
        responder.script(pki.good, Behaviour(hang=True))
        result = stapler.staple(leaf)
        assert result.staple is None and result.source == "none"
        assert stapler.cached(leaf) is None

    def test_httpd_error_entry_is_not_served(self, tmp_path, pki, responder):
        stapler = make_stapler(tmp_path)
        leaf = load_leaf(pki.good.chain_path)
        good = stapler.staple(leaf).staple
        stapler.cache.set(leaf.cert_id, good.der, 3600, flag=0x00)
        assert stapler.cached(leaf) is None


class TestLease:
    def test_two_engines_sharing_memcached_refresh_once(self, tmp_path, pki, responder, memcached):
        uri = f"memcache://{memcached.host}:{memcached.port}"
        leaf = load_leaf(pki.leaf("leased").chain_path)
        # two hosts: separate lock directories, so only the lease can keep them apart
        first = make_stapler(tmp_path, cache_uri=uri, locks_dir="host-a", lease=True)
        second = make_stapler(tmp_path, cache_uri=uri, locks_dir="host-b", lease=True)
        responder.script(pki.leaves["leased"], Behaviour(delay=0.3))
        barrier = threading.Barrier(2)
        outcomes = {}

        def run(name, stapler):
            barrier.wait()
            outcomes[name] = stapler.refresh(leaf)

        threads = [threading.Thread(target=run, args=(n, s)) for n, s in (("a", first), ("b", second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert responder.requests_for(pki.leaves["leased"]) == 1
        assert sorted(o.action for o in outcomes.values()) == ["leased", "updated"]
        assert outcomes["a"].staple.der == outcomes["b"].staple.der

    def test_without_lease_both_refresh(self, tmp_path, pki, responder, memcached):
        uri = f"memcache://{memcached.host}:{memcached.port}"
        leaf = load_leaf(pki.leaf("unleased").chain_path)
        first = make_stapler(tmp_path, cache_uri=uri, locks_dir="host-a")
        second = make_stapler(tmp_path, cache_uri=uri, locks_dir="host-b")
        responder.script(pki.leaves["unleased"], Behaviour(delay=0.3))
        staplers = iter([first, second])
        lock = threading.Lock()

        def refresh():
            with lock:
                stapler = next(staplers)
            return stapler.refresh(leaf).action

        assert in_threads(2, refresh) == ["updated", "updated"]
        assert responder.requests_for(pki.leaves["unleased"]) == 2


def test_the_memo_keeps_one_staple_per_certificate_however_often_it_is_renewed(tmp_path, pki, responder):
    """A service renewing for days must not remember every staple it ever saw."""
    stapler = make_stapler(tmp_path)
    leaves = [load_leaf(pki.leaf(f"memo-{n}").chain_path) for n in range(3)]
    for _ in range(4):
        for leaf in leaves:
            stapler.refresh(leaf, force=True)
            digest, _, remembered = stapler._memo[leaf.cert_id]
            assert hashlib.sha256(stapler.cached(leaf).der).digest() == digest
            assert remembered.der == b""  # the bytes are the store's, not kept twice
    assert len(stapler._memo) == 3
