"""Fetch locks, one per certificate, with real threads and real processes: no mocks.

Threads and processes are synchronised with events, barriers and pipes;
nothing here sleeps to wait for something to happen, and no assertion is
about how long anything took. The figures the locks keep are tested in
tests/test_lock_stats.py; what both files share is in
tests/fetchlocks_helpers.py.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from engine.errors import StapleError
from engine.locks.fetchlocks import (
    LOCK_FILE,
    FetchLocks,
    LockDirectoryError,
    LockTimeoutError,
    lock_offset,
    read_stats,
    stripe_of,
)
from engine.locks.stats import STATS_FILE, process_alive, process_start
from tests import fetchlocks_helpers
from tests.blocked import wait_for_blocked_lock
from tests.fetchlocks_helpers import (
    FORK,
    PATIENCE,
    SPAWN,
    cache_id,
    child_hold_many,
    child_hold_until_killed,
    child_hold_until_told,
    child_try_inherited,
    in_thread,
    run_child,
    same_stripe,
    try_hold,
)

#: the fixtures, by name in this module, where pytest looks for them
lock_dir = fetchlocks_helpers.lock_dir
locks = fetchlocks_helpers.locks


# -- the mapping ----------------------------------------------------------------------


def test_a_cache_id_maps_by_its_first_32_bits_in_either_case(locks: FetchLocks) -> None:
    for n in range(100):
        cert_id = cache_id(n)
        assert locks.stripe_of(cert_id) == int(cert_id[:8], 16) % 64
        assert locks.stripe_of(cert_id.upper()) == locks.stripe_of(cert_id)
        assert stripe_of(cert_id, 7) == int(cert_id[:8], 16) % 7


def test_the_mapping_is_the_same_in_other_processes() -> None:
    ids = [cache_id(n) for n in range(300)] + ["example.com", "not a cache id", "ünïcöde", "", "ABC"]
    here = [stripe_of(i, n) for i in ids for n in (64, 7, 1)]
    program = (
        "import json, sys\n"
        "from engine.locks.fetchlocks import stripe_of\n"
        "ids = json.load(sys.stdin)\n"
        "print(json.dumps([stripe_of(i, n) for i in ids for n in (64, 7, 1)]))\n"
    )
    for seed in ("1", "2"):  # str hashes differ between these: the mapping must not
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", program], input=json.dumps(ids), env=env, capture_output=True, text=True, check=True
        )
        assert json.loads(out.stdout) == here


@pytest.mark.parametrize("make_id", [cache_id, lambda n: f"host{n}.example.org"], ids=["cache ids", "other strings"])
def test_certificates_spread_evenly_over_the_stripes(make_id) -> None:
    counts = Counter(stripe_of(make_id(n), 64) for n in range(64_000))
    assert sorted(counts) == list(range(64))
    # 1000 expected per stripe, standard deviation about 31
    assert 800 < min(counts.values()) <= max(counts.values()) < 1200


def test_each_certificate_has_its_own_lock_byte() -> None:
    ids = [cache_id(n) for n in range(10_000)]
    offsets = {lock_offset(i) for i in ids}
    assert len(offsets) == len(ids)
    assert all(0 <= o < 2**60 for o in offsets)
    assert lock_offset(ids[0].upper()) == lock_offset(ids[0]) == int(ids[0][:15], 16)
    assert lock_offset("example.com") != lock_offset("example.org")


# -- threads ----------------------------------------------------------------------


def test_threads_exclude_each_other_on_one_certificate(locks: FetchLocks) -> None:
    threads, rounds = 8, 200
    ids = [cache_id("one")] * threads
    barrier = threading.Barrier(threads)
    state = {"count": 0, "inside": 0, "overlaps": 0}

    def work(cert_id: str) -> None:
        barrier.wait(PATIENCE)
        for _ in range(rounds):
            with locks.hold(cert_id):
                state["inside"] += 1
                if state["inside"] != 1:
                    state["overlaps"] += 1
                value = state["count"]
                os.sched_yield()  # releases the GIL: invites another thread in
                state["count"] = value + 1
                state["inside"] -= 1

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in ids]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + PATIENCE
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    assert not any(worker.is_alive() for worker in workers)
    assert state == {"count": threads * rounds, "inside": 0, "overlaps": 0}
    figures = locks.stats()[locks.stripe_of(ids[0])]
    assert figures.acquisitions == threads * rounds
    assert 0 < figures.contended <= figures.acquisitions
    assert figures.max_wait >= figures.total_wait / figures.acquisitions > 0


def test_a_held_certificate_blocks_only_itself_not_its_stripe(locks: FetchLocks) -> None:
    first, neighbour = same_stripe(locks, 2)
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        with locks.hold(first):
            held.set()
            done.wait(PATIENCE)

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    try:
        assert held.wait(PATIENCE)
        with locks.hold(neighbour, timeout=0) as other:  # same stripe, another certificate: at once
            assert not other.contended
            figures = locks.stats()[locks.stripe_of(first)]
            assert {h.cert_id for h in figures.holders} == {first, neighbour}
        with pytest.raises(LockTimeoutError) as caught:
            with locks.hold(first, timeout=0):
                pass
        assert isinstance(caught.value, StapleError)
        assert caught.value.reason == "lock_timeout"
        assert caught.value.cert_id == first
        assert f"fetch lock of certificate {first}" in str(caught.value)
        assert "by this process" in str(caught.value)
    finally:
        done.set()
        thread.join(PATIENCE)
    assert try_hold(locks, first) == "acquired"
    assert locks._shared.entries == {}  # nothing kept for certificates no longer in use


def test_a_thread_reenters_a_certificate_it_holds(locks: FetchLocks, lock_dir: Path) -> None:
    cert_id = cache_id("again")
    stripe = locks.stripe_of(cert_id)
    with locks.hold(cert_id) as outer:
        with locks.hold(cert_id, timeout=0) as inner:
            assert (outer.reentered, inner.reentered) == (False, True)
            # another object on the same directory is the same locks in this process
            with FetchLocks(lock_dir) as again, again.hold(cert_id, timeout=0) as third:
                assert third.reentered
        assert locks.stats()[stripe].holder_cert_id == cert_id
        assert in_thread(lambda: try_hold(locks, cert_id)) == "timeout"  # still ours
    assert in_thread(lambda: try_hold(locks, cert_id)) == "acquired"
    figures = locks.stats()[stripe]
    assert (figures.acquisitions, figures.reentries) == (2, 2)


# -- processes ------------------------------------------------------------------------


def test_two_processes_exclude_each_other(locks: FetchLocks, lock_dir: Path) -> None:
    cert_id = cache_id("shared")
    held, release = SPAWN.Event(), SPAWN.Event()
    child = SPAWN.Process(target=child_hold_until_told, args=(str(lock_dir), cert_id, held, release), daemon=True)
    child.start()
    try:
        assert held.wait(PATIENCE)
        with pytest.raises(LockTimeoutError) as caught:
            with locks.hold(cert_id, timeout=0.2):
                pass
        assert f"by pid {child.pid}" in str(caught.value)
        figures = read_stats(lock_dir)[locks.stripe_of(cert_id)]
        assert (figures.holder_cert_id, figures.holder_pid, figures.holder_alive) == (cert_id, child.pid, True)
    finally:
        release.set()
        child.join(PATIENCE)
    assert child.exitcode == 0
    with locks.hold(cert_id, timeout=0) as hold:
        assert not hold.contended
    figures = locks.stats()[locks.stripe_of(cert_id)]
    assert (figures.acquisitions, figures.contended) == (2, 0)  # a timed-out try is no acquisition


def test_another_process_never_waits_for_another_certificate(locks: FetchLocks, lock_dir: Path) -> None:
    first, neighbour = same_stripe(locks, 2)
    held, release = SPAWN.Event(), SPAWN.Event()
    child = SPAWN.Process(target=child_hold_until_told, args=(str(lock_dir), first, held, release), daemon=True)
    child.start()
    try:
        assert held.wait(PATIENCE)
        with locks.hold(neighbour, timeout=0) as hold:
            assert not hold.contended
            holders = read_stats(lock_dir)[locks.stripe_of(first)].holders
            assert [(h.cert_id, h.pid) for h in holders] == [(first, child.pid), (neighbour, os.getpid())]
    finally:
        release.set()
        child.join(PATIENCE)
    assert child.exitcode == 0


def test_figures_from_many_processes_at_once_are_not_lost(lock_dir: Path) -> None:
    # Two processes and this one, every certificate in the one stripe: the
    # record is updated by all at once, under its short lock.
    rounds, go = 1000, SPAWN.Barrier(3)
    ids = [cache_id(f"busy{n}") for n in range(6)]
    children = [
        SPAWN.Process(target=child_hold_many, args=(str(lock_dir), ids[n::3], go, rounds), daemon=True)
        for n in range(2)
    ]
    with FetchLocks(lock_dir, stripes=1) as locks:
        for child in children:
            child.start()
        go.wait(PATIENCE)
        for _ in range(rounds):
            for cert_id in ids[2::3]:
                with locks.hold(cert_id):
                    pass
        for child in children:
            child.join(PATIENCE)
            assert child.exitcode == 0
        [figures] = locks.stats()
        assert figures.acquisitions == 6 * rounds
        assert figures.contended == 0  # six certificates, none held twice at once
        assert figures.holders == ()


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs /proc/locks to see a blocked lock")
def test_a_waiting_process_gets_the_certificate_when_its_holder_lets_go(locks: FetchLocks, lock_dir: Path) -> None:
    cert_id = cache_id("waited for")
    stripe = locks.stripe_of(cert_id)
    held, release = SPAWN.Event(), SPAWN.Event()
    child = SPAWN.Process(target=child_hold_until_told, args=(str(lock_dir), cert_id, held, release), daemon=True)
    child.start()
    got: list = []

    def wait() -> None:
        with locks.hold(cert_id) as hold:  # no timeout: sleeps in the kernel
            got.append((hold.contended, hold.waited))

    waiter = threading.Thread(target=wait, daemon=True)
    try:
        assert held.wait(PATIENCE)
        waiter.start()
        wait_for_blocked_lock(lock_dir / LOCK_FILE, "OFDLCK")
    finally:
        release.set()
        waiter.join(PATIENCE)
        child.join(PATIENCE)
    [(contended, waited)] = got
    assert contended and waited > 0
    figures = locks.stats()[stripe]
    assert (figures.acquisitions, figures.contended) == (2, 1)
    assert figures.max_wait >= waited and figures.max_wait >= figures.total_wait / 2


def test_a_killed_holder_leaves_the_certificate_free(locks: FetchLocks, lock_dir: Path) -> None:
    cert_id = cache_id("doomed")
    stripe = locks.stripe_of(cert_id)
    held = FORK.Event()
    child = FORK.Process(target=child_hold_until_killed, args=(str(lock_dir), cert_id, held), daemon=True)
    child.start()
    try:
        assert held.wait(PATIENCE)
        assert read_stats(lock_dir)[stripe].holder_alive
        os.kill(child.pid, signal.SIGKILL)
        # dead but not reaped: a zombie holds no descriptors, so no lock
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        figures = read_stats(lock_dir)[stripe]
        assert (figures.holder_cert_id, figures.holder_pid, figures.holder_alive) == (cert_id, child.pid, False)
        with locks.hold(cert_id, timeout=0):
            figures = read_stats(lock_dir)[stripe]
            assert (figures.holder_pid, figures.holder_alive) == (os.getpid(), True)
    finally:
        child.kill()
        child.join(PATIENCE)
    figures = read_stats(lock_dir)[stripe]
    assert (figures.holder_cert_id, figures.holder_pid, figures.holder_alive) == (None, None, False)
    assert figures.acquisitions == 1  # a hold is counted when it ends: the killed one never did


def test_a_forked_child_does_not_share_its_parents_locks(locks: FetchLocks) -> None:
    cert_id = cache_id("forked")
    with locks.hold(cert_id) as held:
        for inherited in (held, None):  # the second child checks the first let nothing go
            receive, send = FORK.Pipe(duplex=False)
            run_child(FORK, child_try_inherited, locks, inherited, cert_id, send)
            assert receive.recv() == "timeout"
    receive, send = FORK.Pipe(duplex=False)
    run_child(FORK, child_try_inherited, locks, None, cert_id, send)
    assert receive.recv() == "acquired"


def test_a_dead_or_reused_pid_is_not_alive() -> None:
    me = os.getpid()
    assert process_alive(me, process_start(me))
    assert not process_alive(me, process_start(me) + 1)  # our pid, another process
    child = FORK.Process(target=int)
    child.start()
    child.join(PATIENCE)
    assert not process_alive(child.pid)
    assert not process_alive(0)


# -- files and lifetime ---------------------------------------------------------------


def test_files_are_never_world_writable(lock_dir: Path) -> None:
    old = os.umask(0o077)  # the modes must not depend on the caller's umask
    try:
        with FetchLocks(lock_dir) as locks, locks.hold(cache_id(1)):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(lock_dir).st_mode) == 0o750
    files = list(lock_dir.iterdir())
    assert {f.name for f in files} == {STATS_FILE, LOCK_FILE}
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o640 for f in files)


def test_a_world_writable_directory_is_refused(lock_dir: Path) -> None:
    lock_dir.mkdir()
    lock_dir.chmod(0o777)
    with pytest.raises(LockDirectoryError, match="writable by everyone"):
        FetchLocks(lock_dir)


def test_closing_while_a_certificate_is_held_is_refused(lock_dir: Path) -> None:
    locks = FetchLocks(lock_dir)
    with locks.hold(cache_id(1)):
        with pytest.raises(RuntimeError, match="still held"):
            locks.close()
    locks.close()
    with pytest.raises(ValueError, match="closed"):
        locks.hold(cache_id(1))
