"""One fetch: ask the responder, validate the answer, store it.

Nothing here holds a lock: callers that need one (the request path, the
prefetch worker) take the certificate's fetch lock around ``fetch`` themselves. The cache
mutex, for providers that need it, is taken by engine.store.cache around the
single ``set`` call, never across the network I/O in ``fetch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.ocsp.certs import Leaf
from engine.clock import SYSTEM_CLOCK, Clock, iso
from engine.errors import ExpiredResponseError, RollbackError
from engine.refresh.freshness import DEFAULT_POLICY, FreshnessPolicy, provider_ttl
from engine.store.cache import Cache
from engine.store.providers.base import Provider, StapleWrite
from engine.ocsp.request import OCSPQuery, build_request
from engine.ocsp.staple import Staple
from engine.responders.transport import TransportOptions, post
from engine.ocsp.validate import ValidationOptions, validate


@dataclass(frozen=True)
class FetchOptions:
    transport: TransportOptions = field(default_factory=TransportOptions)
    validation: ValidationOptions = field(default_factory=ValidationOptions)
    #: CertID hash; SHA-1 is what httpd matches on
    hash_name: str = "sha1"
    nonce: bool = False


def fetch(leaf: Leaf, options: FetchOptions = FetchOptions(), clock: Clock = SYSTEM_CLOCK) -> Staple:
    """Ask the leaf's responder and return the validated answer, or raise.

    Raises InputError (no URL, bad URL), FetchError (the responder) or
    ValidationError (the answer). revoked and unknown are returned, not raised.
    """
    url, query = query_for(leaf, options)
    body = post(url, query.der, options.transport)
    return validate_answer(body, leaf, url, query, options, clock)


def query_for(leaf: Leaf, options: FetchOptions = FetchOptions()) -> tuple[str, OCSPQuery]:
    """The URL to ask and the request to send, or the InputError why not.

    The URL itself is checked where the request is written (transport.plan,
    which transport.post and engine.responders.exchange both go through).
    """
    return leaf.responder_url(), build_request(leaf, hash_name=options.hash_name, nonce=options.nonce)


def validate_answer(
    body: bytes, leaf: Leaf, url: str, query: OCSPQuery, options: FetchOptions = FetchOptions(),
    clock: Clock = SYSTEM_CLOCK,
) -> Staple:
    """The responder's answer to ``query``, validated, or the ValidationError."""
    now = clock.now()
    source = f"response from {url}"
    staple = validate(
        body, leaf, now, cert_id=query.cert_id, nonce=query.nonce, options=options.validation, source=source
    )
    if staple.next_update is not None and staple.next_update <= now:
        # Valid within the clock skew RFC 6960 tolerates, but already past
        # nextUpdate: storing it would replace something better with a
        # staple nobody may serve.
        raise ExpiredResponseError(
            f"{source}: nextUpdate {iso(staple.next_update)} has already passed "
            f"(now {iso(now)}); an expired response is never stored"
        )
    return staple


def check_not_older(staple: Staple, stored: Staple | None, source: str) -> None:
    """Refuse a response that may not replace the stored one (Staple.may_replace)."""
    if stored is None or staple.may_replace(stored):
        return
    raise RollbackError(
        f"{source}: {staple.status}, thisUpdate {iso(staple.this_update)}, producedAt "
        f"{iso(staple.produced_at)} is older than the stored {stored.status} response "
        f"(thisUpdate {iso(stored.this_update)}, producedAt {iso(stored.produced_at)}): "
        "a replayed or stale response is never stored"
    )


def staple_meta(leaf: Leaf, staple: Staple, now: float) -> dict[str, Any]:
    """What we record beside a staple: what httpd's value has no room for."""
    return {
        "fetched_at": iso(now),
        # absolute: inspect and the dashboard run from other directories
        "cert_path": str(leaf.path.absolute()) if leaf.path else None,
        "subject": leaf.subject,
        "serial": leaf.serial_hex,
        "responder": leaf.responder_url(),
        "status": staple.status,
        "must_staple": leaf.must_staple,
    }


def store(
    cache: Cache | Provider,
    leaf: Leaf,
    staple: Staple,
    now: float,
    policy: FreshnessPolicy = DEFAULT_POLICY,
) -> int:
    """Store a validated staple; return the TTL given, 0 when it was not worth storing."""
    write = staple_write(cache, leaf, staple, now, policy)
    if write is not None:
        cache.set(write.cert_id, write.der, write.ttl, meta=write.meta)
    return write.ttl if write is not None else 0


def staple_write(
    cache: Cache | Provider, leaf: Leaf, staple: Staple, now: float, policy: FreshnessPolicy = DEFAULT_POLICY
) -> StapleWrite | None:
    """What ``store`` writes for a validated staple; None when it is not worth storing."""
    ttl = provider_ttl(staple.this_update, staple.next_update, now, policy, cache.max_ttl)
    if ttl <= 0:
        return None
    return StapleWrite(leaf.cert_id, staple.der, ttl, meta=staple_meta(leaf, staple, now))
