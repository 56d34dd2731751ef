"""The dbm file store, and the cache mutex the engine takes around it."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymemcache.exceptions import MemcacheUnexpectedCloseError
from redis.exceptions import ConnectionError as RedisConnectionError

from engine.store.cache import Cache
from engine.clock import FrozenClock
from engine.errors import CacheUnavailableError, EntryTooLargeError
from engine.store.mutex import CacheMutex
from engine.store.providers.base import NO_ENTRY, StapleWrite
from engine.store.providers.dbmfile import DbmProvider
from engine.store.providers.local import LocalProvider
from tests.blocked import wait_for_blocked_lock, wait_until_blocked_at
from tests.providers.contract import ProviderContract, cert_id, der_for


class TestDbmProvider(ProviderContract):
    @pytest.fixture
    def uri(self, tmp_path: Path) -> str:
        return f"dbm:{tmp_path / 'state' / 'staples'}"

    @pytest.fixture
    def clock(self) -> FrozenClock:
        return FrozenClock(time.time())

    @pytest.fixture
    def provider(self, uri: str, clock: FrozenClock) -> DbmProvider:
        self._clock = clock
        return DbmProvider(Path(uri.removeprefix("dbm:")), clock=clock)

    def now(self) -> float:
        return self._clock.now()

    def age(self, provider: DbmProvider, seconds: float) -> None:
        self._clock.advance(seconds)


def test_needs_the_mutex_and_names_its_lock_file(tmp_path: Path) -> None:
    provider = DbmProvider(tmp_path / "staples")
    assert provider.needs_mutex is True
    assert provider.mutex_path == str(tmp_path / "staples") + ".lock"


def test_files_are_not_world_accessible(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        cache = Cache(DbmProvider(tmp_path / "state" / "staples"))
        cache.set(cert_id(1), der_for("one"), 600)
        cache.set(cert_id(2), der_for("two"), 600)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o750
    files = list((tmp_path / "state").iterdir())
    assert {f.name for f in files} >= {"staples.dat", "staples.dir", "staples.lock"}
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o640, f


# -- the Cache wrapper takes the mutex around each call, and only then --------


class WatchedDbm(DbmProvider):
    """Records, at every call, whether the calling thread holds the mutex."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.watch = CacheMutex(self.mutex_path)
        self.calls: list[tuple[str, bool]] = []

    def _seen(self, name: str) -> None:
        self.calls.append((name, self.watch.held_by_me))

    def get(self, cert_id: str) -> Any:
        self._seen("get")
        return super().get(cert_id)

    def get_many(self, cert_ids: Any) -> Any:
        self._seen("get_many")
        return super().get_many(cert_ids)

    def set(self, cert_id: str, der: bytes, ttl: int, **kw: Any) -> None:
        self._seen("set")
        super().set(cert_id, der, ttl, **kw)

    def set_many(self, writes: Any) -> None:
        self._seen("set_many")
        super().set_many(writes)

    def set_meta(self, cert_id: str, meta: dict[str, Any], ttl: int) -> None:
        self._seen("set_meta")
        super().set_meta(cert_id, meta, ttl)

    def delete(self, cert_id: str) -> None:
        self._seen("delete")
        super().delete(cert_id)

    def entries(self) -> Iterator[Any]:
        self._seen("entries")
        for entry in super().entries():
            self._seen("entries: next")  # still inside the mutex
            yield entry

    def close(self) -> None:
        self._seen("close")


def _every_call(cache: Cache) -> None:
    cache.set(cert_id(1), der_for("one"), 600, meta={"m": 1})
    cache.get(cert_id(1))
    cache.get_many([cert_id(1), cert_id(2)])
    cache.set_meta(cert_id(2), {"m": 2}, 600)
    assert len(cache.entries()) == 2
    cache.delete(cert_id(1))
    cache.close()


def test_cache_holds_the_mutex_during_each_call_and_releases_it(tmp_path: Path) -> None:
    provider = WatchedDbm(tmp_path / "staples")
    cache = Cache(provider)
    assert cache.mutex is not None and cache.mutex.path == provider.mutex_path
    _every_call(cache)
    names = [name for name, _ in provider.calls]
    assert names == ["set", "get", "get_many", "set_meta", "entries", "entries: next",
                     "entries: next", "delete", "close"]  # fmt: skip
    assert all(held for _, held in provider.calls), provider.calls
    assert not cache.mutex.held


class CountedMutex(CacheMutex):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.acquired = 0

    def acquire(self) -> None:
        super().acquire()
        self.acquired += 1


def test_set_many_takes_the_mutex_once_for_the_whole_batch(tmp_path: Path) -> None:
    provider = WatchedDbm(tmp_path / "staples")
    mutex = CountedMutex(provider.mutex_path)
    cache = Cache(provider, mutex=mutex)
    writes = (StapleWrite(cert_id(n), der_for(f"d{n}"), 600, meta={"n": n}) for n in range(50))
    cache.set_many(writes)  # any iterable: the Cache makes it a list
    assert mutex.acquired == 1
    assert provider.calls == [("set_many", True)]  # no fallback to one set() each
    assert not mutex.held
    found = cache.get_many([cert_id(n) for n in range(50)])
    assert {cid: e.meta for cid, e in found.items()} == {cert_id(n): {"n": n} for n in range(50)}


def test_a_provider_without_needs_mutex_never_gets_the_mutex(tmp_path: Path) -> None:
    class WatchedLocal(LocalProvider):
        def get(self, cert_id: str) -> Any:
            seen.append(mutex.held)
            return super().get(cert_id)

    seen: list[bool] = []
    mutex = CacheMutex(str(tmp_path / "never.lock"))
    cache = Cache(WatchedLocal(tmp_path / "staples.db"), mutex=mutex)  # handed one anyway
    assert cache.mutex is None
    cache.get(cert_id(1))
    assert seen == [False]
    assert not (tmp_path / "never.lock").exists()


def test_mutex_is_released_when_the_call_fails(tmp_path: Path) -> None:
    cache = Cache(DbmProvider(tmp_path / "staples"))
    with pytest.raises(EntryTooLargeError):
        cache.set(cert_id(1), b"x" * 20000, 600)
    assert cache.mutex is not None and not cache.mutex.held
    assert cache.get(cert_id(1)) is NO_ENTRY


# -- the mutex itself -----------------------------------------------------------


def test_mutex_excludes_threads(tmp_path: Path) -> None:
    path = str(tmp_path / "m.lock")
    first, second = CacheMutex(path), CacheMutex(path)
    entered = threading.Event()

    def other() -> None:
        with second:
            entered.set()

    with first:
        assert first.held and first.held_by_me
        thread = threading.Thread(target=other)
        thread.start()
        # flock alone would let the thread in: it shares this process's lock file
        assert wait_until_blocked_at(thread, "self.thread_lock.acquire()", unless=entered)
        assert not entered.is_set()
    thread.join(timeout=5)
    assert entered.is_set()
    assert not first.held
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o007 == 0


def _hold(path: str, locked: Any, release: Any) -> None:
    with CacheMutex(path):
        locked.set()
        release.wait(timeout=30)


def test_mutex_excludes_other_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "staples.lock")
    ctx = multiprocessing.get_context("spawn")
    locked, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(path, locked, release))
    holder.start()
    try:
        assert locked.wait(timeout=30)
        cache = Cache(DbmProvider(tmp_path / "staples"))
        done = threading.Event()
        reader = threading.Thread(target=lambda: (cache.get(cert_id(1)), done.set()))
        reader.start()
        wait_for_blocked_lock(Path(path), "FLOCK")  # the read waits in the kernel for the other process
        assert not done.is_set(), "the read did not wait for the other process's mutex"
        release.set()
        assert done.wait(timeout=10)
        reader.join()
    finally:
        release.set()
        holder.join(timeout=10)


def test_mutex_in_a_forked_child_is_its_own(tmp_path: Path) -> None:
    path = str(tmp_path / "m.lock")
    ctx = multiprocessing.get_context("fork")
    locked, release = ctx.Event(), ctx.Event()
    with CacheMutex(path):
        child = ctx.Process(target=_hold, args=(path, locked, release))
        child.start()
        # The child waits for our flock in the kernel, through a descriptor of
        # its own: not through ours (it would get in), nor on a thread lock it
        # inherited held (it would wait for ever, and not in the kernel).
        wait_for_blocked_lock(Path(path), "FLOCK")
        assert not locked.is_set()
    assert locked.wait(30)  # and it gets the mutex once we let go
    release.set()
    child.join(30)
    assert child.exitcode == 0


# -- the Cache wrapper's errors -------------------------------------------------


class Failing(DbmProvider):
    def __init__(self, path: Path, error: BaseException) -> None:
        super().__init__(path)
        self.uri = f"dbm:{path}"
        self.error = error

    def get(self, cert_id: str) -> Any:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [OSError(5, "Input/output error"), MemcacheUnexpectedCloseError(), RedisConnectionError("refused")],
)
def test_store_errors_become_cache_unavailable_naming_the_uri(tmp_path: Path, error: Exception) -> None:
    cache = Cache(Failing(tmp_path / "staples", error))
    with pytest.raises(CacheUnavailableError, match=str(tmp_path / "staples")) as info:
        cache.get(cert_id(1))
    assert info.value.__cause__ is error


def test_the_cache_password_stays_out_of_error_messages(tmp_path: Path) -> None:
    provider = Failing(tmp_path / "staples", OSError("refused"))
    provider.uri = "redis://:s3cret@cache:6379/0"
    with pytest.raises(CacheUnavailableError) as info:
        Cache(provider).get(cert_id(1))
    assert "s3cret" not in str(info.value)
    assert "redis://:***@cache:6379/0" in str(info.value)


def test_programming_errors_are_not_disguised(tmp_path: Path) -> None:
    cache = Cache(Failing(tmp_path / "staples", TypeError("bug")))
    with pytest.raises(TypeError):
        cache.get(cert_id(1))
