"""The engine's cache mutex (docs/design.md, "Providers and the cache mutex").

Taken around one read or write of a provider that is not safe for
concurrent use on its own (a dbm file), the way httpd's socache_dbm is
driven under its cache mutex. It must exclude the other threads of this
process and the other processes on this host:

- ``fcntl.flock`` excludes processes. A flock belongs to an open file
  description, so the threads of one process that share the descriptor all
  "hold" it at once: a ``threading.Lock`` excludes them.
- The lock file is opened once per process and path, and shared by every
  CacheMutex for that path, so that two Cache objects on one dbm file in
  one process exclude each other through the same thread lock.
- After a fork the child opens its own descriptor: an inherited one would
  share the parent's flock (see _forget_in_child).

The mutex is never held across network I/O, so acquiring it blocks without
a timeout.
"""

from __future__ import annotations

import fcntl
import os
import threading

from engine.locks.lockfile import open_lock_file
from engine.locks.per_process import PerProcess



class _LockFile:
    """One lock file of this process: its descriptor and its thread lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.thread_lock = threading.Lock()
        self.fd: int | None = None
        self.holder: int | None = None  # thread ident of the current holder

    def acquire(self) -> None:
        self.thread_lock.acquire()
        try:
            if self.fd is None:
                self.fd = open_lock_file(self.path)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.thread_lock.release()
            raise
        self.holder = threading.get_ident()

    def release(self) -> None:
        self.holder = None
        try:
            if self.fd is not None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self.thread_lock.release()


def _forget_in_child(lock_file: _LockFile) -> bool:
    # In a forked child the parent's thread locks are not ours (one may be
    # held by a thread that does not exist here), nor are its descriptors.
    # Closing our copy of a descriptor leaves the parent's flock alone: it
    # goes with the parent's own copy.
    if lock_file.fd is not None:
        os.close(lock_file.fd)
    return False


_lock_files: PerProcess[_LockFile] = PerProcess(_forget_in_child)


def _lock_file(path: str) -> _LockFile:
    key = os.path.abspath(path)
    with _lock_files.locked() as lock_files:
        lock_file = lock_files.get(key)
        if lock_file is None:
            lock_file = lock_files[key] = _LockFile(key)
        return lock_file


class CacheMutex:
    """Excludes threads and processes around one provider call."""

    def __init__(self, path: str) -> None:
        self.path = path

    @property
    def _lock(self) -> _LockFile:
        return _lock_file(self.path)

    def acquire(self) -> None:
        self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    @property
    def held(self) -> bool:
        """True while some thread of this process holds the mutex."""
        return self._lock.holder is not None

    @property
    def held_by_me(self) -> bool:
        """True while the calling thread holds the mutex."""
        return self._lock.holder == threading.get_ident()

    def __enter__(self) -> "CacheMutex":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"CacheMutex({self.path!r})"
