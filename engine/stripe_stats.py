"""The shared figures of the striped fetch locks (DESIGN.md 2.2).

Every stripe counts its acquisitions, contention, waits and holds, and shows
its current holder, where any process on the host can read them at any
moment without taking a lock: a small file, ``stripes.stats``, in the lock
directory, mapped with mmap by every process that uses the stripes.

Layout (little-endian): a 64-byte header (magic, version, stripe count,
record size), then one 192-byte record per stripe::

    seq, acquisitions, contended, reentries,
    total_wait_ns, max_wait_ns, total_hold_ns, max_hold_ns   8 x u64
    holder_pid (0: none)                                     i64
    holder_start (process start, clock ticks since boot)     u64
    holder_since (Unix time)                                 f64
    holder_cert_id (UTF-8, NUL-padded, truncated)            104 bytes

Only the process holding a stripe writes its record, so writers of one
record are already serialised by the stripe itself. Readers are protected
from torn reads by ``seq``, a seqlock: odd while a write is under way, so a
reader retries until it sees the same even value before and after its copy.
A writer killed half-way (a window of a microsecond or so) leaves ``seq``
odd; the next holder of the stripe repairs it, and until then a reader
waits a short while (50 ms) for that record and returns what it read.

CPython issues no store barrier between the separate writes; on x86 stores
are seen in order, on weakly ordered CPUs a torn read is improbable but not
impossible. These are statistics, not the lock: the lock is the flock.

The file is replaced (write a new one, rename over it), never truncated in
place: a process that still maps the old file keeps a valid mapping.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from engine.clock import iso
from engine.errors import StapleError

STATS_FILE = "stripes.stats"
FILE_MODE = 0o640
MAX_STRIPES = 4096

_MAGIC = b"STPLSTRP"
_VERSION = 1
_HEADER = struct.Struct("<8sIII")  # magic, version, stripes, record size
_HEADER_SIZE = 64
_RECORD = struct.Struct("<8QqQd104s")
_SEQ = struct.Struct("<Q")
_COUNTERS = struct.Struct("<8Q")  # seq and the seven counters
_BODY = struct.Struct("<7QqQd104s")  # everything after seq
_REENTRIES = struct.Struct("<Q")
_REENTRIES_AT = 24
_CERT_ID_SIZE = 104

# How long a reader waits for a live writer that seems stuck half-way (a
# write takes microseconds; a stopped process can take forever).
_READ_PATIENCE = 0.05


class StripeStatsError(StapleError):
    """A stats file that is not one we wrote (bad magic, version or size)."""

    reason = "stripe_stats"


@dataclass(frozen=True)
class StripeStats:
    """One stripe's figures as read at one moment. Times in seconds."""

    stripe: int
    acquisitions: int
    contended: int  # acquisitions whose first non-blocking try failed
    reentries: int  # holds by a thread that already held the stripe
    total_wait: float
    max_wait: float
    total_hold: float
    max_hold: float
    holder_cert_id: str | None
    holder_pid: int | None
    holder_since: float | None
    #: False when there is no holder, or the recorded holder process is gone
    #: (it crashed: the kernel released its lock; the next acquirer
    #: overwrites the record)
    holder_alive: bool

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["holder_since"] = iso(self.holder_since)
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

    A zombie counts as dead: its descriptors, and so its flocks, are gone.
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


def _expected_size(stripes: int) -> int:
    return _HEADER_SIZE + stripes * _RECORD.size


def _header_stripes(header: bytes, size: int) -> int | None:
    """The stripe count of a well-formed header, else None."""
    if len(header) < _HEADER.size:
        return None
    magic, version, stripes, record_size = _HEADER.unpack_from(header)
    if magic != _MAGIC or version != _VERSION or record_size != _RECORD.size:
        return None
    if not 1 <= stripes <= MAX_STRIPES or size < _expected_size(stripes):
        return None
    return stripes


def _create(directory: Path, stripes: int) -> None:
    tmp = directory / f".{STATS_FILE}.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        header = _HEADER.pack(_MAGIC, _VERSION, stripes, _RECORD.size).ljust(_HEADER_SIZE, b"\0")
        # Every byte written, not a sparse ftruncate: a mapped page with no
        # block behind it gets one at the first store into it, and on a full
        # disk that store is a SIGBUS that kills the process.
        data = header.ljust(_expected_size(stripes), b"\0")
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)
    os.replace(tmp, directory / STATS_FILE)


def _allocate(path: Path, fd: int, size: int) -> None:
    """Give every page of the file a block before it is mapped (see _create).

    A no-op for files we wrote in full; a file left sparse by an older
    version gets its blocks now, or we learn now that the disk is full,
    while it is still an error and not a SIGBUS.
    """
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return  # a file system without fallocate: nothing better to do
        raise StripeStatsError(f"{path}: cannot allocate the stats file: {exc.strerror}") from exc


class StatsFile:
    """The stats file mapped for writing by a process that uses the stripes."""

    def __init__(self, directory: Path, stripes: int) -> None:
        """Open the stats file, creating it when missing.

        A file with another stripe count, or one that is not ours, is
        replaced by a fresh one: its figures are lost, and a process still
        using the old count keeps writing to the old, now unlinked, file.
        """
        self.stripes = stripes
        # The directory's flock serialises creation, so two processes
        # starting together never map two different files.
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
                try:
                    size = os.fstat(fd).st_size
                    if _header_stripes(os.pread(fd, _HEADER.size, 0), size) == stripes:
                        _allocate(path, fd, _expected_size(stripes))
                        self._mm = mmap.mmap(fd, _expected_size(stripes))
                        return
                finally:
                    os.close(fd)
                _create(directory, stripes)
            raise StripeStatsError(f"{path}: could not create a stats file for {stripes} stripes")
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        self._mm.close()

    # Writers: called only by the holder of the stripe.

    def record_acquire(
        self, stripe: int, contended: bool, wait_ns: int, pid: int, start: int, since: float, cert_id: bytes
    ) -> None:
        mm, at = self._mm, _HEADER_SIZE + stripe * _RECORD.size
        seq, acq, cont, reent, tw, mw, th, mh = _COUNTERS.unpack_from(mm, at)
        seq |= 1  # already odd: its last writer died mid-write; we repair it
        _SEQ.pack_into(mm, at, seq)
        _BODY.pack_into(
            mm, at + 8, acq + 1, cont + contended, reent, tw + wait_ns, max(mw, wait_ns), th, mh,
            pid, start, since, cert_id[:_CERT_ID_SIZE],
        )  # fmt: skip
        _SEQ.pack_into(mm, at, seq + 1)

    def record_reentry(self, stripe: int) -> None:
        mm, at = self._mm, _HEADER_SIZE + stripe * _RECORD.size
        seq, _, _, reent = _COUNTERS.unpack_from(mm, at)[:4]
        seq |= 1
        _SEQ.pack_into(mm, at, seq)
        _REENTRIES.pack_into(mm, at + _REENTRIES_AT, reent + 1)
        _SEQ.pack_into(mm, at, seq + 1)

    def record_release(self, stripe: int, hold_ns: int) -> None:
        mm, at = self._mm, _HEADER_SIZE + stripe * _RECORD.size
        seq, acq, cont, reent, tw, mw, th, mh = _COUNTERS.unpack_from(mm, at)
        seq |= 1
        _SEQ.pack_into(mm, at, seq)
        _BODY.pack_into(mm, at + 8, acq, cont, reent, tw, mw, th + hold_ns, max(mh, hold_ns), 0, 0, 0.0, b"")
        _SEQ.pack_into(mm, at, seq + 1)

    # Readers.

    def _slice(self, at: int, length: int) -> bytes:
        return self._mm[at : at + length]

    def read(self, stripe: int) -> StripeStats:
        return _read_record(self._slice, stripe)

    def read_all(self) -> list[StripeStats]:
        return [_read_record(self._slice, stripe) for stripe in range(self.stripes)]


def _read_record(read: Callable[[int, int], bytes], stripe: int) -> StripeStats:
    """One record, read with ``read(offset, length)`` until no write tore it."""
    at = _HEADER_SIZE + stripe * _RECORD.size
    deadline = None
    delay = 0.0001
    while True:
        data = read(at, _RECORD.size)
        before = _SEQ.unpack_from(data)[0]
        record = _RECORD.unpack_from(data)
        if not before & 1 and _SEQ.unpack_from(read(at, _SEQ.size))[0] == before:
            break
        # A write is under way, or its writer died half-way (the record's
        # pid cannot tell: it may be the half-written one).
        now = time.monotonic()
        if deadline is None:
            deadline = now + _READ_PATIENCE
        elif now >= deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.005)
    _, acq, cont, reent, tw, mw, th, mh, pid, start, since, cert_id = record
    holding = pid > 0
    return StripeStats(
        stripe=stripe,
        acquisitions=acq,
        contended=cont,
        reentries=reent,
        total_wait=tw / 1e9,
        max_wait=mw / 1e9,
        total_hold=th / 1e9,
        max_hold=mh / 1e9,
        holder_cert_id=cert_id.rstrip(b"\0").decode("utf-8", "replace") if holding else None,
        holder_pid=pid if holding else None,
        holder_since=since if holding else None,
        holder_alive=holding and process_alive(pid, start),
    )


def read_stats(directory: Path) -> list[StripeStats]:
    """Every stripe's figures, from any process, without taking any lock.

    Needs only read access to the stats file. Returns [] when no process has
    used stripes in ``directory`` yet; raises StripeStatsError when the file
    there is not a stats file we can read.
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
            raise StripeStatsError(f"{path}: not a stripe stats file of version {_VERSION} (or truncated)")
        # pread, not a mapping: reading a page with no block behind it
        # (a sparse file, a file truncated under us) is a SIGBUS in a map,
        # and zeros or a short read here
        def read(at: int, length: int) -> bytes:
            return os.pread(fd, length, at).ljust(length, b"\0")

        return [_read_record(read, stripe) for stripe in range(stripes)]
    finally:
        os.close(fd)
