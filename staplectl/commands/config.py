"""staplectl config: print the effective configuration."""

from __future__ import annotations

import typer
from rich.markup import escape

from engine.api import redact
from staplectl.options import JsonOpt, command


def config(
    ctx: typer.Context,
    json_output: JsonOpt = False,
) -> None:
    """Print the effective configuration: the file's values over the defaults.

    Shows where the file came from (--config, $STAPLECTL_CONFIG, or the
    default locations), and every option with the value in force.
    """
    with command(ctx, json_errors=json_output) as (opts, term):
        effective = opts.load_config().to_dict()
    effective["cache"] = redact(effective["cache"])  # printed: never its password
    if json_output:
        term.json({"cache": effective["cache"], "config": effective})
        return
    term.out.print(f"# configuration file: {escape(effective.pop('config_file') or '(none: defaults)')}")
    for key in ("cache", "state"):
        term.out.print(f'{key} = "{escape(effective.pop(key))}"')
    certificates = effective.pop("certificates")
    actions = effective.pop("actions")
    if certificates:
        term.out.print("\n[dim]# certificates[/]")
    for spec in certificates:
        extra = "".join(f', {k} = "{v}"' for k, v in spec.items() if k != "pattern" and v)
        term.out.print(escape(f'[[certificates]]\npath = "{spec["pattern"]}"{extra}'))
    for section, values in effective.items():
        term.out.print(f"\n\\[{section}]")
        for key, value in values.items():
            if value is None:  # TOML has no null: say it is unset
                term.out.print(escape(f"# {key}: not set"))
                continue
            term.out.print(escape(f"{key} = {_toml(value)}"))
    for action in actions:
        term.out.print("\n\\[\\[actions]]")
        for key, value in action.items():
            if value is not None:
                term.out.print(escape(f"{key} = {_toml(value)}"))


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f'"{value}"' if isinstance(value, str) else str(value)
