"""staplectl dashboard on the command line: options and the errors found before any screen."""

from __future__ import annotations

from typer.testing import CliRunner

from staplectl.app import app

ENV = {"NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb"}


def run(*args: str):
    return CliRunner().invoke(app, list(args), env=ENV, catch_exceptions=False)


def test_help_lists_the_keys_and_options(home):
    done = run("dashboard", "--help")
    assert done.exit_code == 0
    for word in ("--interval", "--prefetch", "--cache", "refreshes it now"):
        assert word in done.stdout


def test_a_bad_cache_uri_is_exit_2_before_any_screen(home):
    done = run("dashboard", "--cache", "memcache://")
    assert done.exit_code == 2
    assert "staplectl: error: cache URI 'memcache://': no server" in done.stderr


def test_prefetch_without_certificates_is_exit_2(home):
    done = run("dashboard", "--prefetch")
    assert done.exit_code == 2
    assert "--prefetch: no certificate could be loaded" in done.stderr


def test_interval_has_a_floor(home):
    assert run("dashboard", "--interval", "0").exit_code == 2
