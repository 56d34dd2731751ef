"""redis, in httpd's own layout (docs/design.md, "Where the cache meets real servers").

The same keys and values as memcached (``mod_ssl-staple:<sha1hex>``, flag
byte + DER) and the same apr-util sharding over several servers, so that
httpd's ``SSLStaplingCache redis:...`` and staplectl share entries. Values
are stored with ``SET ... EX ttl``; ``PTTL`` gives each entry's expiry.

redis is safe for concurrent use (redis-py's clients keep a thread-safe
connection pool): no cache mutex.

redis-py retries a failed command up to ten times with backoff by default;
a cache that is down must fail fast instead (the request path is waiting),
so one retry without backoff is kept, for a pooled connection that went
stale when the server restarted.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from engine.errors import CacheUnavailableError
from engine.store.providers.base import NO_ENTRY, Entry, Provider, StapleWrite, _NoEntry, encode_writes
from engine.store.providers.layout import DEFAULT_NAMESPACE, META_PREFIX
from engine.store.providers.meta import dump_meta
from engine.store.providers.sharded import Layout, server_label

_SCAN_COUNT = 1000
_GLOB_SPECIALS = "\\*?[]^"


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in _GLOB_SPECIALS else ch for ch in text)


def _ex(ttl: float) -> int:
    # redis refuses EX 0 (callers skip ttl <= 0); a fraction of a second rounds up
    return max(1, int(ttl))


class RedisProvider(Provider):
    scheme = "redis"
    needs_mutex = False
    max_ttl = None
    shared = True

    def __init__(
        self,
        servers: list[tuple[str, int]],
        db: int = 0,
        namespace: str = DEFAULT_NAMESPACE,
        timeout: float = 2.0,
        password: str | None = None,
        username: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
    ) -> None:
        """``username`` and ``password``: AUTH (a redis 6 ACL user, or the
        default user); ``tls``: rediss, the server's certificate verified
        against ``ca_file`` or the system's CAs, its name against the host."""
        self.servers = [(host, int(port)) for host, port in servers]
        self.db = db
        self.namespace = namespace
        self._layout = Layout(namespace, len(self.servers))
        scheme = "rediss" if tls else "redis"
        self.uri = f"{scheme}://" + ",".join(server_label(s) for s in self.servers) + f"/{db}"
        if namespace != DEFAULT_NAMESPACE:
            self.uri += f"?namespace={namespace}"
        tls_options = {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": ca_file} if tls else {}
        self._clients = [
            redis.Redis(
                host=host,
                port=port,
                db=db,
                username=username,
                password=password,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 1),
                **tls_options,
            )
            for host, port in self.servers
        ]

    @contextmanager
    def _on(self, index: int, action: str) -> Iterator[redis.Redis]:
        try:
            yield self._clients[index]
        except RedisError as exc:
            raise CacheUnavailableError(
                f"redis at {server_label(self.servers[index])}: {action} failed: {exc}"
            ) from exc

    def _fetch_on(self, index: int, keys: list[str]) -> dict[str, tuple[bytes | Exception, float | None]]:
        """Values and expiries (None: no expiry) of the keys present on one server.

        A key holding another type than a string (a LIST planted at a
        certificate's key) answers WRONGTYPE: that is junk for its
        certificate alone, not an error of the whole read.
        """
        with self._on(index, "get") as client:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
                pipe.pttl(key)
            replies = pipe.execute(raise_on_error=False)
            for reply in replies:
                if isinstance(reply, ResponseError) and not str(reply).startswith("WRONGTYPE"):
                    raise reply  # NOAUTH, OOM...: the server's, for every key
        now = time.time()
        found: dict[str, tuple[bytes | Exception, float | None]] = {}
        for key, value, pttl in zip(keys, replies[::2], replies[1::2]):
            if value is not None:
                found[key] = (value, now + pttl / 1000 if pttl >= 0 else None)
        return found

    def _assemble(
        self, cert_ids: Iterable[str], values: dict[str, tuple[bytes | Exception, float | None]]
    ) -> dict[str, Entry]:
        layout = self._layout
        found = {}
        for cert_id in cert_ids:
            staple = values.get(layout.staple_key(cert_id), (None, None))
            meta = values.get(layout.meta_key(cert_id), (None, None))
            entry = layout.entry(cert_id, staple[0], meta[0], staple[1], meta[1])
            if entry:
                found[cert_id] = entry
        return found

    # -- reads ----------------------------------------------------------------

    def get(self, cert_id: str) -> Entry | _NoEntry:
        return self.get_many([cert_id]).get(cert_id, NO_ENTRY)

    def get_many(self, cert_ids: Iterable[str]) -> dict[str, Entry]:
        ids = list(dict.fromkeys(cert_ids))
        layout = self._layout
        keys = [k for c in ids for k in (layout.staple_key(c), layout.meta_key(c))]
        values: dict[str, tuple[bytes | Exception, float | None]] = {}
        for index, server_keys in layout.by_server(keys).items():
            values.update(self._fetch_on(index, server_keys))
        return self._assemble(ids, values)

    def entries(self) -> Iterator[Entry]:
        # SCAN says which certificates are there; their keys are then read
        # from their home servers, as get() reads them. A key on a server
        # apr-util would not pick (another server list) is ignored, as httpd
        # and get() ignore it.
        layout = self._layout
        patterns = [
            _glob_escape(self.namespace) + ":*",
            _glob_escape(META_PREFIX + self.namespace) + ":*",
        ]
        cert_ids = set()
        for index in range(len(self.servers)):
            with self._on(index, "scan") as client:
                for pattern in patterns:
                    for raw in client.scan_iter(match=pattern, count=_SCAN_COUNT):
                        key = raw.decode(errors="replace")
                        parsed = layout.parse_key(key)
                        if parsed and layout.server_of(key) == index:
                            cert_ids.add(parsed[0])
        return iter(self.get_many(sorted(cert_ids)).values())

    # -- writes ---------------------------------------------------------------

    def _store(self, key: str, value: bytes, ttl: int) -> None:
        with self._on(self._layout.server_of(key), "set") as client:
            client.set(key, value, ex=ttl)

    def _set(self, cert_id: str, flag: int, der: bytes, value: bytes, ttl: int, meta: dict[str, Any] | None) -> None:
        self._store(self._layout.staple_key(cert_id), value, _ex(ttl))
        if meta is not None:
            self._store(self._layout.meta_key(cert_id), dump_meta(meta), _ex(ttl))

    def set_many(self, writes: Sequence[StapleWrite]) -> None:
        # Each key goes to its own server, as set() places it; the SETs of
        # one server go in one pipeline, in the order of the writes.
        by_server: dict[int, list[tuple[str, bytes, int]]] = defaultdict(list)
        for w, value in encode_writes(writes):
            keyed = [(self._layout.staple_key(w.cert_id), value)]
            if w.meta is not None:
                keyed.append((self._layout.meta_key(w.cert_id), dump_meta(w.meta)))
            for key, data in keyed:
                by_server[self._layout.server_of(key)].append((key, data, _ex(w.ttl)))
        for index, sets in by_server.items():
            with self._on(index, "set_many") as client:
                pipe = client.pipeline(transaction=False)
                for key, data, ex in sets:
                    pipe.set(key, data, ex=ex)
                pipe.execute()

    def set_meta(self, cert_id: str, meta: dict[str, Any], ttl: int) -> None:
        if ttl <= 0:
            return
        self._store(self._layout.meta_key(cert_id), dump_meta(meta), _ex(ttl))

    def add_lease(self, cert_id: str, owner: str, ttl: int) -> bool:
        key = self._layout.lease_key(cert_id)
        with self._on(self._layout.server_of(key), "set") as client:
            return bool(client.set(key, owner.encode(), nx=True, ex=_ex(ttl)))

    def delete(self, cert_id: str) -> None:
        for key in (self._layout.staple_key(cert_id), self._layout.meta_key(cert_id)):
            with self._on(self._layout.server_of(key), "delete") as client:
                client.delete(key)

    def close(self) -> None:
        for client in self._clients:
            client.close()

    def __repr__(self) -> str:
        return f"RedisProvider({self.uri!r})"
