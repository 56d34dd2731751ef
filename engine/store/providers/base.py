"""The cache provider interface (docs/design.md, "Providers and the cache mutex").

Small on purpose, like dogpile.cache's CacheBackend: get, get_many, set,
set_many, set_meta, delete, entries, close. Entries are keyed by the
certificate's cache id, the lower-case SHA-1 hex of its DER (what httpd
uses).

A provider that is not safe for concurrent use by several threads and
processes says so with ``needs_mutex = True`` and names the lock file in
``mutex_path``; the engine then takes its cache mutex around each single
provider call (engine/store/cache.py), never across network I/O. Providers that
are safe on their own (memcached, redis, the local SQLite store) never see
the mutex.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine.store.providers.layout import FLAG_VALID, encode_value


class _NoEntry:
    """A miss. Falsy, and never confused with a stored value."""

    _instance: "_NoEntry | None" = None

    def __new__(cls) -> "_NoEntry":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NO_ENTRY"


NO_ENTRY = _NoEntry()


@dataclass(frozen=True)
class Entry:
    """One stored staple, as found in the cache.

    ``meta`` is staplectl's own metadata (when fetched, which certificate
    file, last error). It is None for an entry that httpd wrote itself, and
    an Entry with ``der == b""`` carries metadata alone (a certificate whose
    fetches failed before any staple was stored).
    """

    cert_id: str
    key: str
    der: bytes
    flag: int = FLAG_VALID
    #: physical expiry (Unix time) where the provider knows it
    expires_at: float | None = None
    meta: dict[str, Any] | None = field(default=None, compare=False)
    #: what was junk under the entry's keys (a value of the wrong type or
    #: shape, metadata outside its schema), shown for this entry alone
    problem: str | None = field(default=None, compare=False)

    @property
    def has_staple(self) -> bool:
        return bool(self.der)


@dataclass(frozen=True)
class StapleWrite:
    """One staple to store, as ``Provider.set`` takes it."""

    cert_id: str
    der: bytes
    ttl: int
    flag: int = FLAG_VALID
    meta: dict[str, Any] | None = field(default=None, compare=False)


def encode_writes(writes: Iterable[StapleWrite]) -> list[tuple[StapleWrite, bytes]]:
    """The writes worth making (ttl > 0), each with its flag + DER value.

    Every write is checked first, as ``set`` checks one (empty DER:
    ValueError; over httpd's limit: EntryTooLargeError), so that a bad
    write fails the batch before anything of it is stored.
    """
    encoded = []
    for write in writes:
        if not write.der:
            raise ValueError(
                f"set_many(): no staple for {write.cert_id}; use set_meta() for metadata alone"
            )
        encoded.append((write, encode_value(write.flag, write.der)))
    return [(write, value) for write, value in encoded if write.ttl > 0]


class Provider(ABC):
    #: URI scheme that selects this provider ("local", "memcache", ...)
    scheme: ClassVar[str]
    #: True when the engine must serialise calls with its cache mutex
    needs_mutex: ClassVar[bool] = False
    #: largest TTL the store accepts (memcached: under 30 days), or None
    max_ttl: ClassVar[int | None] = None
    #: True when several hosts may share the store (memcached, redis): what
    #: is read from it is re-validated before it is served or exported
    shared: ClassVar[bool] = False

    #: the URI this provider was opened with, for display
    uri: str = ""

    @property
    def mutex_path(self) -> str | None:
        """The lock file for the cache mutex, for providers that need one."""
        return None

    @abstractmethod
    def get(self, cert_id: str) -> Entry | _NoEntry:
        """The entry for one certificate, with its metadata, or NO_ENTRY."""

    def get_many(self, cert_ids: Iterable[str]) -> dict[str, Entry]:
        """Entries for several certificates; misses are simply absent."""
        found = {}
        for cert_id in cert_ids:
            entry = self.get(cert_id)
            if entry:
                found[cert_id] = entry
        return found

    def set(
        self,
        cert_id: str,
        der: bytes,
        ttl: int,
        *,
        flag: int = FLAG_VALID,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Store a staple for ``ttl`` seconds, and its metadata if given.

        The same rules in every provider: an empty staple is the caller's
        mistake (ValueError), one over httpd's size limit is refused
        wherever it would be stored (EntryTooLargeError), and a TTL of 0 or
        less stores nothing: it would be gone at once.
        """
        if not der:
            raise ValueError("set() needs a staple; use set_meta() for metadata alone")
        value = encode_value(flag, der)
        if ttl <= 0:
            return
        self._set(cert_id, flag, der, value, ttl, meta)

    @abstractmethod
    def _set(self, cert_id: str, flag: int, der: bytes, value: bytes, ttl: int, meta: dict[str, Any] | None) -> None:
        """Store one write that set() checked: ``value`` is httpd's flag byte
        and ``der``; ``ttl`` is 1 or more."""

    def set_many(self, writes: Sequence[StapleWrite]) -> None:
        """Store several staples, as ``set`` would each.

        Every write is checked before any is made, so a bad one (empty DER,
        too large) raises with nothing of the batch stored. A store failure
        raises too, and the caller takes the whole batch as failed: some of
        it may be stored. Providers override this to store the batch in one
        transaction or round trip.
        """
        for w, _ in encode_writes(writes):
            self.set(w.cert_id, w.der, w.ttl, flag=w.flag, meta=w.meta)

    @abstractmethod
    def set_meta(self, cert_id: str, meta: dict[str, Any], ttl: int) -> None:
        """Store metadata alone; the staple, if any, is left as it is."""

    def add_lease(self, cert_id: str, owner: str, ttl: int) -> bool:
        """Atomically claim the refresh of a certificate for ``ttl`` seconds.

        True when the claim is ours, False when another owner holds it. A
        store that only one host uses needs no lease (the fetch locks
        already exclude every process there), so the default grants it.
        """
        return True

    @abstractmethod
    def delete(self, cert_id: str) -> None:
        """Remove the staple and its metadata. Deleting a miss is not an error."""

    @abstractmethod
    def entries(self) -> Iterator[Entry]:
        """Every entry in the store, including ones other programs wrote."""

    def close(self) -> None:  # noqa: B027 - optional for providers
        """Release connections and files."""

    def __enter__(self) -> "Provider":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
