"""Weak algorithms as the commands show them: fetch and inspect say so,
responder.refuse_weak refuses them when fetched and when read."""

from __future__ import annotations

from tests.responder import Behaviour

WEAK = Behaviour(signer="delegate_weak", sign_sha1=True)


class TestShown:
    def test_fetch_says_it(self, cli, pki, responder):
        responder.script(pki.good, WEAK)
        ran = cli("fetch", pki.good.chain_path, "--json")
        assert ran.exit_code == 0 and ran.row()["weak"] == ["response signed with SHA1", "responder key 1024 bits"]
        human = cli("fetch", pki.good.chain_path)
        assert "weak" in human.stdout and "responder.refuse_weak refuses" in human.stdout

    def test_inspect_flags_it(self, cli, pki, responder):
        responder.script(pki.good, WEAK)
        assert cli("fetch", pki.good.chain_path).exit_code == 0
        [entry] = cli("inspect", "--json").json()["entries"]
        assert "weak" in entry["flags"] and entry["valid"] is True
        assert entry["weak"] == ["response signed with SHA1", "responder key 1024 bits"]
        assert "response signed with SHA1" in cli("inspect", pki.good.chain_path).stdout

    def test_refuse_weak_in_the_configuration(self, cli, pki, responder, tmp_path, home):
        config = tmp_path / "c.toml"
        config.write_text('[responder]\nrefuse_weak = true\nallow = ["loopback"]\n')
        responder.script(pki.good, WEAK)
        ran = cli("fetch", pki.good.chain_path, "--config", config, "--json")
        assert ran.exit_code == 3 and ran.json()["error"]["reason"] == "weak_algorithm"
        assert "no entries" in cli("inspect", "--config", config).stderr  # nothing stored
        # a weak staple already cached is judged the same way when read
        assert cli("fetch", pki.good.chain_path).exit_code == 0
        [entry] = cli("inspect", "--config", config, "--json").json()["entries"]
        assert entry["valid"] is False and "invalid: weak_algorithm" in entry["flags"]
