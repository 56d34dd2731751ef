"""memcached, in httpd's own layout (docs/design.md, "Where the cache meets real servers").

A staple stored here is one httpd's ``SSLStaplingCache memcache:...`` reads,
and one httpd stored is one we read: key ``mod_ssl-staple:<sha1hex>``, value
flag byte + DER, raw bytes. With several servers each key goes to the
server apr-util picks (sharded.py); pymemcache's HashClient would pick
another one, so each server gets its own client here.

memcached is safe for concurrent use: no cache mutex. The clients are
pymemcache PooledClients (a pool of base Clients per server) because one
base Client must not be used by two threads at once.

A pooled connection outlives the server it was made to: after memcached
restarts, each idle one fails once (reset, closed) on its next use, and the
pool then drops it. Those failures say nothing about the server, which is
up again, so a command that meets one is sent again on another connection
(STALE_RETRIES times at most; a refused connection or a timeout is not
retried). Without that, one restart was logged as several outages.

Listing the store (``entries``) uses ``lru_crawler metadump hash``, the
only way memcached tells which keys it holds; it also gives each key's
expiry. The hash walk, not ``metadump all``: the LRU walk misses items that
move between LRUs while it runs, and httpd's reads move them all the time.
No walk is a snapshot, so ``entries`` reads both keys of every certificate
it saw either key of.
"""

from __future__ import annotations

import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

from pymemcache.client.base import PooledClient
from pymemcache.exceptions import MemcacheError, MemcacheUnexpectedCloseError

from engine.errors import CacheUnavailableError
from engine.store.providers.base import NO_ENTRY, Entry, Provider, StapleWrite, _NoEntry, encode_writes
from engine.store.providers.layout import DEFAULT_NAMESPACE, MEMCACHED_MAX_TTL
from engine.store.providers.meta import dump_meta
from engine.store.providers.sharded import Layout, server_label

#: keys per "get" command, so that one reply stays small next to the timeout
_GET_CHUNK = 100
#: keys per set_many, for the same reason (up to 10 KB each to send)
_SET_CHUNK = 100
#: pymemcache errors that come without a message
_UNSAID = {"MemcacheUnexpectedCloseError": "the server closed the connection"}
#: what a pooled connection to a server that has since restarted fails with
_STALE = (MemcacheUnexpectedCloseError, ConnectionResetError, BrokenPipeError)
#: commands sent again after a stale connection failed them (see above)
STALE_RETRIES = 8


def _expire(ttl: float) -> int:
    """memcached's exptime for a TTL (callers skip ttl <= 0).

    memcached reads 0 as "never expires" and more than 30 days as a Unix
    time: neither is what the caller asked for.
    """
    return min(max(1, int(ttl)), MEMCACHED_MAX_TTL)


class MemcacheProvider(Provider):
    scheme = "memcache"
    needs_mutex = False
    max_ttl = MEMCACHED_MAX_TTL
    shared = True

    def __init__(
        self,
        servers: list[tuple[str, int]],
        namespace: str = DEFAULT_NAMESPACE,
        timeout: float = 2.0,
    ) -> None:
        self.servers = [(host, int(port)) for host, port in servers]
        self.namespace = namespace
        self.timeout = timeout
        self._layout = Layout(namespace, len(self.servers))
        self.uri = "memcache://" + ",".join(server_label(s) for s in self.servers)
        if namespace != DEFAULT_NAMESPACE:
            self.uri += f"?namespace={namespace}"
        self._clients = [
            PooledClient(
                server,
                connect_timeout=timeout,
                timeout=timeout,
                no_delay=True,
                default_noreply=False,  # a store must say whether it stored
            )
            for server in self.servers
        ]

    def _on(self, index: int, action: str, command: Callable[[PooledClient], Any]) -> Any:
        """``command(client)`` on server ``index``; its errors as CacheUnavailableError."""
        client = self._clients[index]
        for attempt in range(STALE_RETRIES + 1):
            try:
                return command(client)
            except _STALE as exc:
                if attempt < STALE_RETRIES:
                    continue  # the pool has dropped that connection: try another
                error: Exception = exc
            except (MemcacheError, OSError) as exc:
                error = exc
            raise CacheUnavailableError(
                f"memcached at {server_label(self.servers[index])}: {action} failed: "
                f"{str(error) or _UNSAID.get(type(error).__name__, type(error).__name__)}"
            ) from error
        raise AssertionError("unreachable")

    def _fetch(self, keys: Iterable[str]) -> dict[str, bytes]:
        values: dict[str, bytes] = {}
        for index, server_keys in self._layout.by_server(keys).items():
            values.update(self._fetch_on(index, server_keys))
        return values

    def _fetch_on(self, index: int, keys: list[str]) -> dict[str, bytes]:
        def get(client: PooledClient) -> dict[str, bytes]:
            values: dict[str, bytes] = {}
            for start in range(0, len(keys), _GET_CHUNK):
                values.update(client.get_many(keys[start : start + _GET_CHUNK]))
            return values

        return self._on(index, "get", get)

    def _store(self, key: str, value: bytes, ttl: int) -> None:
        index = self._layout.server_of(key)
        stored = self._on(index, "set", lambda client: client.set(key, value, expire=ttl, noreply=False))
        if not stored:
            raise CacheUnavailableError(
                f"memcached at {server_label(self.servers[index])} did not store {key}"
            )

    def _store_many(self, index: int, values: dict[str, bytes], ttl: int) -> None:
        """Keys of one server and one exptime, in as few commands as can be."""
        keys = list(values)

        def set_many(client: PooledClient) -> list[str]:
            for start in range(0, len(keys), _SET_CHUNK):
                chunk = {k: values[k] for k in keys[start : start + _SET_CHUNK]}
                failed = client.set_many(chunk, expire=ttl, noreply=False)
                if failed:
                    return failed
            return []

        failed = self._on(index, "set_many", set_many)
        if failed:
            more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
            raise CacheUnavailableError(
                f"memcached at {server_label(self.servers[index])} did not store {failed[0]}{more}"
            )

    # -- reads ----------------------------------------------------------------

    def get(self, cert_id: str) -> Entry | _NoEntry:
        return self.get_many([cert_id]).get(cert_id, NO_ENTRY)

    def get_many(self, cert_ids: Iterable[str]) -> dict[str, Entry]:
        ids = list(dict.fromkeys(cert_ids))
        layout = self._layout
        values = self._fetch([k for c in ids for k in (layout.staple_key(c), layout.meta_key(c))])
        found = {}
        for cert_id in ids:
            # memcached's get does not tell the expiry: expires_at stays None
            entry = layout.entry(
                cert_id, values.get(layout.staple_key(cert_id)), values.get(layout.meta_key(cert_id))
            )
            if entry:
                found[cert_id] = entry
        return found

    def entries(self) -> Iterator[Entry]:
        # The listing says which certificates are there, and each key's
        # expiry; values are read the way get() reads them. A key on a server
        # apr-util would not pick (written with another server list) is
        # ignored, as httpd and get() ignore it.
        layout = self._layout
        expiries: dict[str, float | None] = {}
        cert_ids = set()
        for index in range(len(self.servers)):
            for key, expires_at in self.metadump(index):
                parsed = layout.parse_key(key)
                if parsed and layout.server_of(key) == index:
                    cert_ids.add(parsed[0])
                    expiries[key] = expires_at
        entries = []
        for cid, entry in self.get_many(sorted(cert_ids)).items():
            # a metadata-only entry lives as long as its metadata key
            key = layout.staple_key(cid) if entry.der else layout.meta_key(cid)
            entries.append(replace(entry, expires_at=expiries.get(key)))
        return iter(entries)

    def metadump(self, index: int) -> list[tuple[str, float | None]]:
        """Every key on one server with its expiry (None: never expires)."""
        label = server_label(self.servers[index])
        deadline = time.monotonic() + self.timeout * 5
        walks = ["hash", "all"]
        while True:
            try:
                reply, lines = self._metadump_once(self.servers[index], walks[0])
            except OSError as exc:
                raise CacheUnavailableError(f"memcached at {label}: listing keys failed: {exc}") from exc
            if reply == "END":
                break
            if reply.startswith("BUSY"):  # another instance is listing: wait for it
                if time.monotonic() > deadline:
                    raise CacheUnavailableError(f"memcached at {label}: LRU crawler stayed busy")
                time.sleep(0.05)
            elif len(walks) > 1:
                walks.pop(0)  # memcached before 1.6.10 has no hash walk
            else:
                raise CacheUnavailableError(f"memcached at {label}: lru_crawler metadump refused: {reply}")
        keys = []
        for line in lines:
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            if "key" in fields:
                exp = int(fields.get("exp", "-1"))
                keys.append((unquote(fields["key"]), None if exp < 0 else float(exp)))
        return keys

    def _metadump_once(self, server: tuple[str, int], walk: str) -> tuple[str, list[str]]:
        """The final reply line (END, BUSY..., ERROR...) and the key lines."""
        with socket.create_connection(server, timeout=self.timeout) as sock:
            sock.sendall(f"lru_crawler metadump {walk}\r\n".encode())
            stream = sock.makefile("rb")
            lines = []
            while True:
                raw = stream.readline()
                if not raw:
                    raise ConnectionError("connection closed before END")
                line = raw.rstrip(b"\r\n").decode("ascii", "replace")
                if line.startswith("key="):
                    lines.append(line)
                else:
                    return line, lines

    # -- writes ---------------------------------------------------------------

    def _set(self, cert_id: str, flag: int, der: bytes, value: bytes, ttl: int, meta: dict[str, Any] | None) -> None:
        self._store(self._layout.staple_key(cert_id), value, _expire(ttl))
        if meta is not None:
            self._store(self._layout.meta_key(cert_id), dump_meta(meta), _expire(ttl))

    def set_many(self, writes: Sequence[StapleWrite]) -> None:
        # Each key goes to its own server, as set() places it; one set_many
        # there carries one exptime, so keys are grouped by both. A key
        # written twice keeps its last value, as two set() calls would.
        latest: dict[str, tuple[bytes, int]] = {}
        for w, value in encode_writes(writes):
            latest[self._layout.staple_key(w.cert_id)] = (value, _expire(w.ttl))
            if w.meta is not None:
                latest[self._layout.meta_key(w.cert_id)] = (dump_meta(w.meta), _expire(w.ttl))
        groups: dict[tuple[int, int], dict[str, bytes]] = defaultdict(dict)
        for key, (value, expire) in latest.items():
            groups[self._layout.server_of(key), expire][key] = value
        for (index, expire), values in groups.items():
            self._store_many(index, values, expire)

    def set_meta(self, cert_id: str, meta: dict[str, Any], ttl: int) -> None:
        if ttl <= 0:
            return
        self._store(self._layout.meta_key(cert_id), dump_meta(meta), _expire(ttl))

    def add_lease(self, cert_id: str, owner: str, ttl: int) -> bool:
        key = self._layout.lease_key(cert_id)
        # memcached's add stores only when the key is absent: atomic. Sent
        # again only after a stale connection, which never reached the server.
        return bool(
            self._on(
                self._layout.server_of(key), "add",
                lambda client: client.add(key, owner.encode(), expire=_expire(ttl), noreply=False),
            )
        )  # fmt: skip

    def delete(self, cert_id: str) -> None:
        for key in (self._layout.staple_key(cert_id), self._layout.meta_key(cert_id)):
            self._on(self._layout.server_of(key), "delete", lambda client, key=key: client.delete(key, noreply=False))

    def close(self) -> None:
        for client in self._clients:
            client.close()

    def __repr__(self) -> str:
        return f"MemcacheProvider({self.uri!r})"
