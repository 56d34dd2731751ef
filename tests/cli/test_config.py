"""staplectl config: the effective configuration, and the bad-input matrix
for configuration files shared by every command."""

from __future__ import annotations

import hashlib

import pytest
from pymemcache.client.base import Client

from tests.loopback import CONFIG_ALLOW
from tests.openssl_responder import OpenSSLResponder


def test_defaults_without_a_file(cli, home, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "nothing-here"))  # not the home fixture's
    ran = cli("config", "--json")
    assert ran.exit_code == 0
    data = ran.json()["config"]
    assert data["config_file"] is None
    assert data["cache"] == f"local:{home / 'staples.db'}"
    assert data["locks"] == {"stripes": 64, "directory": str(home / "locks")}
    assert data["prefetch"]["renew_fraction"] == 0.5 and data["responder"]["timeout"] == "10s"
    assert data["responder"]["allow"] == []  # no private, loopback or link-local responder


def test_file_values_and_cache_option_win(cli, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('cache = "memcache://127.0.0.1:1"\ncertificates = ["a.pem"]\n[prefetch]\nmin_delay = "2m"\n')
    data = cli("config", "--config", path, "--json").json()["config"]
    assert data["config_file"] == str(path)
    assert data["cache"] == "memcache://127.0.0.1:1"
    assert data["prefetch"]["min_delay"] == "2m"
    assert data["certificates"] == [{"pattern": str(tmp_path / "a.pem"), "issuer": None, "url": None}]
    assert cli("--cache", "redis://127.0.0.1:2", "config", "--config", path, "--json").json()["config"]["cache"] == "redis://127.0.0.1:2"


def test_global_options_go_before_or_after_the_command_and_after_wins(cli, tmp_path):
    """Declared once on the app; every command takes them in either place."""
    path = tmp_path / "c.toml"
    path.write_text('cache = "memcache://127.0.0.1:1"\n')

    def effective(*args):
        ran = cli(*args)
        assert ran.exit_code == 0, ran.stderr
        return ran.json()["config"]

    assert effective("--config", path, "config", "--json")["cache"] == "memcache://127.0.0.1:1"
    assert effective("config", "--config", path, "--json")["config_file"] == str(path)
    assert effective("--cache", "redis://127.0.0.1:2", "config", "--json")["cache"] == "redis://127.0.0.1:2"
    assert effective("--cache", "redis://127.0.0.1:2", "config", "--cache", "redis://127.0.0.1:3", "--json")["cache"] \
        == "redis://127.0.0.1:3"
    assert effective("--config", path, "config", "--cache", "redis://127.0.0.1:4", "--json")["cache"] \
        == "redis://127.0.0.1:4"  # the file from before, the cache from after
    bad = cli("check", "--cache", "redis://127.0.0.1:2", "-q", "/nonexistent.pem")
    assert bad.exit_code == 3 and "matches no file" in bad.stdout  # check's own class takes them too
    assert "No such option" not in bad.stderr


def test_human_output_is_toml_like(cli):
    ran = cli("config")
    assert ran.exit_code == 0
    assert "[prefetch]" in ran.stdout and 'min_delay = "1m"' in ran.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus = 1\n", "unknown key 'bogus'"),
        ('[prefetch]\nmin_delay = "soon"\n', "prefetch.min_delay: 'soon' is not a duration"),
        ("certificates = [\n", "not valid TOML"),
        ('[locks]\nstripes = "many"\n', "locks.stripes = 'many' should be an integer"),
    ],
    ids=["bad-key", "bad-duration", "not-toml", "bad-type"],
)
@pytest.mark.parametrize("command", ["config", "warm", "prefetch", "fetch"])
def test_bad_configuration_is_exit_2_for_every_command(cli, tmp_path, pki, text, message, command):
    path = tmp_path / "c.toml"
    path.write_text(text)
    args = [command, "--config", path]
    if command == "fetch":
        args.append(pki.good.chain_path)
    ran = cli(*args)
    assert ran.exit_code == 2
    assert str(path) in ran.stderr and message in ran.stderr
    assert "Traceback" not in ran.stderr


def test_missing_named_file(cli, tmp_path):
    ran = cli("config", "--config", tmp_path / "absent.toml")
    assert ran.exit_code == 2 and "absent.toml: no such configuration file" in ran.stderr


def test_subprocess_config_from_the_environment(staplectl, tmp_path):
    path = tmp_path / "env.toml"
    path.write_text('[request]\nlease = true\n')
    ran = staplectl("config", "--json", env={"STAPLECTL_CONFIG": str(path)})
    assert ran.exit_code == 0, ran.stderr
    assert ran.json()["config"]["request"]["lease"] is True


def test_subprocess_prefetch_once_from_openssl_into_memcached(staplectl, pki, memcached, tmp_path):
    # the prefetch command against the real `openssl ocsp` and a real memcached
    with OpenSSLResponder(pki, tmp_path / "ocsp") as real:
        config = tmp_path / "c.toml"
        config.write_text(
            f'cache = "memcache://{memcached.host}:{memcached.port}"\n'
            f'[[certificates]]\npath = "{pki.other.chain_path}"\nurl = "{real.url}"\n' + CONFIG_ALLOW
        )
        ran = staplectl("prefetch", "--once", "--config", config)
    assert ran.exit_code == 0, ran.stderr
    assert "updated" in ran.stderr
    key = f"mod_ssl-staple:{hashlib.sha1(pki.other.der_path.read_bytes()).hexdigest()}"
    assert Client(memcached.address).get(key)[0] == 1
