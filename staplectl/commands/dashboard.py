"""staplectl dashboard: the live Textual view (staplectl.dashboard).

Only the command line is here: options, the configuration, and one exit
path. Textual is imported when the command runs, not when the CLI starts,
so ``staplectl fetch`` never pays for it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from staplectl.options import command


def dashboard(
    ctx: typer.Context,
    interval: Annotated[
        float,
        typer.Option(
            "--interval", metavar="SECONDS", min=0.2, help="Seconds between reads of the cache and the lock figures."
        ),
    ] = 2.0,
    prefetch: Annotated[
        bool,
        typer.Option("--prefetch", help="Run the prefetch worker in this process while the dashboard is open."),
    ] = False,
) -> None:
    """Watch staple freshness and fetch-lock contention live; refresh staples by hand.

    One row per certificate (configured ones, and entries found in the cache
    such as those httpd wrote): status, thisUpdate, nextUpdate, validity
    left, next refresh, failures and the last error; the fetch locks'
    contention below, grouped in stripes. Enter shows one certificate in
    full; r refreshes it now (through its fetch lock, like the worker), a
    refreshes all that are due, p pauses, / and f filter, s sorts, q quits.
    A cache that cannot be reached is shown, and read again at every refresh.
    Exit 0 on quit, 2 for a bad option, cache URI or configuration.
    """
    with command(ctx) as (opts, term):
        from staplectl.dashboard.factory import make_app

        app = make_app(opts.load_config(), interval=interval, prefetch=prefetch)
        app.run()
