"""staplectl check: the Nagios plugin convention, every state reached, the
perfdata format, and that it reads the cache without ever fetching."""

from __future__ import annotations

import re
import shutil
import time

import pytest
from pymemcache.client.base import Client

from engine.store.providers import open_provider
from staplectl.commands.check import labels
from tests.loopback import CONFIG_ALLOW
from tests.cli.warm_helpers import cert_id_of, certs_dir, fresh_leaf, store_expired
from tests.responder import Behaviour
from tests.servers import free_port

#: 'label'=VALUEs;WARN:;CRIT:;0 ("N:": alert below N, the plugin range
#: syntax); U and no thresholds when there is no staple to measure
PERF = re.compile(r"'((?:[^']|'')+)'=(\d+s|U);(\d+:|);(\d+:|);0")


def status_line(ran) -> tuple[str, str, list[tuple[str, str, str, str]]]:
    """(state, summary, perfdata items) of the one line on stdout."""
    lines = ran.stdout.splitlines()
    assert len(lines) == 1, ran.stdout
    head, bar, perf = lines[0].partition(" | ")
    assert bar, lines[0]
    match = re.fullmatch(r"STAPLECTL (OK|WARNING|CRITICAL|UNKNOWN) - (.+)", head)
    assert match, head
    items = PERF.findall(perf)
    assert " ".join(f"'{l}'={v};{w};{c};0" for l, v, w, c in items) == perf
    return match.group(1), match.group(2), items


def warm(cli, *issued, **env):
    ran = cli("warm", *[i.chain_path for i in issued])
    assert ran.exit_code in (0, 1), ran.stderr


class TestStates:
    def test_ok_with_perfdata(self, cli, pki, responder):
        warm(cli, pki.good, pki.rsa)
        ran = cli("check", pki.good.chain_path, pki.rsa.chain_path)
        assert ran.exit_code == 0, ran.stdout + ran.stderr
        state, summary, perf = status_line(ran)
        assert state == "OK"
        assert re.fullmatch(r"2 staples good, shortest 23 h( \d+ min)? left", summary)
        assert [p[0] for p in perf] == ["good-chain.pem", "rsa-chain.pem"]
        for _, value, warn, crit in perf:
            assert 85000 < int(value[:-1]) <= 86400
            # the defaults, 40 % and 10 % of the staple's validity (86,460 s)
            assert (warn, crit) == ("34584:", "8646:")

    def test_warning_when_less_than_warn_left(self, cli, pki, responder):
        # 6 h of 26 h left: under 40 %, the prefetch service is behind
        responder.script(pki.rsa, Behaviour(this_update_offset=-20 * 3600, next_update_offset=6 * 3600))
        warm(cli, pki.good, pki.rsa)
        ran = cli("check", pki.good.chain_path, pki.rsa.chain_path)
        assert ran.exit_code == 1
        state, summary, perf = status_line(ran)
        assert state == "WARNING"
        assert summary.startswith("rsa-chain.pem: 5 h 59 min left") or summary.startswith("rsa-chain.pem: 6 h left")
        assert summary.endswith("; 1 good")

    def test_critical_when_less_than_crit_left(self, cli, pki, responder):
        # 1 h of 11 h left: under 10 %
        responder.script(pki.good, Behaviour(this_update_offset=-10 * 3600, next_update_offset=3600))
        warm(cli, pki.good)
        ran = cli("check", pki.good.chain_path)
        assert ran.exit_code == 2
        state, summary, _ = status_line(ran)
        assert state == "CRITICAL" and "left" in summary

    def test_thresholds_are_options(self, cli, pki, responder):
        responder.script(pki.good, Behaviour(next_update_offset=3600))
        warm(cli, pki.good)
        ran = cli("check", pki.good.chain_path, "--warn", "2h", "--crit", "30m")
        assert ran.exit_code == 1
        assert status_line(ran)[2][0][2:] == ("7200:", "1800:")
        assert cli("check", pki.good.chain_path, "-w", "30m", "-c", "10m").exit_code == 0
        # shares of the validity (3,660 s, 3,600 left): 99 % is 3,623 s, 98 % 3,586 s
        shares = cli("check", pki.good.chain_path, "-w", "99%", "-c", "98%")
        assert shares.exit_code == 1 and status_line(shares)[2][0][2:] == ("3623:", "3586:")
        assert cli("check", pki.good.chain_path, "-w", "50%", "-c", "120%").exit_code == 3
        assert cli("check", pki.good.chain_path, "-w", "10%", "-c", "40%").exit_code == 3

    def test_revoked_is_critical(self, cli, pki, responder):
        responder.script(pki.other, Behaviour(cert_status="revoked"))
        warm(cli, pki.good, pki.other)
        ran = cli("check", pki.good.chain_path, pki.other.chain_path)
        assert ran.exit_code == 2
        assert "other-chain.pem: revoked" in status_line(ran)[1]

    def test_missing_is_critical_with_undetermined_perfdata(self, cli, pki, responder):
        warm(cli, pki.good)
        ran = cli("check", pki.good.chain_path, pki.rsa.chain_path)
        assert ran.exit_code == 2
        state, summary, perf = status_line(ran)
        assert summary.startswith("rsa-chain.pem: no staple cached")
        assert dict((p[0], p[1]) for p in perf)["rsa-chain.pem"] == "U"

    def test_must_staple_without_a_staple_says_so(self, cli, pki):
        ran = cli("check", pki.must_staple.chain_path)
        assert ran.exit_code == 2
        assert "must-staple" in status_line(ran)[1]

    def test_expired_staple_is_critical(self, cli, pki, responder, home):
        store_expired(home, pki, responder, pki.good)
        ran = cli("check", pki.good.chain_path)
        assert ran.exit_code == 2
        state, summary, perf = status_line(ran)
        assert "expired" in summary and perf[0][1] == "0s"

    def test_critical_outranks_warning_and_unknown(self, cli, pki, responder, tmp_path):
        responder.script(pki.rsa, Behaviour(this_update_offset=-20 * 3600, next_update_offset=6 * 3600))
        warm(cli, pki.good, pki.rsa)
        junk = tmp_path / "junk.pem"
        junk.write_text("junk\n")
        ran = cli("check", pki.good.chain_path, pki.rsa.chain_path, pki.other.chain_path, junk)
        assert ran.exit_code == 2
        summary = status_line(ran)[1]
        # the worst first, so that a cut line still names it
        assert summary.index("other-chain.pem") < summary.index("rsa-chain.pem") < summary.index("junk.pem")

    def test_never_fetches(self, cli, pki, responder):
        responder.script(pki.good, Behaviour(next_update_offset=3600))
        warm(cli, pki.good)
        before = responder.request_count
        cli("check", pki.good.chain_path, pki.rsa.chain_path)
        assert responder.request_count == before

    def test_config_certificates(self, cli, pki, tmp_path):
        warm(cli, pki.good)
        config = tmp_path / "c.toml"
        config.write_text(f'certificates = ["{pki.good.chain_path}"]\n' + CONFIG_ALLOW)
        assert cli("--config", config, "check").exit_code == 0

    def test_labels_tell_same_named_files_apart(self, cli, pki, tmp_path):
        # Let's Encrypt: live/<name>/fullchain.pem for every certificate
        for issued, site in ((pki.good, "a.example"), (pki.rsa, "b.example")):
            (tmp_path / "live" / site).mkdir(parents=True)
            shutil.copy(issued.chain_path, tmp_path / "live" / site / "fullchain.pem")
        warm(cli, pki.good, pki.rsa)
        ran = cli("check", f"{tmp_path}/live/*/fullchain.pem")
        assert ran.exit_code == 0
        assert [p[0] for p in status_line(ran)[2]] == ["a.example/fullchain.pem", "b.example/fullchain.pem"]

    def test_label_quoting(self):
        assert labels(["/x/it's.pem", "/y/a.pem"]) == {"/x/it's.pem": "it's.pem", "/y/a.pem": "a.pem"}
        assert labels(["/a/c/x.pem", "/b/c/x.pem"]) == {"/a/c/x.pem": "a/c/x.pem", "/b/c/x.pem": "b/c/x.pem"}


class TestUnknown:
    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--warn", "soon"], "--warn: 'soon' is not a duration"),
            (["--crit", "-5"], "--crit: '-5' is not a duration"),
            (["--warn", "1h", "--crit", "2h"], "--warn 1h must not be shorter than --crit 2h"),
        ],
        ids=["bad-warn", "bad-crit", "warn-below-crit"],
    )
    def test_bad_durations_name_the_value(self, cli, pki, args, message):
        ran = cli("check", pki.good.chain_path, *args)
        assert ran.exit_code == 3
        assert ran.stdout == f"STAPLECTL UNKNOWN - {message}" + ran.stdout.split(message, 1)[1]
        assert message in ran.stderr
        assert "Traceback" not in ran.stderr

    def test_no_certificates(self, cli):
        ran = cli("check")
        assert ran.exit_code == 3
        assert ran.stdout.startswith("STAPLECTL UNKNOWN - no certificates to work on")

    def test_unloadable_certificate_among_good_ones(self, cli, pki, tmp_path):
        warm(cli, pki.good)
        junk = tmp_path / "junk.pem"
        junk.write_text("junk\n")
        ran = cli("check", pki.good.chain_path, junk)
        assert ran.exit_code == 3
        state, summary, perf = status_line(ran)
        assert state == "UNKNOWN" and "junk.pem" in summary and "not a certificate" in summary

    def test_cache_unreachable(self, cli, pki):
        port = free_port()  # nothing listens there
        ran = cli("check", pki.good.chain_path, "--cache", f"memcache://127.0.0.1:{port}?timeout=0.5")
        assert ran.exit_code == 3
        assert ran.stdout.startswith(f"STAPLECTL UNKNOWN - memcached at 127.0.0.1:{port}: get failed")

    def test_unknown_option_is_unknown_not_critical(self, cli, pki):
        # Nagios reads exit 2 as CRITICAL: a mistyped check definition is UNKNOWN
        ran = cli("check", pki.good.chain_path, "--bogus")
        assert ran.exit_code == 3
        assert "No such option: --bogus" in ran.stderr

    def test_bad_cache_uri(self, cli, pki):
        ran = cli("check", pki.good.chain_path, "--cache", "mongo://x")
        assert ran.exit_code == 3
        assert "unknown scheme 'mongo'" in ran.stdout


class TestWithoutOCSP:
    """Certificates that name no OCSP responder: nothing to check, listed apart."""

    def test_ok_by_default_and_counted_apart(self, cli, pki, responder):
        warm(cli, pki.good)
        ran = cli("check", pki.good.chain_path, pki.no_aia.chain_path)
        assert ran.exit_code == 0, ran.stdout + ran.stderr
        state, summary, perf = status_line(ran)
        assert state == "OK" and re.fullmatch(r"1 staple good, shortest .* left; 1 without OCSP", summary)
        assert [p[0] for p in perf] == ["good-chain.pem"]  # no staple to measure for the other

    def test_only_certificates_without_ocsp(self, cli, pki):
        ran = cli("check", pki.no_aia.chain_path)
        assert ran.exit_code == 0 and ran.stdout == "STAPLECTL OK - 1 without OCSP\n"

    @pytest.mark.parametrize("choice, code, state", [("warning", 1, "WARNING"), ("CRITICAL", 2, "CRITICAL")])
    def test_the_option_decides(self, cli, pki, responder, choice, code, state):
        warm(cli, pki.good)
        ran = cli("check", pki.good.chain_path, pki.no_aia.chain_path, "--no-ocsp", choice, "--json")
        assert ran.exit_code == code
        data = ran.json()
        assert data["state"] == state and "no_aia-chain.pem: no OCSP responder; 1 good" in data["summary"]
        assert {c["cert"].rsplit("/", 1)[-1]: c["no_ocsp"] for c in data["certificates"]} == {
            "good-chain.pem": False, "no_aia-chain.pem": True}

    def test_must_staple_without_ocsp_is_critical_whatever_the_option(self, cli, pki):
        issued = pki.leaf("check-must-no-ocsp", must_staple=True, aia=False)
        ran = cli("check", issued.chain_path, "--no-ocsp", "ok")
        assert ran.exit_code == 2 and "must-staple, yet no OCSP responder" in ran.stdout

    def test_a_bad_choice_is_unknown(self, cli, pki):
        ran = cli("check", pki.no_aia.chain_path, "--no-ocsp", "maybe")
        assert ran.exit_code == 3 and "--no-ocsp 'maybe': expected ok, warning or critical" in ran.stdout


def test_json(cli, pki, responder):
    responder.script(pki.other, Behaviour(cert_status="revoked"))
    warm(cli, pki.good, pki.other)
    ran = cli("check", pki.good.chain_path, pki.other.chain_path, pki.must_staple.chain_path, "--json")
    assert ran.exit_code == 2
    data = ran.json()
    assert data["state"] == "CRITICAL" and data["code"] == 2
    assert data["summary"].startswith("STAPLECTL CRITICAL - ")
    by_name = {c["cert"].rsplit("/", 1)[-1]: c for c in data["certificates"]}
    assert by_name["good-chain.pem"]["state"] == "OK" and by_name["good-chain.pem"]["time_left_seconds"] > 80000
    assert by_name["other-chain.pem"]["status"] == "revoked"
    assert by_name["must_staple-chain.pem"]["must_staple"] is True
    assert by_name["must_staple-chain.pem"]["time_left_seconds"] is None
    assert by_name["other-chain.pem"]["revocation_time"].endswith("Z")
    assert list(by_name["good-chain.pem"]) == [
        "cert", "cert_sha1", "serial", "state", "status", "revocation_time", "revocation_reason", "this_update",
        "next_update", "produced_at", "time_left_seconds", "weak", "must_staple", "no_ocsp", "message"]


def test_reads_memcached(cli, pki, memcached, tmp_path):
    leaf = fresh_leaf(pki, "check")
    uri = f"memcache://{memcached.host}:{memcached.port}"
    assert cli("warm", leaf.chain_path, "--cache", uri).exit_code == 0
    assert cli("check", leaf.chain_path, "--cache", uri).exit_code == 0
    # a staple httpd could not use is no staple: an error entry (flag 0x00)
    Client(memcached.address).set(f"mod_ssl-staple:{cert_id_of(leaf)}", b"\x00" + b"junk")
    ran = cli("check", leaf.chain_path, "--cache", uri)
    assert ran.exit_code == 2 and "no staple cached" in ran.stdout


def test_planted_response_for_another_certificate_is_not_trusted(cli, pki, home):
    warm(cli, pki.good, pki.rsa)
    with open_provider(f"local:{home / 'staples.db'}") as provider:
        other = provider.get(cert_id_of(pki.rsa))
        provider.set(cert_id_of(pki.good), other.der, 600)
    ran = cli("check", pki.good.chain_path)
    assert ran.exit_code == 2 and "no staple cached" in ran.stdout


class TestInstalledProgram:
    def test_subprocess_states(self, staplectl, pki, responder, tmp_path):
        responder.script(pki.rsa, Behaviour(this_update_offset=-20 * 3600, next_update_offset=6 * 3600))
        directory = certs_dir(tmp_path, pki.good, pki.rsa)
        assert staplectl("check", directory).exit_code == 2  # nothing cached yet
        assert staplectl("warm", directory).exit_code == 0
        ran = staplectl("check", directory)
        assert ran.exit_code == 1
        assert status_line(ran)[0] == "WARNING"
        assert staplectl("check", directory, "--warn", "3h").exit_code == 0
        bad = staplectl("check", directory, "--crit", "whenever")
        assert bad.exit_code == 3 and bad.stdout.startswith("STAPLECTL UNKNOWN - --crit: 'whenever'")
        assert "Traceback" not in bad.stderr


def test_a_staple_that_lapses_before_the_next_attempt_is_critical(cli, pki, responder, home):
    """However long it has left, nothing will replace it in time: the prefetch
    worker plans its next try after the staple's end (a long backoff)."""
    from engine.refresh.worker_state import CertState, StateStore

    warm(cli, pki.good)
    fine = cli("check", pki.good.chain_path)
    assert fine.exit_code == 0
    store = StateStore(home / "worker.db")
    cert_id = cert_id_of(pki.good)
    store.put(CertState(cert_id, "good-chain.pem", None, None, next_attempt=time.time() + 2 * 86400))
    store.close()
    ran = cli("check", pki.good.chain_path)
    assert ran.exit_code == 2
    assert "lapses at" in ran.stdout and "before the prefetch worker's next attempt" in ran.stdout
    # a planned time already past says nothing of its own (a stopped worker has its own check)
    store = StateStore(home / "worker.db")
    store.put(CertState(cert_id, "good-chain.pem", None, None, next_attempt=time.time() - 60))
    store.close()
    assert cli("check", pki.good.chain_path).exit_code == 0
