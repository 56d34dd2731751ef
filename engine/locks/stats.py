"""The shared figures of the fetch locks (docs/locks.md, docs/design.md).

Every process that takes fetch locks counts, per stripe, acquisitions,
contention, waits and holds, and shows who holds what now, where any
process on the host can read them at any moment without taking a lock: a
small file, ``locks.stats``, in the lock directory, mapped with mmap by
every process that uses the locks.

A stripe here is a group of certificates for the figures only (the first
32 bits of the certificate id modulo the stripe count): the lock itself is
per certificate (engine.locks.fetchlocks). Grouping keeps the figures readable,
and the file small, with 100,000 certificates.

Layout (little-endian): a 64-byte header (magic, version, stripe count,
record size, slot count, slot size), one 64-byte record per stripe::

    seq, acquisitions, contended, reentries,
    total_wait_ns, max_wait_ns, total_hold_ns, max_hold_ns   8 x u64

then SLOTS holder slots of 144 bytes, one per hold in progress::

    seq                                                      u64
    pid (0: free)                                            i64
    start (process start, clock ticks since boot)            u64
    since (Unix time)                                        f64
    stripe                                                   i32 (+4 pad)
    cert_id (UTF-8, NUL-padded, truncated)                   104 bytes

Writers. Holders of different certificates of one stripe update its
record at once, so a record is written under a short lock: this process's
thread lock, then an open file description lock on the record's first
byte in this file. Both are held for the read-modify-write only
(microseconds, no I/O); a writer that cannot get it within 20 ms (another
process stopped in the middle of its update) skips that update rather than
wait: these are figures, and waiting for them would make two certificates
wait on each other. A holder claims a free slot by taking the OFD lock on
the slot's first byte and keeps it for the hold, so a slot has one writer;
a crashed holder's lock vanishes with it, and its slot shows it crashed
until the next claimer overwrites it: slots are searched from a home slot
per certificate, so that is at the latest the next hold of the same
certificate. When every slot is taken the hold is simply not shown.

Readers are protected from torn reads by ``seq``, a seqlock: odd while a
write is under way, so a reader retries until it sees the same even value
before and after its copy. A writer killed half-way leaves ``seq`` odd;
the next writer repairs it, and until then a reader waits a short while
(50 ms) for that record and returns what it read.

CPython issues no store barrier between the separate writes; on x86 stores
are seen in order, on weakly ordered CPUs a torn read is improbable but not
impossible. These are statistics, not the lock.

The file is replaced (write a new one, rename over it), never truncated in
place: a process that still maps the old file keeps a valid mapping.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.locks import ofd
from engine.clock import iso
from engine.errors import StapleError

STATS_FILE = "locks.stats"
FILE_MODE = 0o640
MAX_STRIPES = 4096
#: holds shown at once, host-wide; more are taken, just not shown
SLOTS = 1024

_MAGIC = b"STPLLOCK"
_VERSION = 1
_HEADER = struct.Struct("<8sIIIII")  # magic, version, stripes, record size, slots, slot size
_HEADER_SIZE = 64
_RECORD = struct.Struct("<8Q")  # seq and the seven counters
_BODY = struct.Struct("<7Q")
_SLOT = struct.Struct("<QqQdi4x104s")
_SLOT_BODY = struct.Struct("<qQdi4x104s")
_SEQ = struct.Struct("<Q")
_CERT_ID_SIZE = 104

# How long a reader waits for a live writer that seems stuck half-way (a
# write takes microseconds; a stopped process can take forever).
_READ_PATIENCE = 0.05
# How long a writer waits for another process's update of the same record.
_WRITE_PATIENCE = 0.02


class LockStatsError(StapleError):
    """A stats file that is not one we wrote (bad magic, version or size)."""

    reason = "lock_stats"


@dataclass(frozen=True)
class Holder:
    """One hold in progress, as its slot shows it."""

    cert_id: str
    pid: int
    since: float
    stripe: int
    #: False when the recorded process is gone (it crashed: the kernel
    #: released its locks; the next claimer overwrites the slot)
    alive: bool

    def to_dict(self) -> dict[str, Any]:
        return {"cert_sha1": self.cert_id, "pid": self.pid, "since": iso(self.since), "stripe": self.stripe,
                "alive": self.alive}  # fmt: skip


@dataclass(frozen=True)
class StripeStats:
    """One stripe's figures as read at one moment. Times in seconds.

    The counters are of holds that have ended (each counted when it ends);
    ``holders`` are those in progress.
    """

    stripe: int
    acquisitions: int
    contended: int  # acquisitions whose first non-blocking try failed
    reentries: int  # holds by a thread that already held the certificate
    total_wait: float
    max_wait: float
    total_hold: float
    max_hold: float
    #: the holds of its certificates in progress, the longest first
    holders: tuple[Holder, ...] = ()

    # The longest hold, for the one-line views (locks' table, the dashboard).

    @property
    def holder_cert_id(self) -> str | None:
        return self.holders[0].cert_id if self.holders else None

    @property
    def holder_pid(self) -> int | None:
        return self.holders[0].pid if self.holders else None

    @property
    def holder_since(self) -> float | None:
        return self.holders[0].since if self.holders else None

    @property
    def holder_alive(self) -> bool:
        return bool(self.holders) and self.holders[0].alive

    def to_dict(self) -> dict[str, Any]:
        data = {
            "stripe": self.stripe, "acquisitions": self.acquisitions, "contended": self.contended,
            "reentries": self.reentries, "total_wait_seconds": self.total_wait, "max_wait_seconds": self.max_wait,
            "total_hold_seconds": self.total_hold, "max_hold_seconds": self.max_hold,
        }  # fmt: skip
        data.update(
            holder_cert_sha1=self.holder_cert_id,
            holder_pid=self.holder_pid,
            holder_since=iso(self.holder_since),
            holder_alive=self.holder_alive,
            holders=[h.to_dict() for h in self.holders],
        )
        return data


# -- processes ----------------------------------------------------------------


def _proc_stat(pid: int) -> list[bytes] | None:
    """Fields 3.. of /proc/<pid>/stat; None when unreadable; [] when no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return [] if os.path.exists("/proc/self/stat") else None
    except OSError:
        return None
    # comm, field 2, is in parentheses and may itself hold spaces or ")"
    return data[data.rindex(b")") + 2 :].split()


def process_start(pid: int) -> int:
    """The process's start time in clock ticks since boot; 0 when unknown."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else 0


def process_alive(pid: int, start: int = 0) -> bool:
    """Whether ``pid`` is a live process; with ``start``, the same one as recorded.

    A zombie counts as dead: its descriptors, and so its locks, are gone.
    The start time guards against the pid having been reused since.
    """
    if pid <= 0:
        return False
    fields = _proc_stat(pid)
    if fields is None:  # no /proc: ask the kernel the portable way
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    if not fields or fields[0] in (b"Z", b"X"):
        return False
    return not start or int(fields[19]) == start


# -- the file -----------------------------------------------------------------


def _record_at(stripe: int) -> int:
    return _HEADER_SIZE + stripe * _RECORD.size


def _slot_at(stripes: int, slot: int) -> int:
    return _HEADER_SIZE + stripes * _RECORD.size + slot * _SLOT.size


def _expected_size(stripes: int) -> int:
    return _slot_at(stripes, SLOTS)


def _header_stripes(header: bytes, size: int) -> int | None:
    """The stripe count of a well-formed header, else None."""
    if len(header) < _HEADER.size:
        return None
    magic, version, stripes, record_size, slots, slot_size = _HEADER.unpack_from(header)
    if (magic, version, record_size, slots, slot_size) != (_MAGIC, _VERSION, _RECORD.size, SLOTS, _SLOT.size):
        return None
    if not 1 <= stripes <= MAX_STRIPES or size < _expected_size(stripes):
        return None
    return stripes


def _create(directory: Path, stripes: int) -> None:
    tmp = directory / f".{STATS_FILE}.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        header = _HEADER.pack(_MAGIC, _VERSION, stripes, _RECORD.size, SLOTS, _SLOT.size)
        # Every byte written, not a sparse ftruncate: a mapped page with no
        # block behind it gets one at the first store into it, and on a full
        # disk that store is a SIGBUS that kills the process.
        data = header.ljust(_HEADER_SIZE, b"\0").ljust(_expected_size(stripes), b"\0")
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)
    os.replace(tmp, directory / STATS_FILE)


def _allocate(path: Path, fd: int, size: int) -> None:
    """Give every page of the file a block before it is mapped (see _create)."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return  # a file system without fallocate: nothing better to do
        raise LockStatsError(f"{path}: cannot allocate the stats file: {exc.strerror}") from exc


def _write_seqlocked(mm: mmap.mmap, at: int, body: struct.Struct, *values: Any) -> None:
    seq = _SEQ.unpack_from(mm, at)[0] | 1  # already odd: its last writer died mid-write; we repair it
    _SEQ.pack_into(mm, at, seq)
    body.pack_into(mm, at + 8, *values)
    _SEQ.pack_into(mm, at, seq + 1)


class StatsFile:
    """The stats file mapped for writing by a process that takes fetch locks."""

    def __init__(self, directory: Path, stripes: int) -> None:
        """Open the stats file, creating it when missing.

        A file with another stripe count, or one that is not ours, is
        replaced by a fresh one: its figures are lost, and a process still
        using the old count keeps writing to the old, now unlinked, file.
        """
        self.directory = directory
        self.stripes = stripes
        self._open()

    def _open(self) -> None:
        self._mutex = threading.Lock()  # this process's writers of records and slot claims
        self._mine: set[int] = set()  # slots this process holds
        self.skipped = 0  # record updates given up (see the module docstring)
        # The directory's flock serialises creation, so two processes
        # starting together never map two different files.
        directory, stripes = self.directory, self.stripes
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX)
            path = directory / STATS_FILE
            for _ in range(2):
                try:
                    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
                except FileNotFoundError:
                    _create(directory, stripes)
                    continue
                size = os.fstat(fd).st_size
                if _header_stripes(os.pread(fd, _HEADER.size, 0), size) == stripes:
                    try:
                        _allocate(path, fd, _expected_size(stripes))
                        self._mm = mmap.mmap(fd, _expected_size(stripes))
                    except BaseException:
                        os.close(fd)
                        raise
                    self._fd = fd  # kept: the record and slot locks are taken on it
                    return
                os.close(fd)
                _create(directory, stripes)
            raise LockStatsError(f"{path}: could not create a stats file for {stripes} stripes")
        finally:
            os.close(dir_fd)

    def after_fork(self) -> None:
        """In a child: a description of its own, or it would share its parent's slot locks."""
        self._mm.close()
        os.close(self._fd)
        self._open()

    def close(self) -> None:
        self._mm.close()
        os.close(self._fd)

    # -- writers --------------------------------------------------------------

    def _update(self, stripe: int, change: Callable[[tuple[int, ...]], tuple[int, ...]]) -> None:
        at = _record_at(stripe)
        with self._mutex:
            if not ofd.try_lock(self._fd, at):
                deadline = time.monotonic() + _WRITE_PATIENCE
                while not ofd.try_lock(self._fd, at):
                    if time.monotonic() >= deadline:
                        self.skipped += 1
                        return
                    time.sleep(0.0005)
            try:
                counters = _RECORD.unpack_from(self._mm, at)[1:]
                _write_seqlocked(self._mm, at, _BODY, *change(counters))
            finally:
                ofd.unlock(self._fd, at)

    def record_hold(self, stripe: int, contended: bool, wait_ns: int, hold_ns: int) -> None:
        """A hold that has ended, counted whole: one update per hold. Holds in
        progress are in the slots."""

        def change(c: tuple[int, ...]) -> tuple[int, ...]:
            acq, cont, reent, tw, mw, th, mh = c
            return acq + 1, cont + contended, reent, tw + wait_ns, max(mw, wait_ns), th + hold_ns, max(mh, hold_ns)

        self._update(stripe, change)

    def record_reentry(self, stripe: int) -> None:
        self._update(stripe, lambda c: (*c[:2], c[2] + 1, *c[3:]))

    def claim_slot(self, home: int, stripe: int, pid: int, start: int, since: float, cert_id: bytes) -> int | None:
        """Show a hold in a free slot, the first from ``home`` on; its number, or None when every slot is taken.

        A certificate's home slot is the same for every holder: the slot a
        crashed holder left is where the next holder of its certificate
        looks first, and so overwrites it.
        """
        first = home % SLOTS
        with self._mutex:
            for n in range(SLOTS):
                slot = (first + n) % SLOTS
                if slot in self._mine:
                    continue
                at = _slot_at(self.stripes, slot)
                if ofd.try_lock(self._fd, at):
                    self._mine.add(slot)
                    break
            else:
                return None
        _write_seqlocked(self._mm, at, _SLOT_BODY, pid, start, since, stripe, cert_id[:_CERT_ID_SIZE])
        return slot

    def free_slot(self, slot: int) -> None:
        at = _slot_at(self.stripes, slot)
        _write_seqlocked(self._mm, at, _SLOT_BODY, 0, 0, 0.0, 0, b"")
        with self._mutex:
            ofd.unlock(self._fd, at)
            self._mine.discard(slot)

    # -- readers --------------------------------------------------------------

    def _slice(self, at: int, length: int) -> bytes:
        return self._mm[at : at + length]

    def read_all(self) -> list[StripeStats]:
        return _read_all(self._slice, self.stripes)

    def holder_of(self, cert_id: str) -> Holder | None:
        """Who holds ``cert_id`` now, as far as the slots show."""
        return next((h for h in _read_holders(self._slice, self.stripes) if h.cert_id == cert_id), None)


def _read_seqlocked(read: Callable[[int, int], bytes], at: int, layout: struct.Struct) -> tuple:
    """One record or slot, read with ``read(offset, length)`` until no write tore it."""
    deadline = None
    delay = 0.0001
    while True:
        data = read(at, layout.size)
        before = _SEQ.unpack_from(data)[0]
        if not before & 1 and _SEQ.unpack_from(read(at, _SEQ.size))[0] == before:
            break
        # A write is under way, or its writer died half-way.
        now = time.monotonic()
        if deadline is None:
            deadline = now + _READ_PATIENCE
        elif now >= deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.005)
    return layout.unpack_from(data)


def _read_holders(read: Callable[[int, int], bytes], stripes: int) -> list[Holder]:
    # One read of the whole region first: most slots are free, and only a
    # slot in use is read again under its seqlock.
    region = read(_slot_at(stripes, 0), SLOTS * _SLOT.size)
    holders = []
    for slot in range(SLOTS):
        if not _SLOT.unpack_from(region, slot * _SLOT.size)[1]:
            continue
        _, pid, start, since, stripe, cert_id = _read_seqlocked(read, _slot_at(stripes, slot), _SLOT)
        if pid <= 0 or not 0 <= stripe < stripes:
            continue
        name = cert_id.rstrip(b"\0").decode("utf-8", "replace")
        holders.append(Holder(name, pid, since, stripe, process_alive(pid, start)))
    holders.sort(key=lambda h: h.since)
    return holders


def _read_all(read: Callable[[int, int], bytes], stripes: int) -> list[StripeStats]:
    holders: dict[int, list[Holder]] = {}
    for holder in _read_holders(read, stripes):
        holders.setdefault(holder.stripe, []).append(holder)
    result = []
    for stripe in range(stripes):
        _, acq, cont, reent, tw, mw, th, mh = _read_seqlocked(read, _record_at(stripe), _RECORD)
        result.append(
            StripeStats(
                stripe=stripe,
                acquisitions=acq,
                contended=cont,
                reentries=reent,
                total_wait=tw / 1e9,
                max_wait=mw / 1e9,
                total_hold=th / 1e9,
                max_hold=mh / 1e9,
                holders=tuple(holders.get(stripe, ())),
            )
        )
    return result


def read_stats(directory: Path) -> list[StripeStats]:
    """Every stripe's figures, from any process, without taking any lock.

    Needs only read access to the stats file. Returns [] when no process has
    taken fetch locks in ``directory`` yet; raises LockStatsError when the
    file there is not a stats file we can read.
    """
    path = Path(directory) / STATS_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    try:
        size = os.fstat(fd).st_size
        stripes = _header_stripes(os.pread(fd, _HEADER.size, 0), size)
        if stripes is None:
            raise LockStatsError(f"{path}: not a fetch lock stats file of version {_VERSION} (or truncated)")

        # pread, not a mapping: reading a page with no block behind it
        # (a sparse file, a file truncated under us) is a SIGBUS in a map,
        # and zeros or a short read here
        def read(at: int, length: int) -> bytes:
            return os.pread(fd, length, at).ljust(length, b"\0")

        return _read_all(read, stripes)
    finally:
        os.close(fd)
