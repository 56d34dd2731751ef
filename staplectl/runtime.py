"""Building the engine from the effective configuration, the same way for
every command (and the dashboard)."""

from __future__ import annotations

from engine.api import (
    Cache, FetchLocks, FetchOptions, ResponderHealth, Stapler, StaplerOptions, TransportOptions, ValidationOptions,
    open_provider, parse_allow,
)
from staplectl.config import Config


def fetch_options(config: Config) -> FetchOptions:
    r = config.responder
    return FetchOptions(
        transport=TransportOptions(
            timeout=r.timeout, max_size=r.max_size, use_get=r.get, allow=parse_allow(r.allow)
        ),
        validation=ValidationOptions(skew=r.skew, max_age=r.max_age, check_not_after=r.check_not_after),
        nonce=r.nonce,
    )


def open_stapler(config: Config) -> Stapler:
    """The cache, the fetch locks and the request path, as configured."""
    cache = Cache(open_provider(config.cache_uri))
    locks = FetchLocks(config.locks.path(), config.locks.stripes)
    options = StaplerOptions(
        prefetch=config.prefetch.enabled,
        request_budget=config.request.budget,
        lease=config.request.lease,
        lease_ttl=int(config.request.lease_ttl),
    )
    health = ResponderHealth(config.locks.path())  # beside the locks, shared by every process on the host
    return Stapler(
        cache, locks, fetch_options=fetch_options(config), policy=config.policy(), options=options, health=health
    )
