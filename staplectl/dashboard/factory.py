"""One factory for the dashboard, used by the CLI and the tests alike (posting).

Everything the app needs from the configuration is wired here: the
Collector (what is read), the Refresher (refresh-now through the engine),
and, with ``--prefetch``, the worker run in-process. A test swaps only
what it must (a StaticCollector with fixed data, a frozen clock); the rest
is what an operator gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.api import SYSTEM_CLOCK, Clock, InputError, LoadResult, load_all
from staplectl.config import Config
from staplectl.dashboard.actions import InProcessPrefetch, Refresher
from staplectl.dashboard.app import DashboardApp
from staplectl.dashboard.snapshot import Collector
from staplectl.from_config import fetch_options, open_stapler, refresh_lock_timeout, worker_options


def make_app(
    config: Config,
    *,
    interval: float = 2.0,
    prefetch: bool = False,
    clock: Clock = SYSTEM_CLOCK,
    collector: Any = None,
) -> DashboardApp:
    """The dashboard for a configuration: what ``staplectl dashboard`` runs and tests drive.

    ``collector`` replaces the reading side (tests and screenshots give a
    StaticCollector with fixed data); everything else is as the CLI has it.
    Raises InputError for a bad cache URI, or ``prefetch`` without certificates.
    """
    loaded = load_all(config.certificates) if config.certificates else LoadResult()
    if prefetch and not loaded.leaves:
        where = config.path or "the configuration"
        raise InputError(f"--prefetch: no certificate could be loaded from {where}: add `certificates = [...]`")
    if collector is None:
        collector = Collector(
            cache_uri=config.cache_uri, leaves=loaded.leaves, lock_dir=config.locks.path(),
            state_path=config.state_path(), policy=config.policy(), options=fetch_options(config).validation,
            problems=tuple(str(error) for _, error in loaded.problems),  # each names its file
            prefetch_expected=config.prefetch.enabled or prefetch, in_process=prefetch, clock=clock,
        )  # fmt: skip

    def engine() -> Any:
        stapler = open_stapler(config)
        stapler.clock = clock
        return stapler

    refresher = Refresher(engine, lock_timeout=refresh_lock_timeout(config), concurrency=config.prefetch.concurrency)
    worker = None
    if prefetch:
        worker = InProcessPrefetch(
            engine, Path(config.state_path()), loaded.leaves, options=worker_options(config), clock=clock
        )
    return DashboardApp(collector, refresher=refresher, prefetch=worker, interval=interval)
