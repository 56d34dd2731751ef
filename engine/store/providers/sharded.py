"""httpd's cache layout spread over several servers (memcached, redis).

What memcache.py and redis.py share: which server holds a key (apr-util's
choice, docs/design.md), and how the raw values of a staple key and a metadata
key become an Entry.

Each key is placed on its own: the metadata key goes where apr-util would
put *it*, not next to its staple. httpd never reads the metadata, so only
consistency among staplectl instances matters, and this rule is the one any
apr-style client computes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from engine.errors import EntryFormatError
from engine.store.providers.base import Entry
from engine.store.providers.layout import (
    FLAG_VALID,
    META_PREFIX,
    apr_server_index,
    cert_id_from_key,
    decode_value,
    lease_key,
    meta_key,
    staple_key,
)
from engine.store.providers.meta import load_meta


def server_label(server: tuple[str, int]) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Layout:
    """Keys of one namespace on ``server_count`` servers."""

    def __init__(self, namespace: str, server_count: int) -> None:
        if server_count < 1:
            raise ValueError("at least one server is needed")
        self.namespace = namespace
        self.server_count = server_count

    def staple_key(self, cert_id: str) -> str:
        return staple_key(self.namespace, cert_id)

    def meta_key(self, cert_id: str) -> str:
        return meta_key(self.namespace, cert_id)

    def lease_key(self, cert_id: str) -> str:
        return lease_key(self.namespace, cert_id)

    def server_of(self, key: str) -> int:
        return apr_server_index(key, self.server_count)

    def by_server(self, keys: Iterable[str]) -> dict[int, list[str]]:
        groups: dict[int, list[str]] = defaultdict(list)
        for key in dict.fromkeys(keys):
            groups[self.server_of(key)].append(key)
        return groups

    def parse_key(self, key: str) -> tuple[str, bool] | None:
        """(cert_id, is_meta) for a key of ours, None for anything else."""
        cert_id = cert_id_from_key(self.namespace, key)
        if cert_id:
            return cert_id, False
        cert_id = cert_id_from_key(META_PREFIX + self.namespace, key)
        return (cert_id, True) if cert_id else None

    def entry(
        self,
        cert_id: str,
        staple: bytes | Exception | None,
        meta: bytes | Exception | None,
        staple_expires_at: float | None = None,
        meta_expires_at: float | None = None,
    ) -> Entry | None:
        """The Entry for raw values (or the store's error reading one), or None when there is nothing.

        What is not ours under our keys (a value that is not flag + DER, a
        redis key of another type, metadata outside its schema) is junk for
        this certificate alone: it is said in ``problem``, and the next
        store overwrites it.
        """
        flag, der, problems = FLAG_VALID, b"", []
        if isinstance(staple, Exception):
            problems.append(f"staple key: {staple}")
        elif staple is not None:
            try:
                flag, der = decode_value(staple)
            except EntryFormatError as error:
                problems.append(f"staple value: {error}")
        meta_dict, meta_problem = (None, f"metadata key: {meta}") if isinstance(meta, Exception) else load_meta(meta)
        if meta_problem:
            problems.append(meta_problem)
        if not der and meta_dict is None and not problems:
            return None
        return Entry(
            cert_id=cert_id,
            key=self.staple_key(cert_id),
            der=der,
            flag=flag,
            expires_at=staple_expires_at if der else meta_expires_at,
            meta=meta_dict,
            problem="; ".join(problems) or None,
        )
