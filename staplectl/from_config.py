"""Building the engine from the effective configuration, the same way for
every command (and the dashboard)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

# engine.api's names are looked up when a function runs, not here: a
# command that only reads (check) must not load the fetching machinery.
import engine.api as api
from staplectl.config import Config

if TYPE_CHECKING:
    from engine.api import (
        EngineSettings, FetchOptions, ProxySettings, StapleReader, Stapler, ValidationOptions, WorkerOptions,
    )

#: how long the prefetch worker (the service's on SIGTERM, the dashboard's
#: on quitting) waits for its running refreshes: well inside systemd's
#: TimeoutStopSec and the 5 s an operator expects
WORKER_STOP_GRACE = 3.0


def refresh_lock_timeout(config: Config) -> float:
    """How long a one-shot refresh (warm, the dashboard's) waits for a
    certificate's fetch lock: long enough to outlast one fetch by whoever
    holds it (a prefetch service), whose own deadline is about ours."""
    return 2 * config.responder.timeout + 1


def worker_options(config: Config) -> WorkerOptions:
    """The prefetch worker's options, the same for the service and the
    dashboard's: a job waits for a fetch lock a little longer than one fetch."""
    return api.WorkerOptions(
        concurrency=config.prefetch.concurrency,
        per_responder=config.prefetch.per_responder,
        stop_grace=WORKER_STOP_GRACE,
        lock_timeout=config.responder.timeout + 5,
    )


def fetch_options(config: Config) -> FetchOptions:
    r = config.responder
    return api.FetchOptions(
        transport=api.TransportOptions(
            timeout=r.timeout, max_size=r.max_size, use_get=r.get, allow=api.parse_allow(r.allow),
            proxy=proxy_settings(config),
        ),
        validation=validation_options(config),
        nonce=r.nonce,
        hash_name=r.hash,
    )


def validation_options(config: Config) -> ValidationOptions:
    """How a response is judged: all that a command needs that only reads (check)."""
    r = config.responder
    return api.ValidationOptions(
        skew=r.skew, max_age=r.max_age, check_not_after=r.check_not_after, refuse_weak=r.refuse_weak
    )


def proxy_settings(config: Config, environ: Mapping[str, str] = os.environ) -> ProxySettings:
    """The configuration's responder.proxy for every responder; without one,
    the environment's, as curl reads it: $http_proxy for http responders,
    $https_proxy for https ones (lower case first, then upper), $no_proxy."""
    r = config.responder
    if r.proxy:
        proxy = api.parse_proxy(r.proxy, "responder.proxy")
        return api.ProxySettings((("http", proxy), ("https", proxy)), tuple(r.no_proxy))
    proxies = []
    for scheme in ("http", "https"):
        for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY"):
            if environ.get(name):
                proxies.append((scheme, api.parse_proxy(environ[name], f"${name}")))
                break
    no_proxy = api.parse_no_proxy(environ.get("no_proxy") or environ.get("NO_PROXY") or "")
    return api.ProxySettings(tuple(proxies), no_proxy + tuple(r.no_proxy))


def engine_settings(config: Config) -> EngineSettings:
    """The engine's settings, every default resolved here, once: worker
    processes build from these exactly what this process would."""
    return api.EngineSettings(
        cache_uri=config.cache_uri,
        lock_dir=Path(os.path.abspath(config.locks.path())),
        stripes=config.locks.stripes,
        fetch=fetch_options(config),
        policy=config.policy(),
        stapler=api.StaplerOptions(
            prefetch=config.prefetch.enabled,
            request_budget=config.request.budget,
            lease=config.request.lease,
            lease_ttl=int(config.request.lease_ttl),
        ),
    )


def open_stapler(config: Config) -> Stapler:
    """The cache, the fetch locks and the request path, as configured."""
    return api.build_stapler(engine_settings(config))


def open_reader(config: Config) -> StapleReader:
    """The cache's staples, for reading only (check, export): no lock
    directory, and nothing of the fetching machinery loaded."""
    return api.build_reader(api.EngineSettings(config.cache_uri, Path(os.path.abspath(config.locks.path())),
                                               policy=config.policy()))  # fmt: skip
