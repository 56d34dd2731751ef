"""One --json shape across commands (docs/json.md): the same envelope, and
the same names and values for the same certificate and staple."""

from __future__ import annotations

import pytest

from tests.cli.warm_helpers import cert_id_of

ENVELOPE = ["schema", "command", "checked_at", "error", "cache"]
#: a staple, as every command names it (staplectl.json_output.staple_fields)
STAPLE = ["status", "revocation_time", "revocation_reason", "this_update", "next_update", "produced_at",
          "time_left_seconds", "weak"]  # fmt: skip
#: names that said the same things differently before schema 1
RETIRED = {"seconds_left", "time_left", "key", "cert_id", "holder_cert_id", "action", "max_wait", "avg_wait",
           "total_wait", "max_hold", "avg_hold", "total_hold", "held_for"}  # fmt: skip


def keys_of(data, found=None):
    """Every key anywhere in ``data``, but not inside what is quoted from
    outside (a decoded response, staplectl's metadata as stored)."""
    found = set() if found is None else found
    if isinstance(data, dict):
        for key, value in data.items():
            found.add(key)
            if key not in ("response", "meta"):
                keys_of(value, found)
    elif isinstance(data, list):
        for item in data:
            keys_of(item, found)
    return found


def test_every_command_shares_the_envelope_and_the_names(cli, pki, responder, tmp_path):
    out = tmp_path / "nginx"
    out.mkdir()
    cert = pki.good.chain_path
    outputs = {
        "fetch": cli("fetch", cert, "--json"),
        "warm": cli("warm", cert, "--json"),
        "check": cli("check", cert, "--json"),
        "export": cli("export", "--nginx", out, cert, "--json"),
        "inspect": cli("inspect", cert, "--json"),
        "locks": cli("locks", "--json"),
        "config": cli("config", "--json"),
    }
    staples = {}
    for command, ran in outputs.items():
        assert ran.exit_code == 0, (command, ran.stderr)
        data = ran.json()
        assert list(data)[: len(ENVELOPE)] == ENVELOPE, command
        assert data["command"] == command and data["error"] is None
        assert data["checked_at"].endswith("Z")
        assert not keys_of(data) & RETIRED, (command, keys_of(data) & RETIRED)
        if command in ("fetch", "warm", "check", "export", "inspect"):
            [row] = data["entries"] if command == "inspect" else data["certificates"]
            assert data["cache"].startswith("local:"), command
            assert [key for key in row if key in STAPLE] == STAPLE, command  # all of them, in one order
            if command != "export":
                assert row["cert_sha1"] == cert_id_of(pki.good), command
            staples[command] = {key: row[key] for key in STAPLE if key != "time_left_seconds"}
            assert 86000 < row["time_left_seconds"] <= 86400, command
    # the one staple fetched, said alike by every command that shows it
    assert all(staple == staples["fetch"] for staple in staples.values()), staples
    assert outputs["warm"].row()["result"] == "fresh" and outputs["export"].row()["result"] == "written"
    assert outputs["fetch"].row()["result"] == "updated"


@pytest.mark.parametrize("command", [
    ["fetch", "{missing}"], ["warm", "{missing}"], ["inspect", "{missing}"], ["export", "--nginx", "{missing}"],
    ["check", "{missing}"], ["probe", "no:such:server"], ["config", "--config", "{missing}"],
])  # fmt: skip
def test_a_failure_is_the_envelope_with_its_error(cli, tmp_path, command):
    args = [part.format(missing=tmp_path / "missing") for part in command]
    ran = cli(*args, "--json")
    assert ran.exit_code in (2, 3), ran.stderr
    data = ran.json()
    assert list(data)[: len(ENVELOPE)] == ENVELOPE and data["command"] == command[0]
    assert set(data["error"]) == {"reason", "message"} and data["error"]["message"]
    assert data["error"]["message"] in " ".join(ran.stderr.split())  # the same words as the error line
