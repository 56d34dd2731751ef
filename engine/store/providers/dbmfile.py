"""A dbm file store, like httpd's ``SSLStaplingCache dbm:PATH``.

A dbm file is not safe for concurrent use, so this provider sets
``needs_mutex`` and the engine takes its cache mutex (``PATH.lock``) around
each call (engine/store/cache.py). Each call opens the file and closes it again,
as socache_dbm does under its mutex: a handle kept open would not see what
other processes wrote, and some dbm flavours (dbm.dumb) only write their
index on close.

Layout, under the same keys as httpd's memcache/redis layout:

- ``mod_ssl-staple:<cert_id>``: an 8-byte big-endian IEEE double, the
  staple's expiry (Unix time), then layout.encode_value (flag byte + DER).
- ``staplectl-meta:mod_ssl-staple:<cert_id>``: the metadata's own expiry in
  the same 8-byte form, then the metadata as UTF-8 JSON.

The staple and the metadata expire separately, as they would as two keys
in memcached. Expired values are ignored on read and deleted during writes,
at most once a minute per process.
"""

from __future__ import annotations

import dbm
import json
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import CacheUnavailableError, EntryFormatError
from engine.paths import ensure_private_dir
from engine.store.providers.base import NO_ENTRY, Entry, Provider, StapleWrite, _NoEntry, encode_writes
from engine.store.providers.layout import (
    DEFAULT_NAMESPACE,
    FLAG_VALID,
    META_PREFIX,
    cert_id_from_key,
    decode_value,
    meta_key,
    staple_key,
)
from engine.store.providers.meta import load_meta

FILE_MODE = 0o640
PURGE_INTERVAL = 60.0
_EXPIRY = struct.Struct(">d")


def _pack(expires_at: float, payload: bytes) -> bytes:
    return _EXPIRY.pack(expires_at) + payload


def _unpack(value: bytes | None, now: float) -> tuple[float, bytes] | None:
    """(expiry, payload) of a value that has not expired, else None."""
    if not value or len(value) < _EXPIRY.size:
        return None
    (expires_at,) = _EXPIRY.unpack_from(value)
    return (expires_at, value[_EXPIRY.size :]) if expires_at >= now else None


_WRITES = frozenset({"set", "set_many", "set_meta", "delete"})


def _ours(key: bytes) -> bool:
    return key.startswith(((DEFAULT_NAMESPACE + ":").encode(), META_PREFIX.encode()))


class DbmProvider(Provider):
    scheme = "dbm"
    needs_mutex = True
    shared = False

    def __init__(self, path: Path, *, clock: Clock = SYSTEM_CLOCK, read_only: bool = False) -> None:
        self.path = Path(path)
        self.uri = f"dbm:{self.path}"
        #: never write, nor create the file: a missing one reads as empty
        self.read_only = read_only
        self._clock = clock
        self._last_purge = float("-inf")
        if read_only:
            return
        try:
            # Now, not on first use: the mutex's lock file goes here too.
            ensure_private_dir(self.path.parent)
        except OSError as exc:
            raise CacheUnavailableError(
                f"dbm cache {self.path}: cannot create its directory: {exc}"
            ) from exc

    @property
    def mutex_path(self) -> str:
        return str(self.path) + ".lock"

    @contextmanager
    def _open(self, action: str) -> Iterator[Any]:
        if self.read_only and action in _WRITES:
            raise CacheUnavailableError(f"dbm cache {self.path}: {action}: opened read-only")
        if self.read_only and dbm.whichdb(str(self.path)) is None:
            yield {}  # not made yet: empty, and left so
            return
        try:
            db = dbm.open(str(self.path), "r" if self.read_only else "c", FILE_MODE)
        except (OSError, *dbm.error) as exc:
            raise CacheUnavailableError(f"dbm cache {self.path}: cannot open: {exc}") from exc
        try:
            yield db
        except (OSError, *dbm.error) as exc:
            raise CacheUnavailableError(f"dbm cache {self.path}: {action} failed: {exc}") from exc
        finally:
            db.close()

    def _read(self, db: Any, cert_id: str, now: float) -> Entry | None:
        key = staple_key(DEFAULT_NAMESPACE, cert_id)
        staple = _unpack(db.get(key.encode()), now)
        meta = _unpack(db.get(meta_key(DEFAULT_NAMESPACE, cert_id).encode()), now)
        flag, der, expires_at, problems = FLAG_VALID, b"", None, []
        if staple is not None:
            try:
                flag, der = decode_value(staple[1])
                expires_at = staple[0]
            except EntryFormatError as error:
                problems.append(f"staple value: {error}")  # the next fetch replaces it
        meta_dict, meta_problem = load_meta(meta[1]) if meta is not None else (None, None)
        if meta_problem:
            problems.append(meta_problem)
        if not der and meta_dict is None and not problems:
            return None
        if not der:
            expires_at = meta[0] if meta else None
        return Entry(cert_id, key, der, flag, expires_at, meta_dict, "; ".join(problems) or None)

    def get(self, cert_id: str) -> Entry | _NoEntry:
        with self._open("get") as db:
            return self._read(db, cert_id, self._clock.now()) or NO_ENTRY

    def get_many(self, cert_ids: Iterable[str]) -> dict[str, Entry]:
        now = self._clock.now()
        found = {}
        with self._open("get_many") as db:
            for cert_id in dict.fromkeys(cert_ids):
                entry = self._read(db, cert_id, now)
                if entry:
                    found[cert_id] = entry
        return found

    def entries(self) -> Iterator[Entry]:
        now = self._clock.now()
        with self._open("entries") as db:
            cert_ids = set()
            for raw in db.keys():
                key = raw.decode(errors="replace")
                cert_id = cert_id_from_key(DEFAULT_NAMESPACE, key) or cert_id_from_key(
                    META_PREFIX + DEFAULT_NAMESPACE, key
                )
                if cert_id:
                    cert_ids.add(cert_id)
            entries = [self._read(db, cert_id, now) for cert_id in sorted(cert_ids)]
        # Read in full while the file is open (and the mutex held).
        return iter([e for e in entries if e])

    def _set(self, cert_id: str, flag: int, der: bytes, value: bytes, ttl: int, meta: dict[str, Any] | None) -> None:
        expires_at = self._clock.now() + ttl
        with self._open("set") as db:
            db[staple_key(DEFAULT_NAMESPACE, cert_id).encode()] = _pack(expires_at, value)
            if meta is not None:
                db[meta_key(DEFAULT_NAMESPACE, cert_id).encode()] = _pack(
                    expires_at, json.dumps(meta, sort_keys=True).encode()
                )
            self._maybe_purge(db)

    def set_many(self, writes: Sequence[StapleWrite]) -> None:
        batch = encode_writes(writes)
        if not batch:
            return
        now = self._clock.now()
        # One open (and, through Cache, one mutex hold) for the whole batch.
        with self._open("set_many") as db:
            for w, value in batch:
                expires_at = now + w.ttl
                db[staple_key(DEFAULT_NAMESPACE, w.cert_id).encode()] = _pack(expires_at, value)
                if w.meta is not None:
                    db[meta_key(DEFAULT_NAMESPACE, w.cert_id).encode()] = _pack(
                        expires_at, json.dumps(w.meta, sort_keys=True).encode()
                    )
            self._maybe_purge(db)

    def set_meta(self, cert_id: str, meta: dict[str, Any], ttl: int) -> None:
        if ttl <= 0:
            return
        expires_at = self._clock.now() + ttl
        with self._open("set_meta") as db:
            db[meta_key(DEFAULT_NAMESPACE, cert_id).encode()] = _pack(
                expires_at, json.dumps(meta, sort_keys=True).encode()
            )
            self._maybe_purge(db)

    def delete(self, cert_id: str) -> None:
        with self._open("delete") as db:
            for key in (staple_key(DEFAULT_NAMESPACE, cert_id), meta_key(DEFAULT_NAMESPACE, cert_id)):
                try:
                    del db[key.encode()]
                except KeyError:
                    pass

    def _maybe_purge(self, db: Any) -> None:
        now = self._clock.now()
        if now - self._last_purge < PURGE_INTERVAL:
            return
        self._last_purge = now
        # Only our own keys: whatever else is in the file is not ours to judge.
        expired = [key for key in db.keys() if _ours(key) and _unpack(db[key], now) is None]
        for key in expired:
            del db[key]

    def __repr__(self) -> str:
        return f"DbmProvider({str(self.path)!r})"
