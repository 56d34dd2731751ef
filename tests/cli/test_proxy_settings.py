"""Which proxy the commands use: responder.proxy, else the environment's
($http_proxy, $https_proxy, $no_proxy), as operators expect."""

from __future__ import annotations

import pytest

from engine.api import parse_proxy
from staplectl.config import from_dict
from staplectl.from_config import proxy_settings
from tests.forward_proxy import start_tinyproxy
from tests.loopback import CONFIG_ALLOW


def settings(environ, **responder):
    return proxy_settings(from_dict({"responder": responder}), environ)


def test_the_environment_when_the_configuration_names_none():
    got = settings({"http_proxy": "http://low:1", "HTTP_PROXY": "http://up:2", "HTTPS_PROXY": "http://sec:3",
                    "NO_PROXY": "internal.example"})  # fmt: skip
    assert got.for_url("http", "ocsp.example").host == "low"  # lower case first, as curl
    assert got.for_url("https", "ocsp.example").host == "sec"
    assert got.for_url("http", "ocsp.internal.example") is None


def test_the_configuration_wins_over_the_environment():
    got = settings({"http_proxy": "http://env:1", "no_proxy": "*"}, proxy="http://conf:3128", no_proxy=["direct.example"])
    assert got.for_url("http", "ocsp.example") == parse_proxy("http://conf:3128")
    assert got.for_url("https", "ocsp.example").host == "conf"  # one proxy for both
    assert got.for_url("http", "direct.example") is None


def test_none_at_all():
    assert settings({}).for_url("http", "ocsp.example") is None


@pytest.mark.parametrize("toml, message", [
    ('proxy = "socks5://p:1080"', "responder.proxy 'socks5://p:1080': scheme 'socks5' is not supported"),
    ('proxy = 3128', "responder.proxy = 3128 should be a string"),
    ('no_proxy = "x"', "responder.no_proxy should be a list of strings"),
])  # fmt: skip
def test_bad_configuration_is_named(cli, tmp_path, toml, message):
    config = tmp_path / "c.toml"
    config.write_text(f"[responder]\n{toml}\n")
    ran = cli("config", "--config", config)
    assert ran.exit_code == 2 and message in ran.stderr


def test_a_bad_environment_proxy_is_named(cli, pki):
    ran = cli("fetch", pki.good.chain_path, env={"http_proxy": "ftp://p:21"})
    assert ran.exit_code == 2 and "$http_proxy 'ftp://p:21': scheme 'ftp' is not supported" in ran.stderr


def test_fetch_and_warm_through_the_configured_proxy(cli, pki, responder, tmp_path):
    proxy = start_tinyproxy(basic_auth=("ops", "s3cret"))
    try:
        config = tmp_path / "c.toml"
        config.write_text(f'{CONFIG_ALLOW}proxy = "http://ops:s3cret@127.0.0.1:{proxy.port}"\n')
        assert cli("fetch", pki.good.chain_path, "--config", config).exit_code == 0
        assert cli("warm", pki.other.chain_path, "--config", config).exit_code == 0
        assert proxy.log().count(f"POST {pki.ocsp_url}") == 2
        shown = cli("config", "--config", config).stdout
        assert "s3cret" not in shown and "ops:***@127.0.0.1" in shown
    finally:
        proxy.stop()


def test_the_environments_proxy_and_no_proxy(cli, pki, responder, tmp_path):
    proxy = start_tinyproxy()
    try:
        assert cli("fetch", pki.good.chain_path, env={"http_proxy": proxy.url}).exit_code == 0
        assert proxy.log().count("POST ") == 1
        assert cli("fetch", pki.good.chain_path, env={"http_proxy": proxy.url, "no_proxy": "127.0.0.1"}).exit_code == 0
        assert proxy.log().count("POST ") == 1  # straight to the responder
    finally:
        proxy.stop()
