"""Reading the store as any other process would, without staplectl's code.

- local: the SQLite file read-only (``file:PATH?mode=ro``), the schema of
  engine/store/providers/local.py: table staples(cert_id, key, flag, der,
  expires_at, meta, meta_expires_at, updated_at). A row whose staple part
  expired (expires_at < now) is what the provider itself treats as gone.
- memcached, redis: key ``mod_ssl-staple:<sha1>``, value one flag byte
  (0x01) then the DER OCSPResponse: httpd's layout, what httpd reads.

`read(ids)` returns {sha1: (flag, der)} for the ids that have a staple, or
raises StoreUnreadable. The connection is kept between reads (reopened
after a failure): opening one every half second would be a load of its
own on the store.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

NAMESPACE = "mod_ssl-staple"


class StoreUnreadable(Exception):
    pass


class LocalReader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.path.exists():
                raise StoreUnreadable(f"{self.path} does not exist yet")
            # Autocommit (isolation_level None) and every result fetched at
            # once: no read transaction is left open to pin the WAL.
            self._conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, timeout=5, isolation_level=None, check_same_thread=False
            )
        return self._conn

    def read(self, ids: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        try:
            conn = self._connection()
            rows: list[tuple] = []
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows += conn.execute(
                    f"SELECT cert_id, flag, der, expires_at FROM staples WHERE cert_id IN ({marks})", chunk
                ).fetchall()
        except sqlite3.Error as exc:
            self.close()
            raise StoreUnreadable(f"sqlite {self.path}: {exc}") from exc
        now = time.time()
        return {
            cert_id: (flag, bytes(der))
            for cert_id, flag, der, expires_at in rows
            if der and expires_at is not None and expires_at >= now
        }

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class MemcacheReader:
    def __init__(self, port: int) -> None:
        from pymemcache.client.base import Client

        # A plain Client: one connection, reopened by pymemcache after an error.
        self._client = Client(("127.0.0.1", port), connect_timeout=1, timeout=1)

    def read(self, ids: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        keys = [f"{NAMESPACE}:{sha1}" for sha1 in ids]
        values: dict = {}
        try:
            for start in range(0, len(keys), 100):
                values.update(self._client.get_many(keys[start : start + 100]))
        except Exception as exc:  # pymemcache raises MemcacheError or OSError
            self._client.close()
            raise StoreUnreadable(f"memcached: {type(exc).__name__}: {exc}") from exc
        return {_sha1(key): (value[0], bytes(value[1:])) for key, value in values.items() if value}

    def close(self) -> None:
        self._client.close()


class RedisReader:
    def __init__(self, port: int) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No retries: redis-py's default retries with backoff for seconds,
        # and a monitor stuck in a read sees nothing meanwhile.
        self._client = redis.Redis(
            host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
        )

    def read(self, ids: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        keys = [f"{NAMESPACE}:{sha1}" for sha1 in ids]
        try:
            values = self._client.mget(keys) if keys else []
        except Exception as exc:  # redis.RedisError, OSError
            raise StoreUnreadable(f"redis: {type(exc).__name__}: {exc}") from exc
        return {sha1: (value[0], bytes(value[1:])) for sha1, value in zip(ids, values) if value}

    def close(self) -> None:
        self._client.close()


def _sha1(key: str | bytes) -> str:
    text = key.decode() if isinstance(key, bytes) else key
    return text.split(":", 1)[1]


def open_reader(provider: str, *, store_path: Path | None = None, port: int | None = None):
    if provider == "local":
        assert store_path is not None
        return LocalReader(store_path)
    assert port is not None
    return MemcacheReader(port) if provider == "memcache" else RedisReader(port)
