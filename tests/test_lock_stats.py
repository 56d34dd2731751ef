"""The figures fetch locks keep per stripe, in a file every process can read:
acquisitions, contention, wait and hold times, who holds what now; a record
left half-written by a killed writer; a stats file of another stripe count
or of someone else's, replaced.

As in tests/test_fetchlocks.py, real threads and real processes, no mocks,
and nothing sleeps to wait for something to happen.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from engine.locks.fetchlocks import FetchLocks, read_stats
from engine.locks.stats import _HEADER_SIZE, _RECORD, STATS_FILE, LockStatsError
from tests import fetchlocks_helpers
from tests.fetchlocks_helpers import PATIENCE, cache_id, other_stripe, stats_from_child

#: the fixtures, by name in this module, where pytest looks for them
lock_dir = fetchlocks_helpers.lock_dir
locks = fetchlocks_helpers.locks


def test_stats_record_holds_and_show_the_holder_to_other_processes(locks: FetchLocks, lock_dir: Path) -> None:
    cert_id = cache_id("figures")
    stripe = locks.stripe_of(cert_id)
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        with locks.hold(cert_id):
            held.set()
            done.wait(PATIENCE)

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    try:
        assert held.wait(PATIENCE)
        seen = stats_from_child(lock_dir)[stripe]
    finally:
        done.set()
        thread.join(PATIENCE)
    assert seen["holder_cert_sha1"] == cert_id
    assert (seen["holder_pid"], seen["holder_alive"]) == (os.getpid(), True)
    assert seen["holder_since"].endswith("Z")
    assert seen["acquisitions"] == 0  # counted when it ends: the hold shows in its slot until then

    for _ in range(4):
        with locks.hold(cert_id):
            pass
    figures = locks.stats()[stripe]
    assert (figures.acquisitions, figures.contended, figures.reentries) == (5, 0, 0)
    assert figures.total_hold > 0 and figures.max_hold >= figures.total_hold / 5
    assert figures.total_wait > 0 and figures.max_wait >= figures.total_wait / 5
    assert (figures.holder_cert_id, figures.holder_pid, figures.holder_since) == (None, None, None)
    assert stats_from_child(lock_dir)[stripe] == figures.to_dict()
    assert read_stats(lock_dir) == locks.stats()
    untouched = locks.stats()[locks.stripe_of(other_stripe(locks, cert_id))]
    assert (untouched.acquisitions, untouched.total_hold, untouched.holder_alive) == (0, 0.0, False)


def test_a_record_left_mid_write_by_a_killed_writer_is_read_and_then_repaired(
    locks: FetchLocks, lock_dir: Path
) -> None:
    cert_id = cache_id("torn")
    stripe = locks.stripe_of(cert_id)
    with locks.hold(cert_id):
        pass
    at = _HEADER_SIZE + stripe * _RECORD.size
    with open(lock_dir / STATS_FILE, "r+b") as handle:  # what a writer killed between its two seq writes leaves
        handle.seek(at)
        seq = int.from_bytes(handle.read(8), "little")
        handle.seek(at)
        handle.write((seq + 1).to_bytes(8, "little"))
    assert read_stats(lock_dir)[stripe].acquisitions == 1  # after a short wait, not for ever
    with locks.hold(cert_id):
        pass
    with open(lock_dir / STATS_FILE, "rb") as handle:
        handle.seek(at)
        assert int.from_bytes(handle.read(8), "little") % 2 == 0
    assert read_stats(lock_dir)[stripe].acquisitions == 2


def test_stats_of_a_directory_never_used_are_empty(tmp_path: Path) -> None:
    assert read_stats(tmp_path) == []
    assert read_stats(tmp_path / "missing") == []


def test_another_stripe_count_replaces_the_stats_file(lock_dir: Path) -> None:
    with FetchLocks(lock_dir, stripes=64) as locks, locks.hold(cache_id(1)):
        pass
    with FetchLocks(lock_dir, stripes=16) as locks:
        assert len(locks.stats()) == 16
        assert all(figures.acquisitions == 0 for figures in read_stats(lock_dir))
        assert len(read_stats(lock_dir)) == 16


def test_a_foreign_stats_file_is_refused_by_readers_and_replaced_by_users(lock_dir: Path) -> None:
    lock_dir.mkdir(mode=0o750)
    (lock_dir / STATS_FILE).write_bytes(b"not ours" * 100)
    with pytest.raises(LockStatsError):
        read_stats(lock_dir)
    with FetchLocks(lock_dir, stripes=8):
        assert len(read_stats(lock_dir)) == 8


def test_one_process_uses_one_stripe_count_per_directory(locks: FetchLocks, lock_dir: Path) -> None:
    with pytest.raises(ValueError, match="already open in this process with 64 stripes"):
        FetchLocks(lock_dir, stripes=32)
    for bad in (0, -1, 4097, 2.0, True):
        with pytest.raises(ValueError):
            FetchLocks(lock_dir, stripes=bad)
