"""Fetch locks: one per certificate (docs/design.md, "Fetch locks").

Whoever holds a certificate's fetch lock may fetch for it; a holder looks
in the cache again after acquiring (someone else may just have stored a
fresh staple), so concurrent refreshes of one certificate cost one fetch.

Two different certificates never wait on each other, in one process or
across processes, whatever their number. Striped locks (a fixed number of
locks, a certificate mapped to one by hash) did make them wait: when a
CA's responder hangs, it hangs for all of that CA's certificates at once,
soon every stripe is held by one of them, and a healthy CA's certificates
queue behind a dead one's timeouts. So:

- One lock file, ``certificates.lock``, and a byte-range lock per
  certificate on it: the byte at offset = the first 60 bits of the
  certificate id (its SHA-1). Open file description locks (engine.locks.ofd)
  exclude processes like a flock, are dropped by the kernel when their
  holder dies (no stale lock after a crash), and, unlike POSIX record
  locks, are never dropped because some other code closed a descriptor of
  the file. The offset is past the end of the (empty) file: nothing is
  written. Two certificates whose ids share their first 60 bits would
  share a lock: about one pair in 10^8 at 100,000 certificates, and the
  cost is a wait, never a wrong answer.
- The threads of one process share the descriptor, and so its locks: a
  thread lock per certificate being held or waited for (made on demand,
  dropped with its last user) excludes them, and only the thread that got
  it asks the kernel.
- A thread that already holds a certificate and asks for it again gets it
  at once (a re-entry, counted) rather than deadlocking on itself.
- One descriptor and one table per process and directory, shared by every
  FetchLocks on it, as engine.store.mutex does: two objects on one directory in
  one process exclude each other, and re-entry works across them.
- After a fork the child closes the inherited descriptor (closing never
  drops the parent's locks, which the same open file description still
  holds) and opens its own: an inherited one would share the parent's locks.

Waiting with a timeout polls (1 ms, doubling to 20 ms): the kernel's wait
has no timeout. Without one it waits in the kernel.

The figures (engine.locks.stats) are grouped in stripes, the first 32 bits
of the certificate id modulo ``stripes``: a grouping for the figures only,
so that they stay readable with 100,000 certificates. Processes with
different stripe counts still exclude each other correctly; they only
replace each other's stats file. Holders are told apart by pid, so "host"
means one pid namespace.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from engine.bounds import DEFAULT_STRIPES
from engine.locks import ofd
from engine.errors import InputError, StapleError
from engine.locks.stats import MAX_STRIPES, StatsFile, StripeStats, process_start, read_stats
from engine.locks.lockfile import open_lock_file
from engine.locks.per_process import PerProcess

__all__ = [
    "DEFAULT_STRIPES",
    "FetchLocks",
    "Held",
    "LockDirectoryError",
    "LockTimeoutError",
    "LocksUnavailableError",
    "StripeStats",
    "lock_offset",
    "read_stats",
    "stripe_of",
]

DIRECTORY_MODE = 0o750
LOCK_FILE = "certificates.lock"

_CACHE_ID = re.compile(r"[0-9a-fA-F]{40}")
_get_ident = threading.get_ident
_monotonic_ns = time.monotonic_ns
_FOREVER = threading.TIMEOUT_MAX
T = TypeVar("T")


class LockTimeoutError(StapleError):
    """A certificate's fetch lock was not acquired within the time allowed."""

    reason = "lock_timeout"

    def __init__(self, message: str, cert_id: str) -> None:
        super().__init__(message)
        self.cert_id = cert_id


class LocksUnavailableError(StapleError):
    """The lock directory or a file in it cannot be used (read-only, full, no access)."""

    reason = "locks_unavailable"


class LockDirectoryError(InputError):
    """A lock directory we refuse to use (not a directory, writable by others)."""

    reason = "bad_lock_directory"


def _digest(cert_id: str) -> bytes:
    """The certificate id's SHA-1 (a cache id is one already, in hex, in either case)."""
    if len(cert_id) == 40 and _CACHE_ID.fullmatch(cert_id):
        return bytes.fromhex(cert_id)
    return hashlib.sha1(cert_id.encode("utf-8", "surrogatepass")).digest()


def stripe_of(cert_id: str, stripes: int) -> int:
    """The stripe a certificate's figures are counted in: the same in every process and run.

    The first 32 bits of its id modulo ``stripes``. Never Python's hash(),
    which is salted per process.
    """
    return _stripe(_digest(cert_id), stripes)


def lock_offset(cert_id: str) -> int:
    """The byte of ``certificates.lock`` that is the certificate's lock: its id's first 60 bits."""
    return _offset(_digest(cert_id))


def _stripe(digest: bytes, stripes: int) -> int:
    return int.from_bytes(digest[:4], "big") % stripes


def _offset(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "big") >> 4


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
        raise LockDirectoryError(f"lock directory {directory} is not a directory")
    if info.st_mode & stat.S_IWOTH:
        # Anyone could then hold every certificate, or plant files for us to open.
        raise LockDirectoryError(
            f"lock directory {directory} is writable by everyone (mode {stat.S_IMODE(info.st_mode):o}); "
            f"make it {DIRECTORY_MODE:o}"
        )


class _Entry:
    """One certificate being held or waited for in this process."""

    __slots__ = ("lock", "owner", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owner = 0  # thread ident of the holder
        self.users = 0  # the holder and the waiters: the entry goes with the last


class _ProcessLocks:
    """This process's side of one lock directory: the descriptor, the certificates in use."""

    def __init__(self, directory: Path, stripes: int) -> None:
        self.directory = directory
        self.stripes = stripes
        self.users = 0
        self.stats = StatsFile(directory, stripes)
        self.fd = -1
        self._reset()

    def _reset(self) -> None:
        self.mutex = threading.Lock()
        self.entries: dict[str, _Entry] = {}
        self.fd = -1
        self.pid = os.getpid()
        self.start = process_start(self.pid)
        self.generation = getattr(self, "generation", 0) + 1

    def after_fork(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.stats.after_fork()
        self._reset()

    def close(self) -> None:
        held = [cert_id for cert_id, entry in self.entries.items() if entry.owner]
        if held:
            raise RuntimeError(f"cannot close {self.directory}: certificates {held} are still held")
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.stats.close()

    def _descriptor(self) -> int:
        if self.fd < 0:
            with self.mutex:
                if self.fd < 0:
                    path = f"{self.directory}/{LOCK_FILE}"
                    try:
                        self.fd = open_lock_file(path, writable=True)
                    except OSError as exc:
                        raise LocksUnavailableError(f"lock file {path}: cannot open: {exc.strerror}") from None
        return self.fd

    def _let_go(self, cert_id: str, entry: _Entry) -> None:
        with self.mutex:
            entry.users -= 1
            if not entry.users:
                del self.entries[cert_id]

    def acquire(self, held: Held) -> None:
        cert_id, me = held.cert_id, _get_ident()
        with self.mutex:
            entry = self.entries.get(cert_id)
            if entry is None:
                entry = self.entries[cert_id] = _Entry()
            if entry.owner == me:
                held.reentered = True
            else:
                entry.users += 1
        if held.reentered:
            self._figures(self.stats.record_reentry, held.stripe)
            return
        timeout = held.timeout
        began = _monotonic_ns()
        # beyond TIMEOUT_MAX (days) is for ever
        deadline = None if timeout is None or timeout >= _FOREVER else began + int(timeout * 1e9)
        contended = False
        try:
            if not entry.lock.acquire(False):
                contended = True
                if deadline is None:
                    entry.lock.acquire()
                else:
                    remaining = (deadline - _monotonic_ns()) / 1e9
                    if remaining <= 0 or not entry.lock.acquire(True, remaining):
                        raise self._timeout(held)
        except BaseException:
            self._let_go(cert_id, entry)
            raise
        offset = held.offset
        try:
            fd = self._descriptor()
            if not ofd.try_lock(fd, offset):
                contended = True
                self._wait(fd, offset, deadline, held)
        except BaseException:
            entry.lock.release()
            self._let_go(cert_id, entry)
            raise
        acquired = _monotonic_ns()
        entry.owner = me
        held._wait_ns = wait_ns = acquired - began
        held.waited = wait_ns / 1e9
        held.contended = contended
        held._acquired_ns = acquired
        # The counters are written once, when the hold ends; until then the slot shows it.
        held._slot = self._figures(
            self.stats.claim_slot,
            offset, held.stripe, self.pid, self.start, time.time(), cert_id.encode("utf-8", "replace"),
        )  # fmt: skip

    @staticmethod
    def _figures(record: Callable[..., T], *args: Any) -> T | None:
        """Write the figures; an error there is never a reason to fail or keep a hold."""
        try:
            return record(*args)
        except OSError:
            return None

    def _wait(self, fd: int, offset: int, deadline: int | None, held: Held) -> None:
        if deadline is None:
            ofd.lock(fd, offset)  # sleeps in the kernel, GIL released
            return
        delay = 0.001
        while True:
            remaining = (deadline - _monotonic_ns()) / 1e9
            if remaining <= 0:
                raise self._timeout(held)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.02)
            if ofd.try_lock(fd, offset):
                return

    def release(self, held: Held) -> None:
        if held.reentered:
            return
        cert_id = held.cert_id
        entry = self.entries[cert_id]
        try:
            if held._slot is not None:
                self._figures(self.stats.free_slot, held._slot)
            hold_ns = _monotonic_ns() - held._acquired_ns
            self._figures(self.stats.record_hold, held.stripe, held.contended, held._wait_ns, hold_ns)
        finally:
            entry.owner = 0
            try:
                ofd.unlock(self.fd, held.offset)
            finally:
                entry.lock.release()
                self._let_go(cert_id, entry)

    def _timeout(self, held: Held) -> LockTimeoutError:
        holder = self.stats.holder_of(held.cert_id)
        if holder is None:
            by = "no holder shown: it has just let go"
        else:
            whose = "this process" if holder.pid == self.pid else f"pid {holder.pid}"
            by = f"held for {max(0.0, time.time() - holder.since):.3f} s by {whose}"
        return LockTimeoutError(
            f"fetch lock of certificate {held.cert_id} in {self.directory} not acquired within {held.timeout} s: {by}",
            held.cert_id,
        )


def _remade_in_child(process_locks: _ProcessLocks) -> bool:
    process_locks.after_fork()  # a descriptor of its own, no entries of the parent's threads
    return True


_directories: PerProcess[_ProcessLocks] = PerProcess(_remade_in_child)


class Held:
    """One hold of a certificate's fetch lock: ``with locks.hold(cert_id) as held: ...``.

    After entering: ``waited``, the seconds spent acquiring it;
    ``contended``, whether the first non-blocking try failed; ``reentered``,
    whether this thread already held it; ``stripe``, where it is counted.
    """

    __slots__ = (
        "cert_id", "stripe", "offset", "timeout", "waited", "contended", "reentered",
        "_owner", "_generation", "_acquired_ns", "_wait_ns", "_slot",
    )  # fmt: skip

    def __init__(self, owner: _ProcessLocks, cert_id: str, timeout: float | None) -> None:
        digest = _digest(cert_id)
        self.cert_id = cert_id
        self.stripe = _stripe(digest, owner.stripes)  # both from one digest: a hold is on the hot path
        self.offset = _offset(digest)
        self.timeout = timeout
        self.waited = 0.0
        self.contended = False
        self.reentered = False
        self._owner = owner
        self._generation = 0
        self._acquired_ns = 0
        self._wait_ns = 0
        self._slot: int | None = None

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
        return f"Held(cert_id={self.cert_id!r}, waited={self.waited:.6f})"


class FetchLocks:
    """The fetch locks of one lock directory, as seen by this process.

    ``directory`` is created mode 0o750 when missing and refused when
    writable by everyone; its files are created 0o640. ``stripes`` groups
    the figures (see the module docstring). Opening the directory with a
    stripe count other than the existing stats file's replaces that file
    with a fresh one: its figures are lost.
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
        with _directories.locked() as directories:
            shared = directories.get(key)
            if shared is None:
                try:
                    shared = directories[key] = _ProcessLocks(Path(key), stripes)
                except OSError as exc:
                    raise LocksUnavailableError(
                        f"lock directory {directory}: {exc.filename or directory}: {exc.strerror}"
                    ) from None
            elif shared.stripes != stripes:
                raise ValueError(f"{directory} is already open in this process with {shared.stripes} stripes")
            shared.users += 1
        self.directory = directory
        self.stripes = stripes
        self._shared: _ProcessLocks | None = shared

    def stripe_of(self, cert_id: str) -> int:
        return stripe_of(cert_id, self.stripes)

    def hold(self, cert_id: str, timeout: float | None = None) -> Held:
        """A hold of ``cert_id``'s fetch lock, acquired on entering the ``with``.

        ``timeout``: None waits for ever, 0 tries once, otherwise seconds.
        Raises LockTimeoutError when it is not acquired in time.
        """
        shared = self._shared
        if shared is None:
            raise ValueError(f"FetchLocks on {self.directory} is closed")
        return Held(shared, cert_id, timeout)

    def stats(self) -> list[StripeStats]:
        """Every stripe's figures (what read_stats(directory) returns)."""
        if self._shared is None:
            raise ValueError(f"FetchLocks on {self.directory} is closed")
        return self._shared.stats.read_all()

    def close(self) -> None:
        """Let go of the directory; the last user in the process closes its files.

        Raises RuntimeError, and stays open, when that would drop a lock
        some thread of this process still holds.
        """
        shared = self._shared
        if shared is None:
            return
        with _directories.locked() as directories:
            if shared.users == 1:
                shared.close()
                if directories.get(str(shared.directory)) is shared:
                    del directories[str(shared.directory)]
            shared.users -= 1
        self._shared = None

    def __enter__(self) -> FetchLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FetchLocks({str(self.directory)!r}, stripes={self.stripes})"
