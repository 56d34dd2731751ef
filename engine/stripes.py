"""Striped fetch locks (DESIGN.md 2.2).

Whoever holds a certificate's stripe may fetch for it. Not one lock per
certificate (100,000 OS objects), not one global lock (one slow responder
stalls everyone): a fixed number of stripes, and a certificate maps to one
by a stable hash of its cache id, the same in every process.

A stripe excludes the threads of this process and the other processes on
this host:

- One lock file per stripe, ``stripe-NNNN.lock``, taken with ``flock``.
  flock, not POSIX record locks: record locks belong to the process and are
  dropped when ANY descriptor of the file is closed. A flock belongs to the
  open file description and the kernel drops it when its holder dies, so a
  crashed holder never leaves a stripe locked.
- The threads of one process share that descriptor, and so the flock: a
  ``threading.Lock`` per stripe excludes them, and they wait on it without
  polling. Only the one thread that got it waits for the flock.
- A thread that already holds a stripe and asks for another certificate of
  the same stripe gets it at once (a re-entry, counted), rather than
  deadlocking on itself.
- One set of descriptors and thread locks per process and directory, shared
  by every StripedLocks on it, as engine.mutex does: two objects on one
  directory in one process exclude each other, and re-entry works across
  them.
- After a fork the child closes the inherited descriptors (closing never
  drops the parent's flock, which the same open file description still
  holds) and opens its own: an inherited one would share the parent's lock.

Processes must agree on the stripe count: with different counts they map a
certificate to different stripes and do not exclude each other (the worst
that follows is a duplicate fetch, since a holder looks in the cache again).
Holders are told apart by pid, so "host" means one pid namespace.

The figures every stripe records live in engine.stripe_stats.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import stat
import threading
import time
from pathlib import Path
from types import TracebackType

from engine.errors import InputError, StapleError
from engine.lockfile import open_lock_file
from engine.stripe_stats import (
    MAX_STRIPES,
    StatsFile,
    StripeStats,
    process_start,
    read_stats,
)

__all__ = [
    "DEFAULT_STRIPES",
    "Held",
    "StripeDirectoryError",
    "StripeStats",
    "StripeTimeoutError",
    "StripedLocks",
    "read_stats",
    "stripe_of",
]

DEFAULT_STRIPES = 64
DIRECTORY_MODE = 0o750

_CACHE_ID = re.compile(r"[0-9a-fA-F]{40}")
_get_ident = threading.get_ident
_monotonic_ns = time.monotonic_ns
_flock = fcntl.flock
_LOCK_TRY = fcntl.LOCK_EX | fcntl.LOCK_NB
_FOREVER = threading.TIMEOUT_MAX


class StripeTimeoutError(StapleError):
    """A stripe was not acquired within the time allowed."""

    reason = "lock_timeout"

    def __init__(self, message: str, stripe: int) -> None:
        super().__init__(message)
        self.stripe = stripe


class LocksUnavailableError(StapleError):
    """The lock directory or a file in it cannot be used (read-only, full, no access)."""

    reason = "locks_unavailable"


class StripeDirectoryError(InputError):
    """A lock directory we refuse to use (not a directory, writable by others)."""

    reason = "bad_lock_directory"


def stripe_of(cert_id: str, stripes: int) -> int:
    """The stripe of a certificate: the same in every process and every run.

    A cache id (40 hex digits: the SHA-1 of the certificate's DER) maps by
    its first 32 bits, in either case; any other string by the first 32
    bits of its own SHA-1. Never Python's hash(), which is salted per process.
    """
    if len(cert_id) == 40 and _CACHE_ID.fullmatch(cert_id):
        return int(cert_id[:8], 16) % stripes
    return int.from_bytes(hashlib.sha1(cert_id.encode("utf-8", "surrogatepass")).digest()[:4], "big") % stripes


def _prepare_directory(directory: Path) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(directory, DIRECTORY_MODE)
    except FileExistsError:
        pass
    else:
        os.chmod(directory, DIRECTORY_MODE)  # exactly, whatever the umask
    info = os.stat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise StripeDirectoryError(f"lock directory {directory} is not a directory")
    if info.st_mode & stat.S_IWOTH:
        # Anyone could then hold every stripe, or plant files for us to open.
        raise StripeDirectoryError(
            f"lock directory {directory} is writable by everyone (mode {stat.S_IMODE(info.st_mode):o}); "
            f"make it {DIRECTORY_MODE:o}"
        )


class _ProcessStripes:
    """This process's side of one lock directory: descriptors, thread locks, owners."""

    def __init__(self, directory: Path, stripes: int) -> None:
        self.directory = directory
        self.stripes = stripes
        self.users = 0
        self.stats = StatsFile(directory, stripes)
        self._reset()

    def _reset(self) -> None:
        self.thread_locks = [threading.Lock() for _ in range(self.stripes)]
        self.owners = [0] * self.stripes  # thread ident of each stripe's holder
        self.fds = [-1] * self.stripes
        self.pid = os.getpid()
        self.start = process_start(self.pid)
        self.generation = getattr(self, "generation", 0) + 1

    def after_fork(self) -> None:
        for fd in self.fds:
            if fd >= 0:
                os.close(fd)
        self._reset()

    def close(self) -> None:
        held = [stripe for stripe, owner in enumerate(self.owners) if owner]
        if held:
            raise RuntimeError(f"cannot close {self.directory}: stripes {held} are still held")
        for fd in self.fds:
            if fd >= 0:
                os.close(fd)
        self.fds = [-1] * self.stripes
        self.stats.close()

    def acquire(self, held: Held) -> None:
        stripe = held.stripe
        me = _get_ident()
        if self.owners[stripe] == me:
            self.stats.record_reentry(stripe)
            held.reentered = True
            return
        timeout = held.timeout
        began = _monotonic_ns()
        # beyond TIMEOUT_MAX (days) is for ever
        deadline = None if timeout is None or timeout >= _FOREVER else began + int(timeout * 1e9)
        thread_lock = self.thread_locks[stripe]
        contended = False
        if not thread_lock.acquire(False):
            contended = True
            if deadline is None:
                thread_lock.acquire()
            else:
                remaining = (deadline - _monotonic_ns()) / 1e9
                if remaining <= 0 or not thread_lock.acquire(True, remaining):
                    raise self._timeout(held)
        try:
            fd = self.fds[stripe]
            if fd < 0:
                path = f"{self.directory}/stripe-{stripe:04d}.lock"
                try:
                    fd = self.fds[stripe] = open_lock_file(path)
                except OSError as exc:
                    raise LocksUnavailableError(f"lock file {path}: cannot open: {exc.strerror}") from None
            try:
                _flock(fd, _LOCK_TRY)
            except BlockingIOError:
                contended = True
                self._wait_flock(fd, deadline, held)
            acquired = _monotonic_ns()
            wait_ns = acquired - began
            self.stats.record_acquire(
                stripe, contended, wait_ns, self.pid, self.start, time.time(), held.cert_id.encode("utf-8", "replace")
            )
        except BaseException:
            if fd >= 0:
                _flock(fd, fcntl.LOCK_UN)  # a no-op unless we got it
            thread_lock.release()
            raise
        self.owners[stripe] = me
        held.waited = wait_ns / 1e9
        held.contended = contended
        held._acquired_ns = acquired

    def _wait_flock(self, fd: int, deadline: int | None, held: Held) -> None:
        if deadline is None:
            _flock(fd, fcntl.LOCK_EX)  # sleeps in the kernel, GIL released
            return
        # flock has no timeout: poll, briefly at first (fetches are short)
        delay = 0.001
        while True:
            remaining = (deadline - _monotonic_ns()) / 1e9
            if remaining <= 0:
                raise self._timeout(held)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.02)
            try:
                _flock(fd, _LOCK_TRY)
                return
            except BlockingIOError:
                pass

    def release(self, held: Held) -> None:
        if held.reentered:
            return
        stripe = held.stripe
        try:
            self.stats.record_release(stripe, _monotonic_ns() - held._acquired_ns)
        finally:
            self.owners[stripe] = 0
            try:
                _flock(self.fds[stripe], fcntl.LOCK_UN)
            finally:
                self.thread_locks[stripe].release()

    def _timeout(self, held: Held) -> StripeTimeoutError:
        holder = self.stats.read(held.stripe)
        if holder.holder_pid is None:
            by = "no holder recorded: it has just let go"
        else:
            whose = "this process" if holder.holder_pid == self.pid else f"pid {holder.holder_pid}"
            by = (
                f"held for {max(0.0, time.time() - (holder.holder_since or 0.0)):.3f} s "
                f"by {whose} for certificate {holder.holder_cert_id}"
            )
        return StripeTimeoutError(
            f"stripe {held.stripe} of {self.directory} for certificate {held.cert_id} "
            f"not acquired within {held.timeout} s: {by}",
            held.stripe,
        )


_registry_lock = threading.Lock()
_registry: dict[str, _ProcessStripes] = {}


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()  # another thread may have held it at fork
    for process_stripes in _registry.values():
        process_stripes.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Held:
    """One hold of a stripe: ``with locks.hold(cert_id) as held: ...``.

    After entering: ``stripe``; ``waited``, the seconds spent acquiring it;
    ``contended``, whether the first non-blocking try failed; ``reentered``,
    whether this thread already held the stripe (for another certificate).
    """

    __slots__ = (
        "cert_id", "stripe", "timeout", "waited", "contended", "reentered",
        "_owner", "_generation", "_acquired_ns",
    )  # fmt: skip

    def __init__(self, owner: _ProcessStripes, cert_id: str, stripe: int, timeout: float | None) -> None:
        self.cert_id = cert_id
        self.stripe = stripe
        self.timeout = timeout
        self.waited = 0.0
        self.contended = False
        self.reentered = False
        self._owner = owner
        self._generation = 0
        self._acquired_ns = 0

    def __enter__(self) -> Held:
        if self._generation:
            raise RuntimeError("a Held is entered once; call hold() again")
        owner = self._owner
        owner.acquire(self)
        self._generation = owner.generation
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Entered before a fork: in the child it holds nothing.
        if self._generation == self._owner.generation:
            self._owner.release(self)

    def __repr__(self) -> str:
        return f"Held(stripe={self.stripe}, cert_id={self.cert_id!r}, waited={self.waited:.6f})"


class StripedLocks:
    """The stripes of one lock directory, as seen by this process.

    ``directory`` is created mode 0o750 when missing and refused when
    writable by everyone; its files are created 0o640. ``stripes`` must be
    the same for every process on the directory (see the module docstring).
    Opening the directory with a stripe count other than the existing stats
    file's replaces that file with a fresh one: its figures are lost.
    """

    def __init__(self, directory: Path, stripes: int = DEFAULT_STRIPES) -> None:
        if isinstance(stripes, bool) or not isinstance(stripes, int) or not 1 <= stripes <= MAX_STRIPES:
            raise ValueError(f"stripes must be an integer from 1 to {MAX_STRIPES}, not {stripes!r}")
        directory = Path(directory)
        try:
            _prepare_directory(directory)
        except OSError as exc:
            raise LocksUnavailableError(f"lock directory {directory}: cannot create it: {exc.strerror}") from None
        key = os.path.realpath(directory)
        with _registry_lock:
            shared = _registry.get(key)
            if shared is None:
                try:
                    shared = _registry[key] = _ProcessStripes(Path(key), stripes)
                except OSError as exc:
                    raise LocksUnavailableError(
                        f"lock directory {directory}: {exc.filename or directory}: {exc.strerror}"
                    ) from None
            elif shared.stripes != stripes:
                raise ValueError(f"{directory} is already open in this process with {shared.stripes} stripes")
            shared.users += 1
        self.directory = directory
        self.stripes = stripes
        self._shared: _ProcessStripes | None = shared

    def stripe_of(self, cert_id: str) -> int:
        return stripe_of(cert_id, self.stripes)

    def hold(self, cert_id: str, timeout: float | None = None) -> Held:
        """A hold of ``cert_id``'s stripe, acquired on entering the ``with``.

        ``timeout``: None waits for ever, 0 tries once, otherwise seconds.
        Raises StripeTimeoutError when the stripe is not acquired in time.
        """
        shared = self._shared
        if shared is None:
            raise ValueError(f"StripedLocks on {self.directory} is closed")
        return Held(shared, cert_id, stripe_of(cert_id, self.stripes), timeout)

    def stats(self) -> list[StripeStats]:
        """Every stripe's figures (what read_stats(directory) returns)."""
        if self._shared is None:
            raise ValueError(f"StripedLocks on {self.directory} is closed")
        return self._shared.stats.read_all()

    def close(self) -> None:
        """Let go of the directory; the last user in the process closes its files.

        Raises RuntimeError, and stays open, when that would drop a stripe
        some thread of this process still holds.
        """
        shared = self._shared
        if shared is None:
            return
        with _registry_lock:
            if shared.users == 1:
                shared.close()
                if _registry.get(str(shared.directory)) is shared:
                    del _registry[str(shared.directory)]
            shared.users -= 1
        self._shared = None

    def __enter__(self) -> StripedLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StripedLocks({str(self.directory)!r}, stripes={self.stripes})"
