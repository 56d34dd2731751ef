"""Options shared by every command, and the settings they resolve to.

The global options (``--cache``, ``--config``, ``-v``, ``-q``) are declared
once, on the app's callback, and may be given before the command
(``staplectl --cache URI fetch ...``) or after it (``staplectl fetch
--cache URI ...``); the latter wins. Every command's class (GlobalsCommand)
accepts them after the command too, so no command declares them, and
``command()`` is every command's preamble: settings, terminal, errors.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterator, Optional

import typer
from typer.core import TyperCommand

if TYPE_CHECKING:
    from staplectl.config import Config
    from staplectl.terminal import Terminal

# What a command needs to run (its configuration, its terminal, its errors)
# is imported when it runs: the app imports this module for its options,
# and `staplectl --version` or `--help` must not load rich or the engine.

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
HashOpt = Annotated[
    Optional[str],
    typer.Option(
        "--hash", metavar="NAME", show_default=False,
        help="CertID hash of the requests: sha1, sha256, sha384 or sha512. [default: responder.hash, sha1]",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object to stdout, in the envelope every command shares (schema, command, error; docs/json.md).")]


@dataclass
class Settings:
    cache: str | None = None
    config: Path | None = None
    verbose: int = 0
    quiet: bool = False

    def load_config(self) -> Config:
        """The effective configuration: the file, then ``--cache`` over it."""
        from staplectl.config import load as load_config

        config = load_config(self.config, explicit=self.config is not None)
        if self.cache:
            config.cache = self.cache
        return config


#: the app callback's options that every command accepts after its name too
GLOBAL_OPTIONS = ("cache", "config", "verbose", "quiet")


class GlobalsCommand(TyperCommand):
    """A command that also takes the app's global options, declared once there.

    The group's own option objects are listed among the command's (so
    parsing, ``--help``, the man page and the completions all see them),
    and taken out of its arguments before the command function is called:
    what was given after the command is merged over what was given before
    it, into the Settings that ``command()`` hands out.
    """

    def get_params(self, ctx: typer.Context) -> list[Any]:
        from staplectl.plain_params import install

        params = super().get_params(ctx)
        install(params)  # --help's own option is made here, after __init__
        group = ctx.parent.command if ctx.parent is not None else None
        shared = [p for p in (group.params if group else []) if p.name in GLOBAL_OPTIONS]
        # before --help, which click puts last
        return params[:-1] + shared + params[-1:] if params and params[-1].name == "help" else params + shared

    def invoke(self, ctx: typer.Context) -> Any:
        given = {name: ctx.params.pop(name) for name in GLOBAL_OPTIONS if name in ctx.params}
        base = ctx.find_object(Settings) or Settings()
        config = given.get("config")
        ctx.obj = opts = Settings(
            cache=given.get("cache") or base.cache,
            config=Path(config) if config else base.config,
            verbose=given.get("verbose") or base.verbose,
            quiet=given.get("quiet") or base.quiet,
        )
        # Around the whole command, for what it does outside command()
        # (printing its result, mostly): a bug there is one line too.
        from staplectl.terminal import Terminal

        term = Terminal(verbose=opts.verbose, quiet=opts.quiet, command=ctx.info_name or "staplectl")
        with reporting(term, bool(ctx.params.get("json_output"))):
            return super().invoke(ctx)


def settings(ctx: typer.Context) -> Settings:
    """The command's settings: its global options merged over those given before it."""
    return ctx.find_object(Settings) or Settings()


@contextmanager
def command(ctx: typer.Context, *, json_errors: bool = False) -> Iterator[tuple[Settings, Terminal]]:
    """What every command starts with: its settings, its terminal, and errors
    reported one way (see reporting)::

        with command(ctx, json_errors=json_output) as (opts, term):
            ...
    """
    from staplectl.terminal import Terminal

    opts = settings(ctx)
    term = Terminal(verbose=opts.verbose, quiet=opts.quiet, command=ctx.info_name or "staplectl")
    with reporting(term, json_errors=json_errors):
        yield opts, term


@contextmanager
def reporting(term: Terminal, json_errors: bool = False) -> Iterator[None]:
    """Turn the engine's errors into one line on stderr and the right exit code.

    An operator's mistake never shows a traceback, and neither does a bug:
    any other exception is an internal error, one line and exit 3 (its
    traceback at -vv or with $STAPLECTL_TRACEBACK=1). Typer's own ways out
    (Exit and Abort are RuntimeErrors; usage errors) pass through.
    """
    from typer.exceptions import TyperException

    from engine.api import StapleError, UnexpectedError
    from staplectl.exitcodes import Exit, for_error
    from staplectl.json_output import error_fields

    try:
        yield
    except StapleError as error:
        term.error(str(error))
        if json_errors:
            term.json(error_fields(error.reason, str(error)))
        raise typer.Exit(int(for_error(error))) from None
    except (typer.Exit, typer.Abort, TyperException):
        raise
    except Exception as exc:
        what = term.internal_error(exc)
        if json_errors:
            term.json(error_fields(UnexpectedError.reason, what))
        raise typer.Exit(int(Exit.FAILED)) from None
