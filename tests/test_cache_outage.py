"""The prefetch worker through a cache outage: told once, and back at once.

A real memcached is stopped under a running worker and started again,
empty, on the same port (what a restart of the cache server does). The
worker must say so once when the outage starts and once when it ends,
and must put every staple back as soon as the cache answers again: the
certificates that failed on the cache must not sit out a backoff meant
for a failing responder.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from engine.store.cache import Cache
from engine.store.outages import StoreWatch, says_cache_worked
from engine.ocsp.certs import load_leaf
from engine.clock import FrozenClock
from engine.errors import CacheUnavailableError, ResponderTimeoutError
from engine.refresh.fetch import FetchOptions
from engine.refresh.freshness import FreshnessPolicy
from engine.refresh.prefetch import PrefetchWorker, WorkerEvent
from engine.store.providers import open_provider
from engine.refresh.stapler import Stapler
from engine.refresh.worker_state import StateStore
from engine.locks.fetchlocks import FetchLocks, LockTimeoutError
from engine.responders.transport import TransportOptions
from tests.loopback import LOOPBACK
from tests.servers import ServerProcess, _served_by, start_memcached


class TestStoreWatch:
    def test_an_outage_starts_once_and_ends_once(self):
        watch = StoreWatch()
        assert watch.worked(1.0) is None  # nothing to end
        started = watch.failed(CacheUnavailableError("cache down: refused"), 10.0)
        assert started is not None and started.since == 10.0 and "refused" in started.error
        assert watch.failed(CacheUnavailableError("again"), 11.0) is None
        assert not watch.up and watch.outages == 1
        ended = watch.worked(40.0)
        assert ended is not None and (ended.since, ended.until) == (10.0, 40.0)
        assert watch.worked(41.0) is None
        assert watch.up and watch.outages == 1

    def test_which_failures_prove_the_cache_answered(self):
        # the cache is read before the responder is asked
        assert says_cache_worked(ResponderTimeoutError("responder hung"))
        assert not says_cache_worked(CacheUnavailableError("down"))
        # a busy stripe comes before the read
        assert not says_cache_worked(LockTimeoutError("busy", 3))
        assert not says_cache_worked(ValueError("a bug"))


def _restart_empty(server: ServerProcess) -> ServerProcess:
    """Stop memcached and start it again on the same port, empty."""
    argv = list(server.proc.args)
    server.proc.terminate()
    server.proc.wait(timeout=10)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    restarted = ServerProcess(server.name, server.host, server.port, proc, server.workdir)
    deadline = time.monotonic() + 10
    while _served_by(server.host, server.port, b"stats\r\n", b"STAT pid ") != proc.pid:
        assert time.monotonic() < deadline and proc.poll() is None, "memcached did not come back on its port"
        time.sleep(0.05)
    return restarted


@pytest.fixture
def own_memcached():
    server = start_memcached()
    yield server
    server.stop()  # the test puts the restarted process in server.proc


def test_a_memcached_restart_is_told_once_and_every_staple_is_back_at_once(tmp_path, pki, responder, own_memcached):
    clock = FrozenClock(time.time())
    policy = FreshnessPolicy(min_delay=5, backoff_base=60, backoff_cap=3600)
    cache = Cache(open_provider(f"memcache://127.0.0.1:{own_memcached.port}?timeout=1"))
    stapler = Stapler(
        cache, FetchLocks(tmp_path / "locks"), policy=policy, clock=clock,
        fetch_options=FetchOptions(transport=TransportOptions(timeout=5, allow=LOOPBACK)),
    )  # fmt: skip
    events: list[WorkerEvent] = []
    worker = PrefetchWorker(stapler, state=StateStore(tmp_path / "worker.db"), clock=clock, on_event=events.append)
    leaves = [load_leaf(pki.leaf(f"outage-{n}").chain_path) for n in range(3)]
    worker.load(leaves)
    assert {e.action for e in worker.run_due()} == {"updated"}

    # memcached goes away; the renewals that fall due fail on it
    own_memcached.proc.terminate()
    own_memcached.proc.wait(timeout=10)
    clock.set(max(due for _, due in worker.schedule()) + 1)
    events.clear()
    failed = worker.run_due()
    assert [e.action for e in failed] == ["failed"] * 3
    assert all(e.reason == "cache_unavailable" for e in failed)
    down = [e for e in events if e.action == "cache_down"]
    assert len(down) == 1 and down[0].level == "error" and down[0].cert_id == ""
    assert "unreachable" in down[0].detail and not worker.cache_watch.up
    # their backoff is a responder's (60 s and up): without the cache coming
    # back, nothing would be tried again for a minute
    assert min(due for _, due in worker.schedule()) >= clock.now() + 30

    # it comes back, empty: the first look at it ends the outage, once,
    # and every certificate that failed on it is due at once
    restarted = _restart_empty(own_memcached)
    own_memcached.proc = restarted.proc
    events.clear()
    assert worker.audit() == 0  # the failed ones keep no backoff to correct: they were moved
    up = [e for e in events if e.action == "cache_up"]
    assert len(up) == 1 and "works again after" in up[0].detail and "3 certificates that failed on it are due now" in up[0].detail
    assert worker.cache_watch.up and worker.cache_watch.outages == 1
    assert all(due <= clock.now() for _, due in worker.schedule())
    assert {e.action for e in worker.run_due()} == {"updated"}
    assert all(stapler.cached(leaf) is not None for leaf in leaves)
    assert [e.action for e in events].count("cache_down") == 0  # nothing more was said

    worker.stop()
    worker.state.close()
    cache.close()
    stapler.locks.close()
