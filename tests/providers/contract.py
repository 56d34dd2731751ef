"""The contract every cache provider keeps.

One base class of tests, like requests-cache's base_storage_test.py; each
provider's test file subclasses it, supplies the hooks below and adds only
what is special to that provider.

Decisions the contract pins down (engine/store/providers/base.py leaves them open):

- A miss is NO_ENTRY: falsy, and never None.
- ``set(meta=None)`` leaves the stored metadata as it is; ``set(meta=...)``
  replaces it. The prefetch worker stores a new staple without having to
  read the old metadata first.
- ``set_meta`` never touches the staple. With no staple it stores a
  metadata-only entry (``der == b""``).
- The staple and its metadata expire separately, as two keys do in
  memcached: an expired staple with live metadata reads as metadata-only.
- ``ttl <= 0`` stores nothing (memcached would read 0 as "never expires").
- A staple over httpd's 10,240-byte limit raises EntryTooLargeError and
  stores nothing, whatever the store: the limit is httpd's, not the store's.
- ``set`` with an empty DER is a ValueError: use set_meta.
- ``set_many`` stores each write as ``set`` would, and checks them all
  first: a bad write raises with nothing of the batch stored.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
import time
from typing import Any

import pytest

from engine.store.cache import Cache
from engine.errors import EntryTooLargeError
from engine.store.providers import NO_ENTRY, Provider, open_provider
from engine.store.providers.base import StapleWrite
from engine.store.providers.layout import DEFAULT_NAMESPACE, FLAG_ERROR, FLAG_VALID, MAX_VALUE_SIZE, staple_key


def cert_id(name: object) -> str:
    return hashlib.sha1(f"cert-{name}".encode()).hexdigest()


def der_for(tag: str) -> bytes:
    """Stand-in DER (providers never parse it): a tag and bytes derived from
    it, so that a torn or mixed-up write is visible."""
    head = tag.encode()
    return head + b"|" + hashlib.sha256(head).digest() * 16


def der_is_whole(der: bytes) -> bool:
    head, _, body = der.partition(b"|")
    return body == hashlib.sha256(head).digest() * 16


# -- the concurrency test's worker: module level, so that spawn can import it --

PROCESSES = 3
THREADS = 4
ROUNDS = 60
SHARED = [cert_id(f"shared-{n}") for n in range(3)]


def own_id(proc: int, thread: int) -> str:
    return cert_id(f"own-{proc}-{thread}")


def last_round_for(shared_index: int) -> int:
    return max(i for i in range(ROUNDS) if i % len(SHARED) == shared_index)


def hammer(uri: str, proc: int, start: Any, results: Any) -> None:
    """One process: THREADS threads share one Cache, as in the prefetch service.

    Every thread of every process starts at once (the barriers), so that
    the writes overlap instead of running one process after the other.
    """
    cache = Cache(open_provider(uri))
    failures: list[str] = []
    threads_ready = threading.Barrier(THREADS)
    start.wait()

    def work(thread: int) -> None:
        try:
            threads_ready.wait(timeout=30)
            mine = own_id(proc, thread)
            for i in range(ROUNDS):
                tag = f"P{proc}T{thread}I{i}"
                cache.set(mine, der_for(tag), 3600, meta={"tag": tag})
                got = cache.get(mine)
                assert got and got.der == der_for(tag) and got.meta == {"tag": tag}, (tag, got)
                cache.set(SHARED[i % len(SHARED)], der_for(tag), 3600, meta={"tag": tag})
                for entry in cache.get_many(SHARED).values():
                    assert der_is_whole(entry.der), entry
                if i % 20 == 0:
                    for entry in cache.entries():
                        assert der_is_whole(entry.der), entry
        except Exception as exc:  # reported to the parent, which fails the test
            failures.append(f"P{proc}T{thread}: {exc!r}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cache.close()
    results.put(failures)


class ProviderContract:
    #: how far an expires_at may be from now + ttl (memcached keeps whole seconds)
    expiry_slack = 2.0
    #: whether get() reports the expiry (memcached's get does not)
    get_knows_expiry = True
    namespace = DEFAULT_NAMESPACE

    # -- hooks ------------------------------------------------------------------

    @pytest.fixture
    def uri(self) -> str:
        """A URI that opens the same (empty) store as ``provider``, in any process."""
        raise NotImplementedError

    @pytest.fixture
    def provider(self, uri: str) -> Provider:
        raise NotImplementedError

    def now(self) -> float:
        """The time the provider's expiries are measured against."""
        return time.time()

    def age(self, provider: Provider, seconds: float) -> None:
        """Make the store behave as if ``seconds`` had passed."""
        raise NotImplementedError

    # -- get and set ------------------------------------------------------------

    def test_miss_is_no_entry(self, provider: Provider) -> None:
        got = provider.get(cert_id("absent"))
        assert got is NO_ENTRY
        assert got is not None and not got

    def test_round_trip(self, provider: Provider) -> None:
        cid = cert_id(1)
        provider.set(cid, der_for("one"), 600, meta={"source": "test", "n": 1})
        got = provider.get(cid)
        assert got
        assert got.cert_id == cid
        assert got.key == staple_key(self.namespace, cid)
        assert got.der == der_for("one")
        assert got.flag == FLAG_VALID
        assert got.has_staple
        assert got.meta == {"source": "test", "n": 1}

    def test_error_entry_keeps_flag_zero(self, provider: Provider) -> None:
        cid = cert_id("error")
        provider.set(cid, der_for("tryLater"), 600, flag=FLAG_ERROR)
        got = provider.get(cid)
        assert got and got.flag == FLAG_ERROR and got.der == der_for("tryLater")

    def test_lease_is_exclusive_on_a_shared_store(self, provider: Provider) -> None:
        cid = cert_id("lease")
        assert provider.add_lease(cid, "host-a:1", 30)
        # a store one host uses grants every lease: the stripes exclude there
        assert provider.add_lease(cid, "host-b:2", 30) is (not provider.shared)
        assert not [e for e in provider.entries() if e.cert_id == cid]  # leases are no entries

    def test_set_replaces_the_staple(self, provider: Provider) -> None:
        cid = cert_id(1)
        provider.set(cid, der_for("old"), 600, flag=FLAG_ERROR)
        provider.set(cid, der_for("new"), 600)
        got = provider.get(cid)
        assert got and got.der == der_for("new") and got.flag == FLAG_VALID

    def test_get_many_hits_and_misses(self, provider: Provider) -> None:
        hits = [cert_id(n) for n in range(5)]
        for n, cid in enumerate(hits):
            provider.set(cid, der_for(f"d{n}"), 600)
        misses = [cert_id(f"miss-{n}") for n in range(3)]
        found = provider.get_many(hits + misses + hits[:1])
        assert set(found) == set(hits)
        assert all(found[cid].der == der_for(f"d{n}") for n, cid in enumerate(hits))
        assert provider.get_many([]) == {}

    def test_largest_staple_fits_and_one_more_byte_does_not(self, provider: Provider) -> None:
        largest = b"\x30" * (MAX_VALUE_SIZE - 1)
        provider.set(cert_id("large"), largest, 600)
        got = provider.get(cert_id("large"))
        assert got and got.der == largest
        with pytest.raises(EntryTooLargeError):
            provider.set(cert_id("too-large"), largest + b"\x30", 600, meta={"m": 1})
        assert provider.get(cert_id("too-large")) is NO_ENTRY

    def test_empty_der_is_refused(self, provider: Provider) -> None:
        with pytest.raises(ValueError):
            provider.set(cert_id(1), b"", 600)

    # -- set_many ---------------------------------------------------------------

    def test_set_many_stores_each_as_set_would(self, provider: Provider) -> None:
        writes = [
            StapleWrite(cert_id("m0"), der_for("m0"), 600, meta={"n": 0}),
            StapleWrite(cert_id("m1"), der_for("m1"), 600, flag=FLAG_ERROR),
            StapleWrite(cert_id("m2"), der_for("m2"), 900, meta={"n": 2}),
        ]
        provider.set_many(writes)
        # the same writes one by one through set(), under other ids
        twins = {w.cert_id: cert_id(f"twin-{n}") for n, w in enumerate(writes)}
        for w in writes:
            provider.set(twins[w.cert_id], w.der, w.ttl, flag=w.flag, meta=w.meta)
        found = provider.get_many(list(twins) + list(twins.values()))
        assert set(found) == set(twins) | set(twins.values())
        for w in writes:
            got, by_set = found[w.cert_id], found[twins[w.cert_id]]
            assert (got.der, got.flag, got.meta) == (by_set.der, by_set.flag, by_set.meta)
            assert (got.der, got.flag, got.meta) == (w.der, w.flag, w.meta)
            assert got.key == staple_key(self.namespace, w.cert_id)
            single = provider.get(w.cert_id)
            assert single and (single.der, single.flag, single.meta) == (w.der, w.flag, w.meta)
        now = self.now()
        listed = {e.cert_id: e for e in provider.entries()}
        for w in writes:  # each write keeps its own ttl
            assert listed[w.cert_id].expires_at == pytest.approx(now + w.ttl, abs=self.expiry_slack)

    def test_set_many_skips_a_write_with_ttl_not_positive(self, provider: Provider) -> None:
        provider.set_many([
            StapleWrite(cert_id("a"), der_for("a"), 600),
            StapleWrite(cert_id("zero"), der_for("zero"), 0, meta={"m": 0}),
            StapleWrite(cert_id("negative"), der_for("negative"), -5),
            StapleWrite(cert_id("b"), der_for("b"), 600, meta={"m": 1}),
        ])  # fmt: skip
        assert provider.get(cert_id("zero")) is NO_ENTRY
        assert provider.get(cert_id("negative")) is NO_ENTRY
        found = provider.get_many([cert_id("a"), cert_id("b")])
        assert found[cert_id("a")].der == der_for("a")
        assert (found[cert_id("b")].der, found[cert_id("b")].meta) == (der_for("b"), {"m": 1})

    @pytest.mark.parametrize(
        ("bad_der", "error"), [(b"", ValueError), (b"\x30" * MAX_VALUE_SIZE, EntryTooLargeError)]
    )
    def test_set_many_with_a_bad_write_stores_nothing(
        self, provider: Provider, bad_der: bytes, error: type[Exception]
    ) -> None:
        provider.set(cert_id("old"), der_for("old"), 600, meta={"v": "old"})
        with pytest.raises(error):
            provider.set_many([
                StapleWrite(cert_id("new"), der_for("new"), 600, meta={"v": "new"}),
                StapleWrite(cert_id("old"), der_for("replaced"), 600, meta={"v": "replaced"}),
                StapleWrite(cert_id("bad"), bad_der, 600),
                StapleWrite(cert_id("after"), der_for("after"), 600),
            ])  # fmt: skip
        assert provider.get(cert_id("new")) is NO_ENTRY
        assert provider.get(cert_id("bad")) is NO_ENTRY
        assert provider.get(cert_id("after")) is NO_ENTRY
        old = provider.get(cert_id("old"))
        assert old and (old.der, old.meta) == (der_for("old"), {"v": "old"})

    def test_set_many_replaces_like_set(self, provider: Provider) -> None:
        cid, kept = cert_id(1), cert_id(2)
        provider.set(cid, der_for("old"), 600, flag=FLAG_ERROR, meta={"old": 1})
        provider.set(kept, der_for("kept"), 600, meta={"kept": True})
        provider.set_many([
            StapleWrite(cid, der_for("new"), 600, meta={"new": 2}),
            StapleWrite(kept, der_for("kept-2"), 600),  # meta=None keeps the stored one
        ])  # fmt: skip
        got = provider.get(cid)
        assert got and (got.der, got.flag, got.meta) == (der_for("new"), FLAG_VALID, {"new": 2})
        got = provider.get(kept)
        assert got and (got.der, got.meta) == (der_for("kept-2"), {"kept": True})

    def test_set_many_of_nothing_is_a_no_op(self, provider: Provider) -> None:
        provider.set(cert_id(1), der_for("one"), 600)
        provider.set_many([])
        assert [(e.cert_id, e.der) for e in provider.entries()] == [(cert_id(1), der_for("one"))]

    # -- metadata ---------------------------------------------------------------

    def test_set_meta_leaves_the_staple(self, provider: Provider) -> None:
        cid = cert_id(1)
        provider.set(cid, der_for("one"), 600, flag=FLAG_ERROR, meta={"v": 1})
        provider.set_meta(cid, {"v": 2, "last_error": "timeout"}, 600)
        got = provider.get(cid)
        assert got and got.der == der_for("one") and got.flag == FLAG_ERROR
        assert got.meta == {"v": 2, "last_error": "timeout"}

    def test_set_meta_without_staple_is_metadata_only(self, provider: Provider) -> None:
        cid = cert_id(1)
        provider.set_meta(cid, {"last_error": "unreachable"}, 600)
        got = provider.get(cid)
        assert got
        assert got.der == b"" and not got.has_staple
        assert got.meta == {"last_error": "unreachable"}
        assert provider.get_many([cid])[cid].meta == {"last_error": "unreachable"}

    def test_set_without_meta_keeps_the_stored_meta(self, provider: Provider) -> None:
        cid = cert_id(1)
        provider.set_meta(cid, {"kept": True}, 600)
        provider.set(cid, der_for("one"), 600)
        got = provider.get(cid)
        assert got and got.der == der_for("one") and got.meta == {"kept": True}

    def test_set_with_meta_replaces_the_stored_meta(self, provider: Provider) -> None:
        cid = cert_id(1)
        provider.set(cid, der_for("one"), 600, meta={"old": 1})
        provider.set(cid, der_for("two"), 600, meta={"new": 2})
        got = provider.get(cid)
        assert got and got.meta == {"new": 2}

    def test_entry_without_meta_has_meta_none(self, provider: Provider) -> None:
        provider.set(cert_id(1), der_for("one"), 600)
        got = provider.get(cert_id(1))
        assert got and got.meta is None

    # -- delete and entries -----------------------------------------------------

    def test_delete_removes_staple_and_meta(self, provider: Provider) -> None:
        cid, other = cert_id(1), cert_id(2)
        provider.set(cid, der_for("one"), 600, meta={"m": 1})
        provider.set(other, der_for("two"), 600)
        provider.delete(cid)
        assert provider.get(cid) is NO_ENTRY
        assert provider.get(other)
        assert [e.cert_id for e in provider.entries()] == [other]

    def test_delete_of_a_miss_is_quiet(self, provider: Provider) -> None:
        provider.delete(cert_id("absent"))
        assert provider.get(cert_id("absent")) is NO_ENTRY

    def test_entries_lists_everything_with_metadata(self, provider: Provider) -> None:
        provider.set(cert_id("a"), der_for("a"), 600, meta={"name": "a"})
        provider.set(cert_id("b"), der_for("b"), 600, flag=FLAG_ERROR)
        provider.set_meta(cert_id("c"), {"name": "c"}, 600)
        found = {e.cert_id: e for e in provider.entries()}
        assert set(found) == {cert_id("a"), cert_id("b"), cert_id("c")}
        assert (found[cert_id("a")].der, found[cert_id("a")].meta) == (der_for("a"), {"name": "a"})
        assert (found[cert_id("b")].flag, found[cert_id("b")].meta) == (FLAG_ERROR, None)
        assert (found[cert_id("c")].der, found[cert_id("c")].meta) == (b"", {"name": "c"})
        assert all(e.key == staple_key(self.namespace, e.cert_id) for e in found.values())

    def test_entries_of_an_empty_store(self, provider: Provider) -> None:
        assert list(provider.entries()) == []

    # -- expiry -----------------------------------------------------------------

    def test_ttl_sets_expires_at(self, provider: Provider) -> None:
        provider.set(cert_id("a"), der_for("a"), 600)
        provider.set_meta(cert_id("b"), {"m": 1}, 900)
        now = self.now()
        found = {e.cert_id: e for e in provider.entries()}
        assert found[cert_id("a")].expires_at == pytest.approx(now + 600, abs=self.expiry_slack)
        assert found[cert_id("b")].expires_at == pytest.approx(now + 900, abs=self.expiry_slack)
        got = provider.get(cert_id("a"))
        if self.get_knows_expiry:
            assert got and got.expires_at == pytest.approx(now + 600, abs=self.expiry_slack)

    def test_expired_entry_is_gone(self, provider: Provider) -> None:
        cid = cert_id(1)
        provider.set(cid, der_for("one"), 10, meta={"m": 1})
        self.age(provider, 15)
        assert provider.get(cid) is NO_ENTRY
        assert provider.get_many([cid]) == {}
        assert list(provider.entries()) == []

    def test_entry_lives_until_its_ttl(self, provider: Provider) -> None:
        cid = cert_id(1)
        provider.set(cid, der_for("one"), 100, meta={"m": 1})
        self.age(provider, 50)
        got = provider.get(cid)
        assert got and got.der == der_for("one") and got.meta == {"m": 1}

    def test_staple_expires_before_its_metadata(self, provider: Provider) -> None:
        cid = cert_id(1)
        provider.set(cid, der_for("one"), 10)
        provider.set_meta(cid, {"last_error": "timeout"}, 1000)
        self.age(provider, 15)
        got = provider.get(cid)
        assert got and got.der == b"" and got.meta == {"last_error": "timeout"}
        assert [e.der for e in provider.entries()] == [b""]

    @pytest.mark.parametrize("ttl", [0, -5])
    def test_ttl_not_positive_stores_nothing(self, provider: Provider, ttl: int) -> None:
        provider.set(cert_id(1), der_for("one"), ttl, meta={"m": 1})
        provider.set_meta(cert_id(2), {"m": 2}, ttl)
        assert provider.get(cert_id(1)) is NO_ENTRY
        assert provider.get(cert_id(2)) is NO_ENTRY

    # -- several processes and threads at once ----------------------------------

    def test_processes_and_threads_at_once(self, provider: Provider, uri: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        start = ctx.Barrier(PROCESSES + 1, timeout=60)
        procs = [ctx.Process(target=hammer, args=(uri, p, start, results)) for p in range(PROCESSES)]
        for proc in procs:
            proc.start()
        start.wait()
        failures = [f for _ in procs for f in results.get(timeout=90)]
        for proc in procs:
            proc.join(timeout=30)
        assert failures == []
        assert [proc.exitcode for proc in procs] == [0] * PROCESSES

        cache = Cache(open_provider(uri))
        expected_own = {
            own_id(p, t): f"P{p}T{t}I{ROUNDS - 1}" for p in range(PROCESSES) for t in range(THREADS)
        }
        for cid, tag in expected_own.items():
            got = cache.get(cid)
            assert got and got.der == der_for(tag) and got.meta == {"tag": tag}
        for k, cid in enumerate(SHARED):
            # The last write to a shared key is some thread's last write to it.
            finals = {
                f"P{p}T{t}I{last_round_for(k)}" for p in range(PROCESSES) for t in range(THREADS)
            }
            got = cache.get(cid)
            assert got and got.der in {der_for(tag) for tag in finals}
            assert got.meta and got.meta["tag"] in finals
        assert {e.cert_id for e in cache.entries()} == set(expected_own) | set(SHARED)
        cache.close()
