"""Building the engine from its settings: a StapleReader, or a Stapler with
its fetch locks and responder health.

``EngineSettings`` holds everything resolved (no default left to look up,
no path relative to a working directory), so that it can be pickled to a
worker process (engine.processes) and build there exactly what the parent
would. The CLI makes one from its configuration file
(staplectl/from_config.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.refresh.freshness import DEFAULT_POLICY, FreshnessPolicy
from engine.refresh.reader import StapleReader
from engine.store.cache import Cache
from engine.store.providers import open_provider

if TYPE_CHECKING:
    from engine.refresh.fetch import FetchOptions
    from engine.refresh.stapler import Stapler, StaplerOptions

# The request path's parts (fetching, fetch locks, responder health) are
# imported by build_stapler: a reader (check, export) needs none of them.


@dataclass(frozen=True)
class EngineSettings:
    #: the cache's URI (engine.store.providers)
    cache_uri: str
    #: the fetch locks' directory; responder health lives beside them
    lock_dir: Path
    #: how the locks' figures are grouped; None: engine.locks.fetchlocks.DEFAULT_STRIPES
    stripes: int | None = None
    #: None: FetchOptions()
    fetch: FetchOptions | None = None
    policy: FreshnessPolicy = DEFAULT_POLICY
    #: None: StaplerOptions()
    stapler: StaplerOptions | None = None


def build_stapler(settings: EngineSettings) -> Stapler:
    """The cache, the fetch locks and the request path."""
    from engine.locks.fetchlocks import DEFAULT_STRIPES, FetchLocks
    from engine.refresh.fetch import FetchOptions
    from engine.refresh.stapler import Stapler, StaplerOptions
    from engine.responders.health import ResponderHealth

    cache = Cache(open_provider(settings.cache_uri))
    try:
        locks = FetchLocks(settings.lock_dir, settings.stripes or DEFAULT_STRIPES)
    except BaseException:
        cache.close()
        raise
    health = ResponderHealth(settings.lock_dir)  # shared by every process on the host
    return Stapler(
        cache, locks, fetch_options=settings.fetch or FetchOptions(), policy=settings.policy,
        options=settings.stapler or StaplerOptions(), health=health,
    )  # fmt: skip


def build_reader(settings: EngineSettings) -> StapleReader:
    """The cache's staples, for reading only: no lock directory is opened, so
    a monitoring check running as another user needs no write access to it."""
    return StapleReader(Cache(open_provider(settings.cache_uri, read_only=True)), policy=settings.policy)
