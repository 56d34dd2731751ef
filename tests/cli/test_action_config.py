"""[[actions]] in the configuration: what each type needs, clear errors, and
warm running them once for what it warmed."""

from __future__ import annotations

import pytest

from tests.loopback import CONFIG_ALLOW
from tests.responder import Behaviour


def write(tmp_path, text: str):
    config = tmp_path / "c.toml"
    config.write_text(text + CONFIG_ALLOW)
    return config


@pytest.mark.parametrize("actions, message", [
    ('[[actions]]\ntype = "apache"\n', "actions[0]: type = 'apache': expected one of nginx, haproxy, command"),
    ('[[actions]]\ntype = "nginx"\nreload = "x"\n', "actions[0]: type 'nginx' needs directory"),
    ('[[actions]]\ntype = "nginx"\ndirectory = "/tmp"\n', "type 'nginx' needs reload"),
    ('[[actions]]\ntype = "command"\n', "type 'command' needs command"),
    ('[[actions]]\ntype = "haproxy"\nfiles = false\n', "a haproxy action with files = false needs a socket"),
    ('[[actions]]\ntype = "command"\ncommand = "x"\nsocket = "/s"\n', "unknown key 'socket' for type 'command'"),
    ('[[actions]]\ntype = "command"\ncommand = "x"\nmin_interval = "soon"\n', "min_interval: 'soon' is not a duration"),
    ('[[actions]]\ntype = "command"\ncommand = "x"\n[[actions]]\ntype = "command"\ncommand = "y"\nname = "command"\n',
     "actions[1]: name 'command' is taken"),
    ('actions = "nginx"\n', "actions should be tables"),
])  # fmt: skip
def test_bad_actions_are_named(cli, tmp_path, actions, message):
    ran = cli("config", "--config", write(tmp_path, actions))
    assert ran.exit_code == 2 and message in ran.stderr


def test_defaults_and_names(cli, tmp_path):
    config = write(tmp_path, '[[actions]]\ntype = "nginx"\ndirectory = "ocsp"\nreload = "nginx -s reload"\n'
                             '[[actions]]\ntype = "command"\ncommand = "a"\n[[actions]]\ntype = "command"\ncommand = "b"\n')
    actions = cli("config", "--config", config, "--json").json()["config"]["actions"]
    assert [(a["name"], a["min_interval"]) for a in actions] == [("nginx", "30s"), ("command", "30s"), ("command-2", "30s")]
    assert actions[0]["directory"] == str(tmp_path / "ocsp")  # relative to the file


def test_warm_runs_the_actions_once_for_what_it_warmed(cli, pki, responder, tmp_path):
    directory = tmp_path / "ocsp"
    directory.mkdir()
    marker = tmp_path / "reloaded"
    config = write(tmp_path, f'[[actions]]\ntype = "nginx"\ndirectory = "{directory}"\nreload = "echo x >> {marker}"\n')
    ran = cli("warm", pki.good.chain_path, "--config", config)
    assert ran.exit_code == 0, ran.stderr
    assert (directory / "good-chain.ocsp").exists() and marker.read_text() == "x\n"
    assert "action nginx: 1 written, 0 removed of 1 and reloaded" in ran.stderr
    again = cli("warm", pki.good.chain_path, "--config", config)  # nothing changed: no reload
    assert again.exit_code == 0 and marker.read_text() == "x\n"


def test_warm_says_a_failed_action_and_exits_3(cli, pki, responder, tmp_path):
    directory = tmp_path / "ocsp"
    directory.mkdir()
    config = write(tmp_path, f'[[actions]]\ntype = "nginx"\ndirectory = "{directory}"\nreload = "exit 7"\n')
    ran = cli("warm", pki.good.chain_path, "--config", config)
    assert ran.exit_code == 3
    assert "action nginx failed: action nginx: reload command 'exit 7' exited with 7" in ran.stderr
    assert (directory / "good-chain.ocsp").exists()  # the file is there for the next reload


def test_the_metrics_count_runs_failures_and_the_last_success(tmp_path):
    from engine.api import SYSTEM_CLOCK, ActionEvent, StateStore
    from staplectl.metrics import Metrics

    metrics = Metrics(StateStore(tmp_path / "worker.db"), tmp_path / "locks", SYSTEM_CLOCK)
    metrics.observe_action(ActionEvent(1796650000.25, "info", "nginx", "ran", "1 written", 1))
    metrics.observe_action(ActionEvent(1796650010.0, "error", "nginx", "failed", "reload failed", 1))
    metrics.observe_action(ActionEvent(1796650020.0, "error", "nginx", "failed", "reload failed", 1))
    text = metrics.render()
    assert 'staplectl_action_runs_total{action="nginx",result="ok"} 1\n' in text
    assert 'staplectl_action_runs_total{action="nginx",result="failed"} 2\n' in text
    assert 'staplectl_action_consecutive_failures{action="nginx"} 2\n' in text
    assert 'staplectl_action_last_success_timestamp_seconds{action="nginx"} 1796650000.25\n' in text


def test_with_the_cache_down_an_expired_served_staple_goes_all_the_same(pki, responder, tmp_path):
    """The removal at expiry must not wait for the cache: nginx would staple it."""
    from engine.api import ActionError, build_reader, load_leaf
    from engine.ocsp.request import build_request
    from engine.responders.transport import post
    from staplectl.action_config import ActionSpec
    from staplectl.config import Config
    from staplectl.from_config import engine_settings
    from staplectl.renewal_actions import FileAction
    from tests.loopback import TRANSPORT
    from tests.servers import free_port

    expired, fresh = (load_leaf(pki.leaf(f"down-{n}").chain_path) for n in ("expired", "fresh"))
    directory = tmp_path / "ocsp"
    directory.mkdir()
    responder.script(expired.serial, Behaviour(this_update_offset=-7200, next_update_offset=-60))
    (directory / "down-expired-chain.ocsp").write_bytes(post(responder.url, build_request(expired).der, TRANSPORT))
    (directory / "down-fresh-chain.ocsp").write_bytes(post(responder.url, build_request(fresh).der, TRANSPORT))
    marker = tmp_path / "reloaded"
    reader = build_reader(engine_settings(Config(cache=f"memcache://127.0.0.1:{free_port()}")))
    action = FileAction(ActionSpec("nginx", "nginx", 0.0, directory, None, f"touch {marker}"), lambda: reader)
    action.load([expired, fresh])
    with pytest.raises(ActionError, match="cannot read the cache .*1 expired staples removed all the same"):
        action.run([expired, fresh])
    assert not (directory / "down-expired-chain.ocsp").exists() and marker.exists()
    assert (directory / "down-fresh-chain.ocsp").exists()  # still servable: left alone
