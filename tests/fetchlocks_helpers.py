"""What the fetch lock tests share (tests/test_fetchlocks.py,
tests/test_lock_stats.py): cache ids and the stripes they map to, the lock
directory and a FetchLocks on it, and the child processes they start.

The children are at module level of a module importable by name, so that
spawned processes can import them. A test module puts the fixtures in its
own namespace (``locks = fetchlocks_helpers.locks``): pytest looks for
fixtures there.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from pathlib import Path

import pytest

from engine.locks.fetchlocks import FetchLocks, LockTimeoutError, read_stats

FORK = multiprocessing.get_context("fork")
SPAWN = multiprocessing.get_context("spawn")
#: an upper bound on waiting for another process; a healthy run takes milliseconds
PATIENCE = 30.0


def cache_id(n: int | str) -> str:
    return hashlib.sha1(str(n).encode()).hexdigest()


def same_stripe(locks: FetchLocks, count: int, start: int = 0) -> list[str]:
    """``count`` cache ids that all map to one stripe."""
    by_stripe: dict[int, list[str]] = {}
    for n in range(start, start + 100_000):
        ids = by_stripe.setdefault(locks.stripe_of(cache_id(n)), [])
        ids.append(cache_id(n))
        if len(ids) == count:
            return ids
    raise AssertionError("unreachable")


def other_stripe(locks: FetchLocks, cert_id: str) -> str:
    return next(cache_id(n) for n in range(1000) if locks.stripe_of(cache_id(n)) != locks.stripe_of(cert_id))


def in_thread(fn) -> object:
    """Run ``fn`` in another thread (one that holds nothing) and return or raise what it did."""
    result: list = []

    def run() -> None:
        try:
            result.append(("ok", fn()))
        except BaseException as exc:  # handed back to the test
            result.append(("raised", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(PATIENCE)
    kind, value = result[0]
    if kind == "raised":
        raise value
    return value


def try_hold(locks: FetchLocks, cert_id: str) -> str:
    try:
        with locks.hold(cert_id, timeout=0):
            return "acquired"
    except LockTimeoutError:
        return "timeout"


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    return tmp_path / "locks"


@pytest.fixture
def locks(lock_dir: Path):
    locks = FetchLocks(lock_dir)
    yield locks
    locks.close()


# -- children (module level, so that spawned processes can import them) ------------


def child_hold_until_told(directory: str, cert_id: str, held, release) -> None:
    with FetchLocks(Path(directory)) as locks, locks.hold(cert_id):
        held.set()
        release.wait(PATIENCE)


def child_hold_until_killed(directory: str, cert_id: str, held) -> None:
    locks = FetchLocks(Path(directory))
    with locks.hold(cert_id):
        held.set()
        threading.Event().wait()


def child_read_stats(directory: str, conn) -> None:
    conn.send([s.to_dict() for s in read_stats(Path(directory))])


def child_try_inherited(locks: FetchLocks, held, cert_id: str, conn) -> None:
    if held is not None:
        held.__exit__(None, None, None)  # leaving, in the child, a `with` entered before the fork
    conn.send(try_hold(locks, cert_id))


def run_child(context, target, *args) -> None:
    child = context.Process(target=target, args=args, daemon=True)
    child.start()
    child.join(PATIENCE)
    assert child.exitcode == 0


def stats_from_child(lock_dir: Path) -> list[dict]:
    receive, send = SPAWN.Pipe(duplex=False)
    run_child(SPAWN, child_read_stats, str(lock_dir), send)
    return receive.recv()


def child_hold_many(directory: str, cert_ids: list[str], go, rounds: int) -> None:
    with FetchLocks(Path(directory), stripes=1) as locks:
        go.wait(PATIENCE)  # a barrier: all three start together
        for _ in range(rounds):
            for cert_id in cert_ids:
                with locks.hold(cert_id):
                    pass
