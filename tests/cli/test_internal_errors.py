"""A bug is one line on stderr and exit 3, whatever the command: never a traceback.

Each command is run with a fault injected somewhere deep in the engine (a
RuntimeError whose message carries an ESC sequence and a newline, as a
message quoting outside text could): the command must end with
``staplectl: internal error: RuntimeError: ...`` escaped on one line, and
exit 3 (check: UNKNOWN, its 3 too).
"""

from __future__ import annotations

import pytest

from tests.loopback import CONFIG_ALLOW

MESSAGE = "boom\x1b[2J\nsecond line"
SAID = "staplectl: internal error: RuntimeError: boom\\x1b[2J\\nsecond line"


def _boom(*args, **kwargs):
    raise RuntimeError(MESSAGE)


def _config(tmp_path, pki) -> str:
    path = tmp_path / "with-certs.toml"
    path.write_text(f'certificates = ["{pki.good.chain_path}"]\n' + CONFIG_ALLOW)
    return str(path)


#: command -> (its arguments, where the fault is injected)
COMMANDS = {
    "fetch": (lambda pki, tmp: ["fetch", pki.good.chain_path], "engine.ocsp.validate._checked"),
    "warm": (lambda pki, tmp: ["warm", pki.good.chain_path], "engine.ocsp.certs.read_certificates"),
    "inspect": (lambda pki, tmp: ["inspect"], "engine.store.providers.local.LocalProvider.entries"),
    "inspect CERT": (lambda pki, tmp: ["inspect", pki.good.chain_path], "engine.ocsp.certs.read_certificates"),
    "check": (lambda pki, tmp: ["check", pki.good.chain_path], "engine.store.providers.local.LocalProvider.get"),
    "export": (lambda pki, tmp: ["export", "--nginx", tmp, pki.good.chain_path],
               "engine.store.providers.local.LocalProvider.get_many"),
    "locks": (lambda pki, tmp: ["locks", "--json"], "engine.responders.health.ResponderHealth.down"),
    "config": (lambda pki, tmp: ["config"], "engine.store.providers.state_dir"),
    "prefetch --once": (lambda pki, tmp: ["prefetch", "--once", "--config", _config(tmp, pki)],
                        "engine.ocsp.certs.read_certificates"),
    "dashboard": (lambda pki, tmp: ["dashboard", "--config", _config(tmp, pki)], "engine.ocsp.certs.read_certificates"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_bug_is_one_line_and_exit_3(cli, pki, tmp_path, monkeypatch, name):
    args, fault = COMMANDS[name]
    arguments = args(pki, tmp_path)
    assert cli("fetch", pki.good.chain_path).exit_code == 0  # a staple in the cache: the reads get to work
    monkeypatch.setattr(fault, _boom)
    ran = cli(*arguments)
    assert ran.exit_code == 3, (ran.stdout, ran.stderr)
    assert ran.stderr.splitlines() == [SAID], ran.stderr
    assert "Traceback" not in ran.stdout + ran.stderr
    if name == "check":  # the Nagios line says it too
        assert ran.stdout.startswith("STAPLECTL UNKNOWN - internal error: RuntimeError: boom\\x1b")


def test_a_bug_after_the_command_did_its_work(cli, monkeypatch):
    """Outside command()'s block too: config prints what it read after it."""
    monkeypatch.setattr("staplectl.commands.config.redact", _boom)
    for arguments in (["config"], ["config", "--json"]):
        ran = cli(*arguments)
        assert ran.exit_code == 3 and ran.stderr.splitlines() == [SAID], ran.stderr


def test_json_gets_the_error_envelope(cli, pki, monkeypatch):
    monkeypatch.setattr("engine.ocsp.validate._checked", _boom)
    ran = cli("fetch", pki.good.chain_path, "--json")
    assert ran.exit_code == 3
    data = ran.json()
    assert data["command"] == "fetch"
    assert data["error"] == {"reason": "internal_error", "message": f"RuntimeError: {MESSAGE}"}


@pytest.mark.parametrize("how", [["-vv"], ["env"]])
def test_the_traceback_at_vv_or_with_the_variable(cli, pki, monkeypatch, how):
    monkeypatch.setattr("engine.ocsp.validate._checked", _boom)
    env = {"STAPLECTL_TRACEBACK": "1"} if how == ["env"] else None
    ran = cli("fetch", pki.good.chain_path, *([] if env else how), env=env)
    assert ran.exit_code == 3
    assert "Traceback (most recent call last)" in ran.stderr and "_boom" in ran.stderr
    assert ran.stderr.rstrip("\n").splitlines()[-1] == SAID
    assert "\x1b" not in ran.stderr  # the traceback's own copy of the message is escaped too


def test_an_interrupt_is_not_an_internal_error(cli, pki, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("engine.ocsp.validate._checked", interrupted)
    ran = cli("fetch", pki.good.chain_path)
    assert "internal error" not in ran.stderr
    assert ran.exit_code == 130  # Typer's own answer to Ctrl-C: 128 + SIGINT
