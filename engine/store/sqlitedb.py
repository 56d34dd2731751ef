"""Opening staplectl's SQLite databases without ever dropping SQLite's locks.

The local store (``staples.db``) and the worker's state (``worker.db``) are
shared by the prefetch service and every one-shot command. SQLite guards
that sharing with POSIX advisory locks (fcntl), and those belong to the
*process*, not to a descriptor: closing any descriptor of the database file
drops every lock the process holds on it, SQLite's own included (SQLite's
"How To Corrupt An SQLite Database File", section 2.2). Another process
that then closes its connection takes itself for the last user,
checkpoints, and deletes the -wal and -shm files while we still write into
them: our writes reach a deleted file and nobody else ever sees them. So:

- Nothing here opens the database, -wal or -shm file itself. SQLite creates
  the file; its mode is set afterwards with chmod(2) by path, which opens
  no descriptor. The -wal and -shm files copy the database file's mode
  when SQLite creates them, so they get the same.
- A connection opened before a fork is never used by the child, nor closed
  by it (``Connections``): its unlock and checkpoint logic would run
  against locks the child does not hold.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: the database and, copied by SQLite, its -wal and -shm files: they name
#: every certificate file and responder the operator configured
FILE_MODE = 0o640
DIRECTORY_MODE = 0o750
#: how long a writer waits for another process's transaction, in seconds
BUSY_TIMEOUT = 10.0
# SQLite's primary result codes (sqlite.org/rescode.html); extended codes
# carry them in their low byte.
_BUSY, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 8, 10, 11, 13, 14, 26


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """A connection in WAL mode with ``schema`` applied, creating the file if need be.

    A database created here is made FILE_MODE whatever the umask; an
    existing one keeps the mode its operator gave it. Raises OSError or
    sqlite3.Error; callers name the file in their own error.
    """
    _private_dir(path.parent)
    created = not os.path.lexists(path)
    try:
        # autocommit (isolation_level None): transactions are written out
        # as BEGIN IMMEDIATE ... COMMIT by the callers
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    except sqlite3.OperationalError as exc:
        raise _why_not(path) or exc
    try:
        if created:
            # Before the first write creates -wal and -shm, which copy this mode.
            os.chmod(path, FILE_MODE)
        # WAL: readers in other processes never wait for a writer.
        # synchronous=NORMAL is enough with WAL: a killed process loses
        # nothing committed; only a power cut may lose the last transactions.
        _while_busy(lambda: conn.execute("PRAGMA journal_mode=WAL"))
        conn.execute("PRAGMA synchronous=NORMAL")
        _while_busy(lambda: conn.executescript(schema))
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.OperationalError):
            # SQLite says only "unable to open database file" when it
            # cannot create the -wal or -shm file: say why
            raise _why_not(path) or exc
        raise
    return conn


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes, nor creates the file or its directory.

    For the commands that only read (check, inspect, export, the dashboard):
    a monitoring check running as another user needs read access alone.
    SQLite may still create the -wal and -shm files, which copy the
    database's mode.
    """
    base = f"file:{urllib.parse.quote(str(path))}?mode=ro"
    conn = None
    try:
        conn = sqlite3.connect(base, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
        return conn
    except sqlite3.OperationalError as exc:
        if conn is not None:
            conn.close()
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        # CANTOPEN on a read-only file system; READONLY in a directory we
        # may not write (another user's store, read by a monitoring agent)
        if code not in (_CANTOPEN, _READONLY) or os.path.lexists(f"{path}-shm"):
            raise _why_not(path, read_only=True) or exc
    # No -shm file, and none can be made (a read-only directory or file
    # system): then no writer has the database open in WAL mode either, so
    # it cannot change under us, and SQLite may read it as immutable.
    return sqlite3.connect(
        base + "&immutable=1", uri=True, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )


def _while_busy(step: Callable[[], object]) -> None:
    """Run a step of the opening, again while SQLite says the file is busy.

    Several processes opening a new database at once (the service and a
    command started with it) each want it exclusively to make it WAL and
    write its schema; SQLite answers SQLITE_BUSY at once, without waiting
    on the busy timeout, to the ones it would otherwise deadlock.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    delay = 0.001
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            busy = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF == _BUSY
            if not busy or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _why_not(path: Path, *, read_only: bool = False) -> OSError | None:
    """The OS error behind SQLite's "unable to open database file" or "disk
    I/O error" at open, if we can tell it: no access, a read-only file
    system, no space left.

    The file must be readable and writable, and its directory writable,
    since SQLite creates the -wal and -shm files beside it.
    """
    checks = [] if read_only else [(path.parent, os.W_OK | os.X_OK)]
    if os.path.lexists(path):
        checks.insert(0, (path, os.R_OK if read_only else os.R_OK | os.W_OK))
    for target, wanted in checks:
        if os.access(target, wanted, effective_ids=os.access in os.supports_effective_ids):
            continue
        try:
            read_only = bool(os.statvfs(target).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        code = errno.EROFS if read_only else errno.EACCES
        return OSError(code, os.strerror(code), str(target))
    return no_space(path)


def no_space(path: Path) -> OSError | None:
    """ENOSPC naming the file system, when the database's has no block left.

    SQLite reports a full disk as "disk I/O error" when it cannot even
    create its -shm file, and as "database or disk is full" otherwise.
    """
    try:
        full = os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return None
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path.parent)) if full else None


def _private_dir(directory: Path) -> None:
    """Create the database's directory DIRECTORY_MODE exactly, whatever the umask."""
    if directory.is_dir():
        return  # an existing one keeps its mode
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(directory, DIRECTORY_MODE)
    except FileExistsError:
        return
    os.chmod(directory, DIRECTORY_MODE)


def failure_kind(exc: sqlite3.Error, writing: bool) -> str:
    """What a SQLite error says of the file: "damaged", "unwritable" or "unavailable".

    A damaged file stays damaged until someone repairs it; an unwritable one
    (disk full, file system remounted read-only) can still be read; anything
    else (busy past the timeout, cannot open) may pass.
    """
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (_CORRUPT, _NOTADB):
        return "damaged"
    if code in (_READONLY, _FULL) or (code == _IOERR and writing):
        return "unwritable"
    return "unavailable"


class Connections:
    """The connections one object opened: lent to one operation at a time,
    and closed all at once, and only ours.

    Lent, not one per thread: a thread that ends would otherwise leave its
    connection open until close(), with up to 2 MB of page cache and three
    descriptors. The prefetch worker starts threads for each load's first
    look; at 100,000 certificates its 40 stale connections held 84 MiB.
    Up to IDLE wait for the next operation; more are closed when returned.

    A connection belongs to the process that opened it. After a fork the
    child opens its own, and ``close_all`` in the child leaves the parent's
    ones alone and referenced: dropping the last reference would close
    them too.
    """

    IDLE = 8

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[tuple[int, sqlite3.Connection]] = []
        self._inherited: list[sqlite3.Connection] = []
        #: ours, waiting for an operation; emptied by a fork and by close_all
        self._idle: list[sqlite3.Connection] = []
        #: bumped by close_all: what was lent before is closed, not taken back
        self._generation = 0
        _every.add(self)

    def add(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        with self._lock:
            self._open.append((os.getpid(), conn))
        return conn

    @contextmanager
    def lend(self, open_one: Callable[[], sqlite3.Connection]) -> Iterator[sqlite3.Connection]:
        """An idle connection, else a new one from ``open_one``; taken back when done."""
        with self._lock:
            generation = self._generation
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self.add(open_one())
        try:
            yield conn
        finally:
            self._take_back(conn, generation)

    def _take_back(self, conn: sqlite3.Connection, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # closed by close_all meanwhile
            if len(self._idle) < self.IDLE:
                self._idle.append(conn)
                return
            self._open.remove((os.getpid(), conn))
        _close(conn)

    def close_all(self) -> None:
        pid = os.getpid()
        with self._lock:
            ours = [conn for owner, conn in self._open if owner == pid]
            self._inherited += [conn for owner, conn in self._open if owner != pid]
            self._open, self._idle = [], []
            self._generation += 1
        for conn in ours:
            _close(conn)


def _close(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error:
        pass


_every: weakref.WeakSet[Connections] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # Another thread may have held a lock at the fork: it does not exist here.
    for connections in list(_every):
        connections._lock = threading.Lock()
        # the parent's, idle or lent: never used here (they stay in _open,
        # kept referenced by close_all)
        connections._idle = []
        connections._generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)
