"""The staplectl command line: one Typer app, one module per command."""

from __future__ import annotations

import typer

from staplectl import __version__
from staplectl.commands import check as check_command
from staplectl.commands import config as config_command
from staplectl.commands import dashboard as dashboard_command
from staplectl.commands import export as export_command
from staplectl.commands import fetch as fetch_command
from staplectl.commands import inspect as inspect_command
from staplectl.commands import locks as locks_command
from staplectl.commands import prefetch as prefetch_command
from staplectl.commands import probe as probe_command
from staplectl.commands import warm as warm_command
from staplectl.nagios import NagiosCommand
from staplectl.options import CacheOpt, ConfigOpt, GlobalsCommand, QuietOpt, Settings, VerboseOpt

app = typer.Typer(
    name="staplectl",
    help="Keep OCSP staples fresh for TLS servers: fetch, warm, inspect and prefetch "
    "responses in the cache that Apache httpd, nginx and HAProxy staple from.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
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


app.command("fetch", cls=GlobalsCommand)(fetch_command.fetch)
app.command("warm", cls=GlobalsCommand)(warm_command.warm)
app.command("inspect", cls=GlobalsCommand)(inspect_command.inspect)
app.command("prefetch", cls=GlobalsCommand)(prefetch_command.prefetch)
app.command("check", cls=NagiosCommand)(check_command.check)
app.command("export", cls=GlobalsCommand)(export_command.export)
app.command("locks", cls=GlobalsCommand)(locks_command.locks)
app.command("probe", cls=GlobalsCommand)(probe_command.probe)
app.command("config", cls=GlobalsCommand)(config_command.config)
app.command("dashboard", cls=GlobalsCommand)(dashboard_command.dashboard)


def main() -> None:
    app()
