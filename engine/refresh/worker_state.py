"""The prefetch worker's per-certificate state, readable by other processes.

``inspect`` and the dashboard show what the worker knows (last staple,
failures, last error, next attempt) while it runs, so the state lives in a
file and not only in the worker's memory: one SQLite database.

- WAL mode (engine.store.sqlitedb, which also says why nothing but SQLite ever
  opens the file), so readers in other processes never wait for the worker
  and always see the last committed state; ``busy_timeout`` so that two
  writers queue instead of failing.
- Writes are ``BEGIN IMMEDIATE``: they take the write lock at the start
  and wait there, instead of failing halfway with SQLITE_BUSY.
- One connection per process behind a lock: the worker's threads write one
  small row each after a job, and SQLite serialises writers anyway.
  Reopened after a fork (a connection must not cross one).
- The file is created 0o640 and its directory 0o750 (engine.store.sqlitedb): the
  state names every certificate file and responder the operator configured.
"""

from __future__ import annotations

import operator
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.clock import iso
from engine.refresh.actions import ActionState
from engine.errors import StapleError
from engine.paths import state_dir
from engine.store.sqlitedb import Connections, connect, connect_read_only

#: events kept per certificate: enough to see a pattern of failures
HISTORY = 20
#: a worker whose heartbeat is older than this is taken for dead
ALIVE_WITHIN = 30.0
#: heartbeats of workers dead this long are dropped
FORGET_AFTER = 86400.0
_CHUNK = 500  # host parameters per statement, under SQLite's old 999 limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certs (
    cert_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    path TEXT,
    responder TEXT,
    status TEXT,
    this_update REAL,
    next_update REAL,
    last_attempt REAL,
    last_success REAL,
    failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_reason TEXT,
    next_attempt REAL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cert_id TEXT NOT NULL,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_cert ON history (cert_id, id);
CREATE TABLE IF NOT EXISTS validated (
    cert_id TEXT PRIMARY KEY,
    sha256 BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS issued (
    cert_id TEXT PRIMARY KEY,
    issuer_sha256 BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    beat REAL NOT NULL,
    certificates INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS actions (
    name TEXT PRIMARY KEY,
    runs INTEGER NOT NULL,
    last_run REAL,
    last_success REAL,
    failures INTEGER NOT NULL,
    last_error TEXT,
    next_run REAL,
    pending INTEGER NOT NULL
);
"""
_ACTION_FIELDS = ("name", "runs", "last_run", "last_success", "failures", "last_error", "next_run", "pending")

_FIELDS = (
    "cert_id", "name", "path", "responder", "status", "this_update", "next_update",
    "last_attempt", "last_success", "failures", "last_error", "last_reason", "next_attempt",
)  # fmt: skip
_TIMES = ("this_update", "next_update", "last_attempt", "last_success", "next_attempt")
_PUT = f"INSERT OR REPLACE INTO certs ({', '.join(_FIELDS)}) VALUES ({', '.join('?' * len(_FIELDS))})"
_PUT_VALIDATED = "INSERT OR REPLACE INTO validated (cert_id, sha256) VALUES (?, ?)"
_PUT_ISSUED = "INSERT OR REPLACE INTO issued (cert_id, issuer_sha256) VALUES (?, ?)"
_ADD_HISTORY = "INSERT INTO history (cert_id, at, action, detail) VALUES (?, ?, ?, ?)"
_OVER = "SELECT cert_id FROM history WHERE cert_id BETWEEN ? AND ? GROUP BY cert_id HAVING count(*) > ?"
_TRIM = """
DELETE FROM history WHERE cert_id = :cert_id AND id <= coalesce(
    (SELECT id FROM history WHERE cert_id = :cert_id ORDER BY id DESC LIMIT 1 OFFSET :keep), -1)
"""


def _between(between: tuple[str, str] | None) -> tuple[str, tuple[str, ...]]:
    return ("", ()) if between is None else (" WHERE cert_id BETWEEN ? AND ?", between)


class StateStoreError(StapleError):
    """The state database cannot be opened, read or written."""

    reason = "state_store"


@dataclass(frozen=True, slots=True)  # slots: 100,000 of them live in a worker
class CertState:
    """What the worker knows of one certificate. Times are Unix seconds."""

    cert_id: str
    name: str
    path: str | None = None
    responder: str | None = None
    #: status of the last staple seen (good, revoked, unknown), None before any
    status: str | None = None
    this_update: float | None = None
    next_update: float | None = None
    last_attempt: float | None = None
    last_success: float | None = None
    #: consecutive failures; 0 after any success
    failures: int = 0
    last_error: str | None = None
    last_reason: str | None = None
    next_attempt: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """As every --json names it: ISO times, the CertID's hash as ``cert_sha1``."""
        data = asdict(self)
        for name in _TIMES:
            data[name] = iso(data[name])
        data = {"cert_sha1": data.pop("cert_id"), **data}
        return data


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    when: float
    action: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"when": iso(self.when), "event": self.action, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Heartbeat:
    worker_id: str
    pid: int
    started: float
    beat: float
    certificates: int

    def alive(self, now: float, max_age: float = ALIVE_WITHIN) -> bool:
        """Beat recently: a pid alone proves nothing (reused, other host, other namespace)."""
        return now - self.beat <= max_age

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "started": iso(self.started), "beat": iso(self.beat)}


def default_path() -> Path:
    return state_dir() / "worker.db"


class StateStore:
    def __init__(self, path: Path | None = None, *, read_only: bool = False) -> None:
        """``read_only``: for those that only show the state (inspect, the
        dashboard): no write, no schema, not even the file created, so
        another user with read access alone may show it."""
        self.path = Path(path) if path is not None else default_path()
        self.read_only = read_only
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._conns = Connections()
        self._closed = False
        with self._use("open"):
            pass  # fail now, with the path in the message, not on first use

    # -- connection -----------------------------------------------------------

    @contextmanager
    def _use(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise StateStoreError(f"worker state {self.path}: {action} after close()")
            try:
                if self._conn is None or self._pid != os.getpid():
                    # An inherited connection belongs to the parent: never
                    # use or close it here (self._conns keeps it referenced).
                    opened = connect_read_only(self.path) if self.read_only else connect(self.path, _SCHEMA)
                    self._conn, self._pid = self._conns.add(opened), os.getpid()
                yield self._conn
            except (OSError, sqlite3.Error) as exc:
                raise StateStoreError(f"worker state {self.path}: {action} failed: {exc}") from exc

    @contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise StateStoreError(f"worker state {self.path}: {action}: opened read-only")
        with self._use(action) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._conn = None
        self._conns.close_all()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- certificates ---------------------------------------------------------

    def put(self, state: CertState, event: HistoryEntry | None = None, validated: bytes | None = None) -> None:
        """Write one certificate's state and, in the same transaction, an
        event and the SHA-256 of the staple this worker validated for it."""
        with self._write("put") as conn:
            conn.execute(_PUT, _row(state))
            if validated is not None:
                conn.execute(_PUT_VALIDATED, (state.cert_id, validated))
            if event is not None:
                conn.execute(_ADD_HISTORY, (state.cert_id, event.when, event.action, event.detail))
                conn.execute(_TRIM, {"cert_id": state.cert_id, "keep": HISTORY})

    def put_many(
        self, states: Iterable[CertState], events: Iterable[tuple[str, HistoryEntry]] = (),
        validated: Iterable[tuple[str, bytes]] = (), issued: Iterable[tuple[str, bytes]] = (),
    ) -> None:  # fmt: skip
        """Write many states, (cert_id, event), (cert_id, staple SHA-256) and
        (cert_id, issuer SHA-256) pairs in one transaction (a load of
        100,000 certificates)."""
        with self._write("put_many") as conn:
            conn.executemany(_PUT, (_row(s) for s in states))
            conn.executemany(_PUT_VALIDATED, validated)
            conn.executemany(_PUT_ISSUED, issued)
            rows = [(cert_id, e.when, e.action, e.detail) for cert_id, e in events]
            conn.executemany(_ADD_HISTORY, rows)
            if rows:
                # Trimmed where over the limit only: one pass over the index
                # range of these certificates, not a statement per certificate
                # (most have room to spare).
                first, last = min(row[0] for row in rows), max(row[0] for row in rows)
                over = conn.execute(_OVER, (first, last, HISTORY)).fetchall()
                conn.executemany(_TRIM, ({"cert_id": cert_id, "keep": HISTORY} for (cert_id,) in over))

    def get(self, cert_id: str) -> CertState | None:
        with self._use("get") as conn:
            row = conn.execute(f"SELECT {', '.join(_FIELDS)} FROM certs WHERE cert_id = ?", (cert_id,)).fetchone()
        return CertState(*row) if row else None

    # ``between``: (first, last) cert_id, inclusive; a load reads what one
    # batch of certificates needs, not 100,000 rows at once.

    def all(self, between: tuple[str, str] | None = None) -> list[CertState]:
        where, args = _between(between)
        with self._use("all") as conn:
            query = f"SELECT {', '.join(_FIELDS)} FROM certs{where} ORDER BY name, cert_id"
            rows = conn.execute(query, args).fetchall()
        return [CertState(*row) for row in rows]

    def cert_ids(self) -> list[str]:
        with self._use("cert_ids") as conn:
            return [cert_id for (cert_id,) in conn.execute("SELECT cert_id FROM certs")]

    def validated(self, between: tuple[str, str] | None = None) -> dict[str, bytes]:
        """cert_id -> SHA-256 of the last staple this host's worker validated for it.

        What a restart need not verify again (engine.refresh.reader): these
        are our own file's rows, beside our own store, and a digest matches
        only the very bytes that were checked.
        """
        where, args = _between(between)
        with self._use("validated") as conn:
            return dict(conn.execute(f"SELECT cert_id, sha256 FROM validated{where}", args).fetchall())

    def issued(self, between: tuple[str, str] | None = None) -> dict[str, bytes]:
        """cert_id -> SHA-256 of the issuer this host's worker verified the
        certificate's signature with (engine.ocsp.issuers.find_issuer)."""
        where, args = _between(between)
        with self._use("issued") as conn:
            return dict(conn.execute(f"SELECT cert_id, issuer_sha256 FROM issued{where}", args).fetchall())

    def remove(self, cert_ids: Iterable[str]) -> None:
        """Forget certificates and their history."""
        ids = list(cert_ids)
        with self._write("remove") as conn:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM certs WHERE cert_id IN ({marks})", chunk)
                conn.execute(f"DELETE FROM history WHERE cert_id IN ({marks})", chunk)
                conn.execute(f"DELETE FROM validated WHERE cert_id IN ({marks})", chunk)
                conn.execute(f"DELETE FROM issued WHERE cert_id IN ({marks})", chunk)

    def history(self, cert_id: str) -> list[HistoryEntry]:
        """The last HISTORY events of a certificate, oldest first."""
        with self._use("history") as conn:
            rows = conn.execute(
                "SELECT at, action, detail FROM history WHERE cert_id = ? ORDER BY id", (cert_id,)
            ).fetchall()
        return [HistoryEntry(*row) for row in rows]

    # -- workers --------------------------------------------------------------

    def heartbeat(self, worker_id: str, pid: int, started: float, now: float, certificates: int) -> None:
        with self._write("heartbeat") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO workers (worker_id, pid, started, beat, certificates) VALUES (?, ?, ?, ?, ?)",
                (worker_id, pid, started, now, certificates),
            )
            conn.execute("DELETE FROM workers WHERE beat < ?", (now - FORGET_AFTER,))

    def forget_worker(self, worker_id: str) -> None:
        """A worker that stops cleanly says so, rather than look dead for ALIVE_WITHIN."""
        with self._write("forget_worker") as conn:
            conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

    def workers(self) -> list[Heartbeat]:
        with self._use("workers") as conn:
            rows = conn.execute(
                "SELECT worker_id, pid, started, beat, certificates FROM workers ORDER BY started, worker_id"
            ).fetchall()
        return [Heartbeat(*row) for row in rows]

    # -- renewal actions (engine.refresh.actions) ---------------------------------

    def put_actions(self, states: Iterable[ActionState]) -> None:
        """The service's actions as they stand: those no longer configured go."""
        rows = [tuple(getattr(state, name) for name in _ACTION_FIELDS) for state in states]
        with self._write("put_actions") as conn:
            conn.execute("DELETE FROM actions")
            conn.executemany(
                f"INSERT INTO actions ({', '.join(_ACTION_FIELDS)}) VALUES ({', '.join('?' * len(_ACTION_FIELDS))})",
                rows,
            )

    def actions(self) -> list[ActionState]:
        with self._use("actions") as conn:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'actions'").fetchone():
                return []  # written by a version without actions, opened read-only
            rows = conn.execute(f"SELECT {', '.join(_ACTION_FIELDS)} FROM actions ORDER BY name").fetchall()
        return [ActionState(*row) for row in rows]

    def __repr__(self) -> str:
        return f"StateStore({str(self.path)!r})"


#: a CertState's columns, in _FIELDS order: attrgetter, not a generator of
#: getattr (0.3 µs against 1.1, a row per certificate at a first start)
_row: Callable[[CertState], tuple[Any, ...]] = operator.attrgetter(*_FIELDS)
