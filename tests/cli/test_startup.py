"""Start-up: each command loads only what it uses (staplectl/app.py's lazy
commands, engine.api's lazy names), so that `staplectl --version` and
`--help` start at once and `check`, which monitoring runs every minute on
every host, loads neither rich, the fetching machinery nor pyOpenSSL.
What each takes is measured in bench/startup.py; this keeps the import
sets from growing back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from staplectl.app import COMMANDS, app
from tests.cli.warm_helpers import fresh_leaf

#: runs staplectl in this interpreter and prints the modules it loaded
LOADED = """
import json, sys
sys.argv = ["staplectl", *sys.argv[1:]]
import staplectl.app
try:
    staplectl.app.main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""

#: never loaded by any of the commands below
NEVER = ["textual", "OpenSSL", "engine.refresh.prefetch", "engine.processes", "engine.probe", "rich.live"]
#: what --version and --help leave alone: every command, and everything heavy
LIGHT = [*NEVER, "staplectl.commands", "cryptography", "rich", "engine", "pydantic", "sqlite3"]
#: what check must not load to read and judge cached staples
NOT_FOR_CHECK = [
    *NEVER, "rich", "pydantic", "engine.refresh.fetch", "engine.refresh.stapler", "engine.responders.transport",
    "engine.locks.fetchlocks", "engine.refresh.fanout", "staplectl.commands.warm", "staplectl.commands.inspect",
]  # fmt: skip


def loaded(*args: str, env: dict[str, str] | None = None) -> set[str]:
    ran = subprocess.run([sys.executable, "-c", LOADED, *args], capture_output=True, text=True, timeout=60, env=env)
    return set(json.loads(ran.stderr.strip().splitlines()[-1]))


def found(modules: set[str], packages: list[str]) -> list[str]:
    """The modules that are, or are inside, one of ``packages``."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


@pytest.mark.parametrize("args", [["--version"], ["--help"]], ids=" ".join)
def test_version_and_help_load_no_command_and_nothing_heavy(args):
    assert found(loaded(*args), LIGHT) == []


def test_config_loads_no_cryptography_nor_transport(home, tmp_path):
    modules = loaded("config", "--config", "/dev/null")
    assert "staplectl.commands.config" in modules  # it ran
    assert found(modules, [*NEVER, "cryptography", "pydantic", "engine.responders.transport", "engine.locks",
                           "sqlite3"]) == []  # fmt: skip


def test_check_loads_what_reading_a_staple_needs_and_no_more(cli, pki, responder, home):
    leaf = fresh_leaf(pki, "startup")
    assert cli("warm", leaf.chain_path).exit_code == 0
    modules = loaded("check", str(leaf.chain_path), env={**os.environ, "STAPLECTL_HOME": str(home)})
    assert {"staplectl.commands.check", "cryptography.x509", "engine.ocsp.validate", "sqlite3"} <= modules
    assert found(modules, NOT_FOR_CHECK) == []


def test_the_listing_says_what_each_command_says_of_itself():
    """--help lists the commands from COMMANDS' summaries, without importing them:
    each must read as the command's own first line would."""
    import typer.main
    from typer._click.utils import make_default_short_help

    group = typer.main.get_command(app)
    for name, lazy in COMMANDS.items():
        command = group.get_command(None, name)
        first = command.help.strip().splitlines()[0]
        assert lazy.summary == first, name
        for limit in (20, 45, 60, 200):
            assert make_default_short_help(lazy.summary, limit) == command.get_short_help_str(limit), (name, limit)


@pytest.mark.parametrize(("args", "message"), [
    (["warm", "--concurrency", "0", "x.pem"], "0 is not in the range 1<=x<=1024"),
    (["warm", "--concurrency", "many", "x.pem"], "'many' is not a valid int"),
    (["fetch", "--timeout", "nan", "x.pem"], "nan is not in the range x>=0.1"),
    (["fetch", "--max-size", "1e9", "x.pem"], "'1e9' is not a valid int"),
])  # fmt: skip
def test_plain_parameters_are_checked_without_pydantic(cli, args, message):
    """staplectl/plain_params.py: bounds and types as Typer's adapters checked them, exit 2."""
    ran = cli(*args)
    assert ran.exit_code == 2 and message in " ".join(ran.stderr.split()), ran.stderr


def test_plain_parameters_arrive_as_their_types(cli, pki, responder, tmp_path):
    """An int, a float, a Path and a list reach the command typed."""
    ran = cli("fetch", pki.good.chain_path, "--timeout", "2.5", "--max-size", "4096", "--out", tmp_path / "r.der",
              "--json")  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    assert (tmp_path / "r.der").read_bytes()
    many = cli("warm", pki.good.chain_path, pki.other.chain_path, "-j", "3", "--json")
    assert many.exit_code in (0, 1) and len(many.rows()) == 2
