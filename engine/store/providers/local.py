"""The embedded default store: one SQLite file (docs/design.md, "The local store and SQLite's locks").

Why SQLite: its transactions make the store safe for the prefetch service,
a one-shot ``fetch`` and the dashboard writing at once, and a crash in the
middle of a write leaves the last committed state. So this provider never
needs the engine's cache mutex.

- WAL mode (engine.store.sqlitedb): readers (the request path) never wait for
  the writer. The file is opened by SQLite alone: a descriptor of it
  closed anywhere else in the process would drop SQLite's locks, and
  another process would then delete the WAL under us.
- Writes use ``BEGIN IMMEDIATE`` so that two writers queue on the busy
  timeout at the start instead of failing halfway with SQLITE_BUSY.
- A connection is lent to one operation at a time (sqlite3 connections
  must not be shared by threads mid-statement; engine.store.sqlitedb's
  Connections), and a fork's child opens its own: a connection never
  crosses one.

The staple and the metadata expire separately, as they do in memcached and
redis where they are two keys: ``expires_at`` is the staple's,
``meta_expires_at`` the metadata's. A row is visible while either is alive;
an expired staple leaves a metadata-only entry. Rows where both expired are
purged during writes, at most once a minute per process.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import CacheUnavailableError, StoreDamagedError, StoreUnwritableError
from engine.store.sqlitedb import Connections, connect, connect_read_only, failure_kind, no_space
from engine.store.providers.base import NO_ENTRY, Entry, Provider, StapleWrite, _NoEntry, encode_writes
from engine.store.providers.layout import DEFAULT_NAMESPACE, FLAG_VALID, staple_key
from engine.store.providers.meta import load_meta

PURGE_INTERVAL = 60.0
#: SQLite's default limit on host parameters is 999 in old builds
_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS staples (
    cert_id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    flag INTEGER NOT NULL,
    der BLOB NOT NULL,
    expires_at REAL,
    meta TEXT,
    meta_expires_at REAL,
    updated_at REAL NOT NULL
)
"""

_COLUMNS = "cert_id, key, flag, der, expires_at, meta, meta_expires_at"

_SET = """
INSERT INTO staples (cert_id, key, flag, der, expires_at, meta, meta_expires_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (cert_id) DO UPDATE SET
    key = excluded.key, flag = excluded.flag, der = excluded.der,
    expires_at = excluded.expires_at,
    meta = coalesce(excluded.meta, meta),
    meta_expires_at = CASE WHEN excluded.meta IS NULL THEN meta_expires_at
                           ELSE excluded.meta_expires_at END,
    updated_at = excluded.updated_at
"""

# A metadata-only row has der b"" and no staple expiry.
_SET_META = """
INSERT INTO staples (cert_id, key, flag, der, expires_at, meta, meta_expires_at, updated_at)
VALUES (?, ?, ?, x'', NULL, ?, ?, ?)
ON CONFLICT (cert_id) DO UPDATE SET
    meta = excluded.meta, meta_expires_at = excluded.meta_expires_at,
    updated_at = excluded.updated_at
"""

_ALIVE = "(expires_at >= :now OR meta_expires_at >= :now)"


#: each column's Python types as _SET and _SET_META write them; SQLite keeps
#: whatever type a value was written with, whatever the column says
_TYPES = {
    "cert_id": (str,), "key": (str,), "flag": (int,), "der": (bytes,), "expires_at": (int, float, type(None)),
    "meta": (str, bytes, type(None)), "meta_expires_at": (int, float, type(None)),
}  # fmt: skip


def _wrong_types(row: tuple[Any, ...]) -> str | None:
    """Which columns of a row hold a value of a type staplectl never writes there."""
    wrong = [f"{name} is {type(value).__name__}" for (name, types), value in zip(_TYPES.items(), row)
             if not isinstance(value, types)]  # fmt: skip
    return ", ".join(wrong) + ", not what staplectl writes" if wrong else None


class LocalProvider(Provider):
    scheme = "local"
    needs_mutex = False
    shared = False

    def __init__(self, path: Path, *, clock: Clock = SYSTEM_CLOCK, read_only: bool = False) -> None:
        self.path = Path(path)
        self.uri = f"local:{self.path}"
        #: never write, nor create the file: a store that does not exist yet
        #: reads as empty (see engine.store.sqlitedb.connect_read_only)
        self.read_only = read_only
        self._clock = clock
        self._conns = Connections()
        self._last_purge = float("-inf")
        if self._exists():
            with self._lent():
                pass  # fail now, with the path in the message, not on first use

    def _exists(self) -> bool:
        return not self.read_only or os.path.lexists(self.path)

    # -- connections ----------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            if self.read_only:
                return self._conns.add(connect_read_only(self.path))
            return self._conns.add(connect(self.path, _SCHEMA))
        except sqlite3.Error as exc:
            raise self._failure("cannot open", exc, writing=False) from exc
        except OSError as exc:
            raise CacheUnavailableError(f"local cache {self.path}: cannot open: {exc}") from exc

    def _lent(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._conns.lend(self._open)

    def _failure(self, action: str, exc: sqlite3.Error, *, writing: bool) -> CacheUnavailableError:
        """The error to raise, by what SQLite's says of the file (see sqlitedb.failure_kind)."""
        what = f"local cache {self.path}: {action}{'' if action == 'cannot open' else ' failed'}: {exc}"
        kind = failure_kind(exc, writing)
        if kind != "damaged" and (full := no_space(self.path)) is not None:
            return StoreUnwritableError(f"{what} ({full})")
        if kind == "damaged":
            return StoreDamagedError(
                f"{what} (the file is damaged: stop whatever uses it, move it aside, "
                "and `staplectl warm` fills a new one)"
            )
        if kind == "unwritable":
            return StoreUnwritableError(what)
        return CacheUnavailableError(what)

    @contextmanager
    def _errors(self, action: str, *, writing: bool = False) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._failure(action, exc, writing=writing) from exc

    @contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise CacheUnavailableError(f"local cache {self.path}: {action}: opened read-only")
        with self._errors(action, writing=True), self._lent() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                self._maybe_purge(conn)
                conn.execute("COMMIT")
            except BaseException:
                # also after a failed COMMIT (disk full): the next BEGIN on
                # this connection must not find a transaction still open
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _maybe_purge(self, conn: sqlite3.Connection) -> None:
        now = self._clock.now()
        if now - self._last_purge < PURGE_INTERVAL:
            return
        self._last_purge = now
        conn.execute(f"DELETE FROM staples WHERE NOT {_ALIVE}", {"now": now})

    # -- reads ----------------------------------------------------------------

    def _entry(self, row: tuple[Any, ...], now: float) -> Entry | None:
        cert_id, key, flag, der, expires_at, meta, meta_expires_at = row
        wrong = _wrong_types(row)
        if wrong:
            # An edited or damaged file: junk for this certificate alone, which
            # the next write replaces, and a row that names none is nobody's.
            if not isinstance(cert_id, str):
                return None
            return Entry(cert_id, staple_key(DEFAULT_NAMESPACE, cert_id), b"", problem=f"local store row: {wrong}")
        staple_alive = bool(der) and expires_at is not None and expires_at >= now
        meta_alive = meta is not None and meta_expires_at is not None and meta_expires_at >= now
        if not (staple_alive or meta_alive):
            return None
        meta_dict, problem = load_meta(meta) if meta_alive else (None, None)
        return Entry(
            cert_id=cert_id,
            key=key,
            der=bytes(der) if staple_alive else b"",
            flag=flag if staple_alive else FLAG_VALID,
            expires_at=expires_at if staple_alive else meta_expires_at,
            meta=meta_dict,
            problem=problem,
        )

    def get(self, cert_id: str) -> Entry | _NoEntry:
        if not self._exists():
            return NO_ENTRY
        with self._errors("get"), self._lent() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM staples WHERE cert_id = ?", (cert_id,)
            ).fetchone()
        entry = self._entry(row, self._clock.now()) if row else None
        return entry or NO_ENTRY

    def get_many(self, cert_ids: Iterable[str]) -> dict[str, Entry]:
        ids = list(dict.fromkeys(cert_ids))
        if not self._exists():
            return {}
        rows = []
        with self._errors("get_many"), self._lent() as conn:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows += conn.execute(
                    f"SELECT {_COLUMNS} FROM staples WHERE cert_id IN ({marks})", chunk
                ).fetchall()
        now = self._clock.now()
        found = {}
        for row in rows:
            entry = self._entry(row, now)
            if entry:
                found[entry.cert_id] = entry
        return found

    def entries(self) -> Iterator[Entry]:
        if not self._exists():
            return iter([])
        now = self._clock.now()
        with self._errors("entries"), self._lent() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM staples WHERE {_ALIVE} ORDER BY cert_id", {"now": now}
            ).fetchall()
        # Materialised: a cursor left open would pin a WAL snapshot.
        return iter([e for e in (self._entry(row, now) for row in rows) if e])

    # -- writes ---------------------------------------------------------------

    def _set(self, cert_id: str, flag: int, der: bytes, value: bytes, ttl: int, meta: dict[str, Any] | None) -> None:
        now = self._clock.now()
        meta_text = None if meta is None else json.dumps(meta, sort_keys=True)
        key = staple_key(DEFAULT_NAMESPACE, cert_id)
        with self._write("set") as conn:
            conn.execute(_SET, (cert_id, key, flag, der, now + ttl, meta_text, now + ttl, now))

    def set_many(self, writes: Sequence[StapleWrite]) -> None:
        batch = encode_writes(writes)
        if not batch:
            return
        now = self._clock.now()
        rows = [
            (
                w.cert_id,
                staple_key(DEFAULT_NAMESPACE, w.cert_id),
                w.flag,
                w.der,
                now + w.ttl,
                None if w.meta is None else json.dumps(w.meta, sort_keys=True),
                now + w.ttl,
                now,
            )
            for w, _ in batch
        ]
        # One transaction: all of the batch or none of it, and one commit.
        with self._write("set_many") as conn:
            conn.executemany(_SET, rows)

    def set_meta(self, cert_id: str, meta: dict[str, Any], ttl: int) -> None:
        if ttl <= 0:
            return
        now = self._clock.now()
        key = staple_key(DEFAULT_NAMESPACE, cert_id)
        meta_text = json.dumps(meta, sort_keys=True)
        with self._write("set_meta") as conn:
            conn.execute(_SET_META, (cert_id, key, FLAG_VALID, meta_text, now + ttl, now))

    def delete(self, cert_id: str) -> None:
        with self._write("delete") as conn:
            conn.execute("DELETE FROM staples WHERE cert_id = ?", (cert_id,))

    def close(self) -> None:
        self._conns.close_all()

    def __repr__(self) -> str:
        return f"LocalProvider({str(self.path)!r})"
