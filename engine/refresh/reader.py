"""Reading staples back from the cache: what check, export, inspect and the
dashboard need, and the first step of every refresh (engine.refresh.stapler).

Every staple read is validated again (signature, responder, CertID): the
cache may be shared, and anyone who can write to it could plant a
response. Validated bytes are remembered per certificate (by digest), so
re-reading an unchanged staple costs a hash and not a signature verification.
Reading takes no fetch lock: a monitoring check needs no lock directory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import ValidationError
from engine.ocsp.certs import Leaf
from engine.ocsp.staple import Staple
from engine.ocsp.validate import validate
from engine.refresh.freshness import DEFAULT_POLICY, FreshnessPolicy, is_usable, renewal_point_for
from engine.store.cache import Cache
from engine.store.providers.base import Entry
from engine.store.providers.layout import FLAG_VALID

#: certificates whose last validated staple is remembered; one per
#: certificate, the newest, so that a service renewing for days holds as
#: many as it has certificates
MEMO_SIZE = 200_000


def staple_digest(der: bytes) -> bytes:
    """What a validated staple is remembered by: the SHA-256 of its DER
    (the memo here, and the prefetch worker's ``validated`` table)."""
    return hashlib.sha256(der).digest()


class StapleReader:
    """The cache's staples, validated, and what the freshness policy says of them."""

    def __init__(self, cache: Cache, *, policy: FreshnessPolicy = DEFAULT_POLICY, clock: Clock = SYSTEM_CLOCK) -> None:
        self.cache = cache
        self.policy = policy
        self.clock = clock
        #: cert_id -> (SHA-256 of the staple's DER, the issuer it was
        #: validated with, the staple without its DER): a digest and not the
        #: bytes, which the store hands over again at every read anyway
        #: (100,000 certificates: 30 MB less)
        self._memo: dict[str, tuple[bytes, Any, Staple]] = {}

    def cached(self, leaf: Leaf) -> Staple | None:
        """The cached staple for ``leaf`` if it is genuine, whatever its age.

        Re-validated on every read (signature, responder, CertID): the
        cache may be shared, and anyone who can write to it could plant a
        response. httpd's own error entries (flag 0x00) and anything that
        fails validation count as missing.
        """
        return self._genuine(leaf, self.cache.get(leaf.cert_id))

    def cached_many(
        self, leaves: list[Leaf], entries: dict[str, Entry] | None = None, *, validated: Mapping[str, bytes] = {}
    ) -> dict[str, Staple | None]:
        """cached() for several certificates, in one round trip to the store
        (none when the caller read their ``entries`` already).

        ``validated``: cert_id -> SHA-256 of the staple this host validated
        last (the prefetch worker's state, at a restart). A cached staple
        with that very digest is not verified again, unless the store is
        shared: there, anyone who can write may have planted it, and bytes
        are checked every time they are read.
        """
        if entries is None:
            entries = self.cache.get_many([leaf.cert_id for leaf in leaves])
        if validated and self.cache.shared:
            validated = {}
        return {leaf.cert_id: self._genuine(leaf, entries.get(leaf.cert_id), validated) for leaf in leaves}

    def _genuine(self, leaf: Leaf, entry: Entry | None, validated: Mapping[str, bytes] = {}) -> Staple | None:
        if not entry or entry.flag != FLAG_VALID or not entry.der:
            return None
        known = self._memo.get(leaf.cert_id)
        remembered = validated.get(leaf.cert_id)
        digest = staple_digest(entry.der) if known is not None or remembered is not None else None
        if known is not None and known[1] == leaf.issuer and known[0] == digest:
            return replace(known[2], der=entry.der)
        before = remembered is not None and remembered == digest
        try:
            staple = validate(entry.der, leaf, self.clock.now(), check_time=False, source="cached staple",
                              verified_before=before)  # fmt: skip
        except ValidationError:
            return None
        self._remember(leaf, staple)
        return staple

    def _remember(self, leaf: Leaf, staple: Staple) -> None:
        if len(self._memo) >= MEMO_SIZE and leaf.cert_id not in self._memo:
            self._memo.clear()
        self._memo[leaf.cert_id] = (staple_digest(staple.der), leaf.issuer, replace(staple, der=b""))

    def usable(self, staple: Staple | None, now: float) -> bool:
        return staple is not None and is_usable(staple.this_update, staple.next_update, now, self.policy)

    def due(self, staple: Staple, now: float) -> bool:
        return now >= renewal_point_for(staple.status, staple.this_update, staple.next_update, self.policy)

    def close(self) -> None:
        self.cache.close()
