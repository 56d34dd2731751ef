"""-q: nothing but errors, for cron jobs that mail whatever a command prints;
--json and check's status line (the plugin protocol) are unaffected."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("command", [
    ["warm"], ["fetch"], ["inspect"], ["locks"], ["export", "--nginx", "{out}"], ["config"],
])  # fmt: skip
def test_quiet_prints_nothing(cli, pki, responder, tmp_path, command):
    (tmp_path / "out").mkdir()
    args = [part.format(out=tmp_path / "out") for part in command]
    if command[0] in ("warm", "fetch", "export"):
        args.append(str(pki.good.chain_path))
    cli("warm", pki.good.chain_path)  # something to show
    loud = cli(*args)
    assert loud.exit_code == 0 and loud.stdout, loud.stderr
    quiet = cli(*args, "-q")
    assert quiet.exit_code == 0 and (quiet.stdout, quiet.stderr) == ("", "")


def test_quiet_keeps_json_and_errors(cli, pki, responder, tmp_path):
    ran = cli("warm", pki.good.chain_path, "-q", "--json")
    assert ran.exit_code == 0 and ran.row()["result"] in ("updated", "fresh")
    bad = cli("warm", tmp_path / "missing.pem", "-q")
    assert bad.exit_code == 2 and bad.stdout == "" and "missing.pem" in bad.stderr


def test_check_keeps_its_status_line(cli, pki, responder):
    cli("warm", pki.good.chain_path)
    ran = cli("check", pki.good.chain_path, "-q")
    assert ran.exit_code == 0 and ran.stdout.startswith("STAPLECTL OK - ")
