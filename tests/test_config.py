"""The configuration file: defaults, validation, where it is found."""

from __future__ import annotations

import re

from pathlib import Path

import pytest

from engine.durations import format_duration, parse_duration
from staplectl.config import ConfigError, Config, from_dict, load

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "config.toml"


def test_a_file_with_only_certificates_works(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('certificates = ["certs/*.pem"]\n')
    config = load(path, explicit=True)
    assert config.certificates[0].pattern == str(tmp_path / "certs" / "*.pem")  # relative to the file
    assert config.prefetch == Config().prefetch
    assert config.responder.timeout == 10


def test_the_example_is_the_defaults(tmp_path):
    config = load(EXAMPLE, explicit=True)
    defaults = Config()
    for section in ("locks", "prefetch", "responder", "request"):
        assert getattr(config, section) == getattr(defaults, section), section


def test_tables_with_issuer_and_url(tmp_path):
    config = from_dict(
        {"certificates": [{"path": "/a.pem", "issuer": "/i.pem", "url": "http://127.0.0.1:1/"}]},
        tmp_path / "c.toml",
    )
    spec = config.certificates[0]
    assert (spec.pattern, spec.issuer, spec.url) == ("/a.pem", Path("/i.pem"), "http://127.0.0.1:1/")


def test_durations_and_policy():
    config = from_dict({"prefetch": {"min_delay": "2m", "backoff_cap": "2h"}, "responder": {"timeout": 5}})
    assert config.policy().min_delay == 120
    assert config.policy().backoff_cap == 7200
    assert config.responder.timeout == 5.0
    assert config.to_dict()["prefetch"]["min_delay"] == "2m"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"prefetch": {"min_dealy": "1m"}}, "unknown key prefetch.min_dealy"),
        ({"prefetch": {"min_delay": "soon"}}, "prefetch.min_delay: 'soon' is not a duration"),
        ({"prefetch": {"renew_fraction": 2.0}}, "prefetch.renew_fraction = 2 is out of bounds: it must be above 0 and below 1"),
        ({"prefetch": {"concurrency": 0}}, "prefetch.concurrency = 0 is out of bounds: it must be at least 1 and at most 1024"),
        ({"locks": {"stripes": 5000}}, "locks.stripes = 5000 is out of bounds: it must be at least 1 and at most 4096"),
        ({"responder": {"timeout": float("inf")}}, "responder.timeout = inf is out of bounds"),
        ({"responder": {"timeout": float("nan")}}, "responder.timeout = nan is out of bounds"),
        ({"responder": {"timeout": "99999999999d"}}, "responder.timeout = 8.64e+15 is out of bounds: it must be at least 0.1 and at most 300 s"),
        ({"responder": {"max_size": 4000000000}}, "responder.max_size = 4000000000 is out of bounds: it must be at least 512 and at most 1048576 bytes"),
        ({"request": {"budget": 0}}, "request.budget = 0 is out of bounds"),
        ({"locks": {"stripes": "many"}}, "locks.stripes = 'many' should be an integer"),
        ({"responder": {"nonce": "yes"}}, "responder.nonce = 'yes' should be true or false"),
        ({"certificates": "a.pem"}, "certificates should be a list"),
        ({"certificates": [{"file": "a.pem"}]}, "certificates[0] should be a path or a table with 'path'"),
        ({"certificates": [{"path": "a.pem", "isuer": "x"}]}, "unknown key certificates[0].isuer"),
    ],
)
def test_bad_values_name_the_key_and_value(data, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(data, tmp_path / "c.toml")


def test_not_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("certificates = [\n")
    with pytest.raises(ConfigError, match=r"c\.toml: not valid TOML"):
        load(path, explicit=True)


def test_missing_named_file_is_an_error_but_no_file_means_defaults(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no such configuration file"):
        load(tmp_path / "absent.toml", explicit=True)
    monkeypatch.delenv("STAPLECTL_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path))
    if Path("/etc/staplectl/config.toml").exists():
        pytest.skip("this machine has a system-wide configuration")
    assert load().path is None


def test_environment_variable_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "env.toml"
    path.write_text('cache = "memcache://127.0.0.1:11211"\n')
    monkeypatch.setenv("STAPLECTL_CONFIG", str(path))
    assert load().cache == "memcache://127.0.0.1:11211"
    path.unlink()
    with pytest.raises(ConfigError, match="no such configuration file"):
        load()


def test_xdg_default_location(tmp_path, monkeypatch):
    monkeypatch.delenv("STAPLECTL_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "staplectl").mkdir()
    (tmp_path / "staplectl" / "config.toml").write_text("[locks]\nstripes = 8\n")
    assert load().locks.stripes == 8


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90), ("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("250ms", 0.25), ("1.5h", 5400)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5x", "-3", "1h30", "m5", "", True, -1])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration_round_trips():
    for seconds in (0, 1, 59, 60, 90, 3600, 5400, 86400, 90061):
        assert parse_duration(format_duration(seconds)) == seconds
