"""Options shared by every command, and the settings they resolve to.

The global options may be given before the command (``staplectl --cache
URI fetch ...``) or after it (``staplectl fetch --cache URI ...``); the
latter wins.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from engine.api import StapleError
from staplectl.config import Config, load as load_config
from staplectl.exitcodes import for_error
from staplectl.terminal import Terminal

CacheOpt = Annotated[
    Optional[str],
    typer.Option(
        "--cache",
        envvar="STAPLECTL_CACHE",
        metavar="URI",
        help="Cache provider: local:[PATH], dbm:PATH, memcache://HOST:PORT[,...], redis[s]://[USER:PASSWORD@]HOST:PORT[/DB]. "
        "Default: local: under $STAPLECTL_HOME or the XDG state directory.",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        envvar="STAPLECTL_CONFIG",
        metavar="FILE",
        help="Configuration file (TOML).",
        show_default=False,
    ),
]
VerboseOpt = Annotated[
    int, typer.Option("--verbose", "-v", count=True, help="Say more on stderr (repeat for more).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")]
IssuerOpt = Annotated[
    Optional[Path], typer.Option("--issuer", metavar="FILE", help="Issuer certificate, for files that hold no chain.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON to stdout: no colour, stable keys.")]


@dataclass
class Settings:
    cache: str | None = None
    config: Path | None = None
    verbose: int = 0
    quiet: bool = False

    def load_config(self) -> Config:
        """The effective configuration: the file, then ``--cache`` over it."""
        config = load_config(self.config, explicit=self.config is not None)
        if self.cache:
            config.cache = self.cache
        return config


def settings(
    ctx: typer.Context,
    cache: str | None = None,
    config: Path | None = None,
    verbose: int = 0,
    quiet: bool = False,
) -> Settings:
    """Merge a command's own global options over those given before it."""
    base = ctx.find_object(Settings) or Settings()
    return Settings(
        cache=cache or base.cache,
        config=config or base.config,
        verbose=verbose or base.verbose,
        quiet=quiet or base.quiet,
    )


@contextmanager
def command(
    ctx: typer.Context,
    cache: str | None,
    config: Path | None,
    verbose: int,
    quiet: bool,
    *,
    json_errors: bool = False,
) -> Iterator[tuple[Settings, Terminal]]:
    """What every command starts with: its settings (its own global options over
    those given before it), its terminal, and errors reported one way (see
    reporting)::

        with command(ctx, cache, config, verbose, quiet, json_errors=json_output) as (opts, term):
            ...
    """
    opts = settings(ctx, cache, config, verbose, quiet)
    term = Terminal(verbose=opts.verbose, quiet=opts.quiet)
    with reporting(term, json_errors=json_errors):
        yield opts, term


@contextmanager
def reporting(term: Terminal, json_errors: bool = False) -> Iterator[None]:
    """Turn the engine's errors into one line on stderr and the right exit code.

    An operator's mistake never shows a traceback.
    """
    try:
        yield
    except StapleError as error:
        term.error(str(error))
        if json_errors:
            term.json({"error": {"reason": error.reason, "message": str(error)}})
        raise typer.Exit(int(for_error(error))) from None
