"""The staplectl command line: one Typer app, one module per command.

A command's module is imported when that command runs (or its help is
asked for), as Click's documentation on lazily loading subcommands does
it: `staplectl check` must not pay for the dashboard's Textual, the
probe's pyOpenSSL or the prefetch service, and `staplectl --version` or
`--help` for none of them (tests/cli/test_startup.py keeps it so).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import typer
from typer._click import Context, HelpFormatter
from typer._click.utils import make_default_short_help
from typer.core import TyperGroup

from staplectl import __version__
from staplectl.nagios import NagiosCommand
from staplectl.options import CacheOpt, ConfigOpt, GlobalsCommand, QuietOpt, Settings, VerboseOpt

#: the app's Typer settings, which each command's own little app repeats
SETTINGS: dict[str, Any] = {"add_completion": False, "rich_markup_mode": None, "pretty_exceptions_enable": False}


@dataclass(frozen=True)
class Lazy:
    """A command, named before its module is imported."""

    module: str
    #: the first line of the command's docstring: the app's --help lists it
    #: without importing the module (tests/cli/test_startup.py checks they agree)
    summary: str
    #: staplectl.nagios.NagiosCommand for check (usage errors exit 3)
    nagios: bool = False

    def load(self, name: str) -> Any:
        function = getattr(importlib.import_module(self.module), name)
        one = typer.Typer(**SETTINGS)
        one.command(name, cls=NagiosCommand if self.nagios else GlobalsCommand)(function)
        return typer.main.get_command(one)  # one command and no callback: the command itself


COMMANDS = {
    "fetch": Lazy("staplectl.commands.fetch", "Fetch, validate and store one certificate's OCSP response."),
    "warm": Lazy("staplectl.commands.warm", "Fetch a fresh staple into the cache for every certificate that needs one."),
    "inspect": Lazy("staplectl.commands.inspect", "Show the cache's entries: status, times, time left, and what is wrong with them."),
    "prefetch": Lazy("staplectl.commands.prefetch", "Keep every configured certificate's staple fresh, in the foreground."),
    "check": Lazy("staplectl.commands.check", "Check the cached staples, for Nagios, Icinga and friends. Never fetches.", nagios=True),
    "export": Lazy("staplectl.commands.export", "Export the cached staples as files for nginx (--nginx DIR) or HAProxy (--haproxy)."),
    "locks": Lazy("staplectl.commands.locks", "Show contention on the fetch locks, and who holds which certificate now."),
    "probe": Lazy("staplectl.commands.probe", "Show what a TLS server staples, and whether it is the cache's staple."),
    "config": Lazy("staplectl.commands.config", "Print the effective configuration: the file's values over the defaults."),
    "dashboard": Lazy("staplectl.commands.dashboard", "Watch staple freshness and fetch-lock contention live; refresh staples by hand."),
}  # fmt: skip


class LazyGroup(TyperGroup):
    def get_params(self, ctx: Context) -> list[Any]:
        from staplectl.plain_params import install

        params = super().get_params(ctx)
        install(params)  # --cache, --config, -v and --help: parsed before any command
        return params

    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Context, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = COMMANDS[cmd_name].load(cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        """As Click lists them, from the summaries: no command is imported for --help."""
        limit = formatter.width - 6 - max(map(len, COMMANDS))
        rows = [(name, make_default_short_help(lazy.summary, limit)) for name, lazy in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(
    name="staplectl",
    cls=LazyGroup,
    help="Keep OCSP staples fresh for TLS servers: fetch, warm, inspect and prefetch "
    "responses in the cache that Apache httpd, nginx and HAProxy staple from.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    **SETTINGS,
)


def _version(value: bool) -> None:
    if value:
        print(f"staplectl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    cache: CacheOpt = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    ctx.obj = Settings(cache=cache, config=config, verbose=verbose, quiet=quiet)


def main() -> None:
    """The app; the program's entry point is staplectl.entry.main, which answers --version first."""
    app()
