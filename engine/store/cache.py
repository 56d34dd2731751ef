"""The engine's view of a cache provider (docs/design.md, "Providers and the cache mutex").

Two jobs, nothing else:

- Take the cache mutex around each single provider call, and only for
  providers that declare ``needs_mutex`` (a dbm file). Providers that are
  safe for concurrent use never see it, so a slow memcached never queues
  anybody behind a lock.
- Turn the store's own exceptions (OSError, sqlite3, dbm, pymemcache,
  redis) into CacheUnavailableError naming the cache URI, so callers handle
  one class. Errors the engine raises on purpose (EntryTooLargeError, a
  provider's own CacheUnavailableError) pass through unchanged, and so do
  programming errors (TypeError and friends), which must stay loud.
"""

from __future__ import annotations

import dbm
import sqlite3
import sys
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

from engine.errors import CacheUnavailableError, StapleError
from engine.store.mutex import CacheMutex
from engine.store.providers.base import Entry, Provider, StapleWrite, _NoEntry
from engine.store.providers.layout import FLAG_VALID
from engine.redact import redact

T = TypeVar("T")

#: what a store may raise when it is down, full, corrupt or unreachable
#: (pymemcache's and redis's own errors are added by store_errors())
STORE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    sqlite3.Error,
    *dbm.error,
)
#: (module, class) of the client libraries' base errors
_CLIENT_ERRORS = (("pymemcache.exceptions", "MemcacheError"), ("redis.exceptions", "RedisError"))


def store_errors() -> tuple[type[BaseException], ...]:
    """STORE_ERRORS and the client libraries' errors, if they are loaded.

    Not imported here: the redis client alone would add to every command's
    start-up, and a library that raised must have been imported by its provider.
    """
    loaded = tuple(
        getattr(sys.modules[module], name) for module, name in _CLIENT_ERRORS if module in sys.modules
    )
    return STORE_ERRORS + loaded


class Cache:
    def __init__(self, provider: Provider, mutex: CacheMutex | None = None) -> None:
        self.provider = provider
        if provider.needs_mutex and mutex is None:
            if not provider.mutex_path:
                raise ValueError(f"provider {provider!r} needs a mutex but names no lock file")
            mutex = CacheMutex(provider.mutex_path)
        # A mutex handed in for a provider that does not need one is ignored:
        # taking it would only serialise callers for nothing.
        self.mutex = mutex if provider.needs_mutex else None

    @property
    def uri(self) -> str:
        return self.provider.uri

    @property
    def shared(self) -> bool:
        return self.provider.shared

    @property
    def max_ttl(self) -> int | None:
        return self.provider.max_ttl

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        guard: AbstractContextManager[Any] = self.mutex if self.mutex is not None else nullcontext()
        try:
            with guard:
                return fn()
        except StapleError:
            raise
        except Exception as exc:
            if not isinstance(exc, store_errors()):
                raise
            name = redact(self.provider.uri) or type(self.provider).__name__
            raise CacheUnavailableError(f"cache {name}: {action} failed: {exc}") from exc

    def get(self, cert_id: str) -> Entry | _NoEntry:
        return self._call("get", lambda: self.provider.get(cert_id))

    def get_many(self, cert_ids: Iterable[str]) -> dict[str, Entry]:
        cert_ids = list(cert_ids)
        return self._call("get_many", lambda: self.provider.get_many(cert_ids))

    def set(
        self,
        cert_id: str,
        der: bytes,
        ttl: int,
        *,
        flag: int = FLAG_VALID,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self._call("set", lambda: self.provider.set(cert_id, der, ttl, flag=flag, meta=meta))

    def set_many(self, writes: Iterable[StapleWrite]) -> None:
        # One call, so one mutex hold for the whole batch (a dbm file).
        writes = list(writes)
        self._call("set_many", lambda: self.provider.set_many(writes))

    def set_meta(self, cert_id: str, meta: dict[str, Any], ttl: int) -> None:
        self._call("set_meta", lambda: self.provider.set_meta(cert_id, meta, ttl))

    def add_lease(self, cert_id: str, owner: str, ttl: int) -> bool:
        return self._call("add_lease", lambda: self.provider.add_lease(cert_id, owner, ttl))

    def delete(self, cert_id: str) -> None:
        self._call("delete", lambda: self.provider.delete(cert_id))

    def entries(self) -> list[Entry]:
        # Materialised inside the mutex: a lazy iterator would read the
        # store after the mutex is released.
        return self._call("entries", lambda: list(self.provider.entries()))

    def close(self) -> None:
        self._call("close", self.provider.close)

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cache({self.provider.uri or self.provider!r})"
