"""staplectl warm: in-process and as the installed program, against the
scripted responder and the real `openssl ocsp`, on the local store and a
real memcached. Also the pool it runs on (fairness, stripes). Several
worker processes (--processes) are tested in test_warm_processes.py.
"""

from __future__ import annotations

import gc
import shutil

import pytest
from pymemcache.client.base import Client

from engine.store.providers import open_provider
from engine.ocsp.certs import load_leaf, serial_text
from tests.cli.warm_helpers import DUE, cert_id_of, certs_dir, fresh_leaf, rows_by_name, stored
from tests.loopback import CONFIG_ALLOW
from tests.openssl_responder import OpenSSLResponder
from tests.responder import Behaviour
from tests.servers import free_port

ROW_KEYS = ["cert", "cert_sha1", "serial", "status", "revocation_time", "revocation_reason", "this_update", "next_update",
            "produced_at", "time_left_seconds", "weak", "result", "error"]


# -- in-process --------------------------------------------------------------------


class TestWarm:
    def test_fetches_missing_then_leaves_fresh_alone(self, cli, pki, responder, tmp_path, home):
        directory = certs_dir(tmp_path, pki.good, pki.other, pki.rsa)
        ran = cli("warm", directory, "--json")
        assert ran.exit_code == 0, ran.stderr
        rows = rows_by_name(ran)
        assert {r["result"] for r in rows.values()} == {"updated"}
        assert {r["status"] for r in rows.values()} == {"good"}
        for issued in (pki.good, pki.other, pki.rsa):
            assert responder.requests_for(issued) == 1
            assert stored(home, issued).der
        again = cli("warm", directory, "--json")
        assert again.exit_code == 0
        assert {r["result"] for r in again.rows()} == {"fresh"}
        for issued in (pki.good, pki.other, pki.rsa):
            assert responder.requests_for(issued) == 1  # nothing asked again

    def test_hash_option_is_what_every_request_uses(self, cli, pki, responder, tmp_path, home):
        from cryptography.x509 import ocsp

        directory = certs_dir(tmp_path, pki.good, pki.other)
        ran = cli("warm", directory, "--hash", "sha512", "--json")
        assert ran.exit_code == 0, ran.stderr
        for issued in (pki.good, pki.other):
            [single] = ocsp.load_der_ocsp_response(stored(home, issued).der).responses
            assert single.hash_algorithm.name == "sha512"

    def test_certificates_without_ocsp_are_listed_apart_and_change_no_exit_code(self, cli, pki, responder, tmp_path):
        directory = certs_dir(tmp_path, pki.good, pki.no_aia)
        ran = cli("warm", directory, "--json")
        assert ran.exit_code == 0, ran.stderr
        rows = rows_by_name(ran)
        assert rows["no_aia-chain.pem"]["result"] == "no_ocsp" and rows["no_aia-chain.pem"]["error"] is None
        assert rows["good-chain.pem"]["result"] == "updated"
        human = cli("warm", directory)
        assert human.exit_code == 0 and "no OCSP" in human.stdout
        assert "2 certificates: 1 fresh, 1 no OCSP" in human.stderr

    def test_a_must_staple_certificate_without_ocsp_fails(self, cli, pki, responder, tmp_path):
        issued = pki.leaf("warm-must-no-ocsp", must_staple=True, aia=False)
        ran = cli("warm", pki.good.chain_path, issued.chain_path, "--json")
        assert ran.exit_code == 3
        row = rows_by_name(ran)["warm-must-no-ocsp-chain.pem"]
        assert row["result"] == "failed" and row["error"]["reason"] == "must_staple_without_ocsp"

    def test_due_staple_is_renewed(self, cli, pki, responder):
        responder.script(pki.good, DUE)
        assert cli("warm", pki.good.chain_path).exit_code == 0
        ran = cli("warm", pki.good.chain_path, "--json")
        assert ran.rows()[0]["result"] == "updated"
        assert responder.requests_for(pki.good) == 2

    def test_force_refetches_fresh_ones(self, cli, pki, responder):
        assert cli("warm", pki.good.chain_path, pki.rsa.chain_path).exit_code == 0
        ran = cli("warm", pki.good.chain_path, pki.rsa.chain_path, "--force", "--json")
        assert ran.exit_code == 0
        assert {r["result"] for r in ran.rows()} == {"updated"}
        assert responder.requests_for(pki.good) == responder.requests_for(pki.rsa) == 2

    def test_revoked_exits_1(self, cli, pki, responder):
        responder.script(pki.other, Behaviour(cert_status="revoked"))
        ran = cli("warm", pki.good.chain_path, pki.other.chain_path, "--json")
        assert ran.exit_code == 1
        rows = rows_by_name(ran)
        assert rows["other-chain.pem"]["status"] == "revoked"
        assert rows["other-chain.pem"]["result"] == "updated"
        assert rows["good-chain.pem"]["status"] == "good"

    @pytest.mark.parametrize(
        ("behaviour", "message"),
        [
            (Behaviour(hang=True), "no complete answer within 0.5 s"),
            (Behaviour(http_status=500), "HTTP 500"),
            (Behaviour(corrupt_signature=True), "signature does not verify"),
        ],
        ids=["hanging", "http-500", "bad-signature"],
    )
    def test_one_failing_certificate_fails_its_row_only(self, cli, pki, responder, tmp_path, behaviour, message):
        responder.script(pki.rsa, behaviour)
        directory = certs_dir(tmp_path, pki.good, pki.other, pki.rsa)
        ran = cli("warm", directory, "--timeout", "0.5", "--json")
        assert ran.exit_code == 3
        rows = rows_by_name(ran)
        assert rows["rsa-chain.pem"]["result"] == "failed"
        assert message in rows["rsa-chain.pem"]["error"]["message"]
        assert rows["rsa-chain.pem"]["error"]["reason"]
        assert rows["good-chain.pem"]["result"] == rows["other-chain.pem"]["result"] == "updated"

    def test_failure_keeps_and_shows_the_usable_staple(self, cli, pki, responder):
        responder.script(pki.good, DUE)
        assert cli("warm", pki.good.chain_path).exit_code == 0
        responder.script(pki.good, Behaviour(http_status=503))
        ran = cli("warm", pki.good.chain_path)
        assert ran.exit_code == 3
        assert "failed: responder" in ran.stdout and "HTTP 503" in ran.stdout
        assert "the cached staple stays usable until" in ran.stdout

    def test_config_driven_with_globs(self, cli, pki, responder, tmp_path):
        directory = certs_dir(tmp_path, pki.good, pki.other)
        config = tmp_path / "staplectl.toml"
        config.write_text(
            f'certificates = ["{directory}/*-chain.pem", '
            f'{{ path = "{pki.no_aia.cert_path}", issuer = "{pki.intermediate.cert_path}", url = "{responder.url}" }}]\n'
            + CONFIG_ALLOW
        )
        ran = cli("--config", config, "warm", "--json")
        assert ran.exit_code == 0, ran.stderr
        rows = rows_by_name(ran)
        assert set(rows) == {"good-chain.pem", "other-chain.pem", "no_aia.pem"}
        assert responder.requests_for(pki.no_aia) == 1

    def test_path_driven_with_issuer_and_url(self, cli, pki, responder):
        ran = cli("warm", pki.no_aia.cert_path, "--issuer", pki.intermediate.cert_path, "--url", responder.url, "--json")
        assert ran.exit_code == 0, ran.stderr
        assert ran.rows()[0]["result"] == "updated"
        assert responder.requests_for(pki.no_aia) == 1

    def test_glob_argument(self, cli, pki, tmp_path):
        directory = certs_dir(tmp_path, pki.good, pki.rsa)
        ran = cli("warm", f"{directory}/*.pem", "--json")
        assert ran.exit_code == 0
        assert len(ran.rows()) == 2

    def test_directory_with_a_stray_file_is_a_failed_row(self, cli, pki, tmp_path):
        directory = certs_dir(tmp_path, pki.good, pki.rsa)
        (directory / "README").write_text("not read: no certificate suffix\n")
        shutil.copy(pki.good.key_path, directory / "good.key")  # not read either
        (directory / "junk.pem").write_text("not a certificate\n")
        ran = cli("warm", directory, "--json")
        assert ran.exit_code == 3
        rows = rows_by_name(ran)
        assert set(rows) == {"good-chain.pem", "rsa-chain.pem", "junk.pem"}
        assert rows["junk.pem"]["result"] == "failed"
        assert rows["junk.pem"]["error"]["reason"] == "bad_certificate_file"
        assert rows["junk.pem"]["cert_sha1"] is None
        assert rows["good-chain.pem"]["result"] == "updated"

    def test_pattern_matching_nothing_among_others_is_a_failed_row(self, cli, pki, tmp_path):
        ran = cli("warm", pki.good.chain_path, tmp_path / "nothing-*.pem", "--json")
        assert ran.exit_code == 3
        failed = [r for r in ran.rows() if r["result"] == "failed"]
        assert failed[0]["error"]["reason"] == "no_match"

    def test_json_shape(self, cli, pki, responder):
        ran = cli("warm", pki.good.chain_path, "--json")
        [row] = ran.rows()
        assert list(row) == ROW_KEYS
        assert row["cert"] == str(pki.good.chain_path)
        assert row["cert_sha1"] == cert_id_of(pki.good)
        assert row["serial"] == serial_text(pki.good.cert.serial_number)
        assert row["this_update"].endswith("Z") and row["next_update"].endswith("Z") and row["produced_at"].endswith("Z")
        assert row["error"] is None
        assert ran.stderr == ""  # no progress bar, no summary in --json mode

    def test_table(self, cli, pki, responder):
        responder.script(pki.other, Behaviour(cert_status="revoked"))
        ran = cli("warm", pki.good.chain_path, pki.other.chain_path)
        lines = ran.stdout.splitlines()
        assert lines[0].split() == ["CERTIFICATE", "STATUS", "NEXT", "UPDATE", "RESULT"]
        assert lines[1].startswith(str(pki.good.chain_path)) and " good " in lines[1] and lines[1].endswith("updated")
        assert " revoked " in lines[2] and "in 23 h" in lines[2]
        assert "2 certificates: 2 updated" in ran.stderr
        again = cli("warm", pki.good.chain_path)
        assert again.stdout.splitlines()[1].endswith("fresh")

    def test_concurrency_one_still_warms_all(self, cli, pki, tmp_path):
        directory = certs_dir(tmp_path, pki.good, pki.other, pki.rsa, pki.must_staple)
        ran = cli("warm", directory, "--concurrency", "1", "--json")
        assert ran.exit_code == 0
        assert [r["result"] for r in ran.rows()] == ["updated"] * 4

    def test_fewer_collections_while_warming_and_as_before_after(self, cli, pki, responder, monkeypatch):
        import staplectl.commands.warm as warm_module

        during = []
        real = warm_module.outcome_of

        def spy(*args):
            during.append((gc.get_threshold()[0], gc.get_freeze_count() > 0))
            return real(*args)

        monkeypatch.setattr(warm_module, "outcome_of", spy)
        before = gc.get_threshold()
        assert cli("warm", pki.good.chain_path, "--force").exit_code == 0
        assert during == [(50_000, True)]
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
        assert cli("warm", "/nonexistent/leaf.pem").exit_code == 2  # and after an error
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0


class TestBadInput:
    def test_no_certificates_at_all(self, cli):
        ran = cli("warm")
        assert ran.exit_code == 2
        assert "no certificates to work on" in ran.stderr
        assert "Traceback" not in ran.stderr

    def test_single_bad_file_is_bad_input(self, cli, tmp_path):
        ran = cli("warm", tmp_path / "missing.pem", "--json")
        assert ran.exit_code == 2
        assert "missing.pem: matches no file" in ran.stderr
        assert ran.json()["error"]["reason"] == "no_match"

    def test_nothing_loadable_is_bad_input(self, cli, pki, tmp_path):
        ran = cli("warm", pki.good.cert_path, pki.rsa.cert_path)  # no chain, no --issuer
        assert ran.exit_code == 2
        assert "no certificate could be loaded from 2" in ran.stderr
        assert "--issuer" in ran.stderr

    def test_bad_url(self, cli, pki):
        ran = cli("warm", pki.good.chain_path, "--url", "ftp://x/")
        assert ran.exit_code == 2
        assert "'ftp' is not allowed" in ran.stderr

    def test_bad_concurrency(self, cli, pki):
        assert cli("warm", pki.good.chain_path, "--concurrency", "0").exit_code == 2

    def test_unreachable_cache_is_one_error(self, cli, pki, tmp_path):
        port = free_port()  # nothing listens there
        directory = certs_dir(tmp_path, pki.good, pki.other, pki.rsa)
        ran = cli("warm", directory, "--cache", f"memcache://127.0.0.1:{port}?timeout=0.5")
        assert ran.exit_code == 3
        assert ran.stderr.count(f"127.0.0.1:{port}") == 1


class TestCaches:
    def test_memcached_in_httpd_layout(self, cli, pki, memcached, tmp_path):
        leaves = [fresh_leaf(pki, "mc") for _ in range(3)]
        directory = certs_dir(tmp_path, *leaves)
        uri = f"memcache://{memcached.host}:{memcached.port}"
        ran = cli("warm", directory, "--cache", uri, "--json")
        assert ran.exit_code == 0, ran.stderr
        assert {r["result"] for r in ran.rows()} == {"updated"}
        client = Client(memcached.address)
        for leaf in leaves:
            assert client.get(f"mod_ssl-staple:{cert_id_of(leaf)}")[0] == 1
        again = cli("warm", directory, "--cache", uri, "--json")
        assert {r["result"] for r in again.rows()} == {"fresh"}

    def test_from_the_real_openssl_responder(self, cli, pki, tmp_path):
        with OpenSSLResponder(pki, tmp_path / "ocsp", revoked=["other"]) as real:
            ran = cli("warm", pki.good.chain_path, pki.other.chain_path, pki.rsa.chain_path, "--url", real.url, "--json")
        assert ran.exit_code == 1, ran.stderr
        rows = rows_by_name(ran)
        assert rows["other-chain.pem"]["status"] == "revoked"
        assert rows["good-chain.pem"]["status"] == rows["rsa-chain.pem"]["status"] == "good"
        assert {r["result"] for r in rows.values()} == {"updated"}


class TestInstalledProgram:
    def test_subprocess_warm_from_openssl_into_the_local_store(self, staplectl, pki, home, tmp_path):
        directory = certs_dir(tmp_path, pki.good, pki.rsa, pki.must_staple)
        with OpenSSLResponder(pki, tmp_path / "ocsp") as real:
            ran = staplectl("warm", directory, "--url", real.url, "--json")
            assert ran.exit_code == 0, ran.stderr
            assert {r["result"] for r in ran.rows()} == {"updated"}
            again = staplectl("warm", directory, "--url", real.url)
        assert again.exit_code == 0
        assert again.stdout.count("fresh") == 3
        for issued in (pki.good, pki.rsa, pki.must_staple):
            assert stored(home, issued).der

    def test_subprocess_no_certificates(self, staplectl):
        ran = staplectl("warm")
        assert ran.exit_code == 2
        assert "no certificates to work on" in ran.stderr and "Traceback" not in ran.stderr


# -- engine changes made for warm's speed (engine/ocsp/certs.py, engine/store/cache.py):
#    what they must not change -------------------------------------------------------


class TestEngineChangesForWarm:
    def test_leaf_derived_values_are_computed_once_and_right(self, pki):
        from cryptography.hazmat.primitives.serialization import Encoding

        leaf = load_leaf(pki.must_staple.chain_path)
        cert = pki.must_staple.cert
        assert leaf.cert_id == cert_id_of(pki.must_staple)
        assert leaf.cert_id is leaf.cert_id and leaf.der is leaf.der
        assert leaf.der == cert.public_bytes(Encoding.DER) and leaf.cert == cert
        assert (leaf.serial, leaf.not_after) == (cert.serial_number, cert.not_valid_after_utc.timestamp())
        assert leaf.issuer_name == cert.issuer.public_bytes()
        assert leaf.must_staple is True and leaf.subject == "CN=must_staple"
        assert leaf.aia_urls == (pki.ocsp_url,)
        other = leaf.replace(url_override="http://127.0.0.1:1/")
        assert other.cert_id == leaf.cert_id and other.responder_url() == "http://127.0.0.1:1/"
        assert other != leaf and other.path == leaf.path
        assert leaf == load_leaf(pki.must_staple.chain_path)  # derived values are not compared
        assert hash(leaf) == hash(load_leaf(pki.must_staple.chain_path))
        with pytest.raises(AttributeError, match="does not change"):
            leaf.path = None  # immutable

    def test_the_cache_layer_loads_no_client_library(self):
        import subprocess
        import sys

        code = (
            "import sys, engine.store.cache, engine.refresh.stapler, staplectl.commands.warm;"
            "print(sorted(m for m in ('redis', 'pymemcache') if m in sys.modules))"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert done.stdout.strip() == "[]"

    def test_client_library_errors_still_become_cache_unavailable(self, memcached):
        from pymemcache.exceptions import MemcacheUnexpectedCloseError

        from engine.store.cache import Cache
        from engine.errors import CacheUnavailableError

        provider = open_provider(f"memcache://{memcached.host}:{memcached.port}")

        def broken(cert_id):
            raise MemcacheUnexpectedCloseError()

        provider.get = broken
        with pytest.raises(CacheUnavailableError, match="get failed"):
            Cache(provider).get("0" * 40)


def test_a_cached_unknown_answer_is_asked_again_after_ten_minutes(cli, pki, responder, tmp_path, home, monkeypatch):
    """warm exited 1 on every run while the responder had long since said good:
    the cached unknown counted as fresh until its nextUpdate."""
    import time

    from engine.clock import SYSTEM_CLOCK
    from engine.refresh.freshness import UNKNOWN_RECHECK

    issued = pki.leaf("warm-unknown-then-good")
    responder.script(issued, Behaviour(cert_status="unknown", this_update_offset=0))
    assert cli("warm", issued.chain_path).exit_code == 1
    responder.script(issued, Behaviour(this_update_offset=0))
    assert cli("warm", issued.chain_path).exit_code == 1  # within ten minutes: left alone
    later = time.time() + UNKNOWN_RECHECK + 1
    monkeypatch.setattr(SYSTEM_CLOCK, "now", lambda: later)
    ran = cli("warm", issued.chain_path, "--json")
    assert ran.exit_code == 0 and ran.rows()[0]["status"] == "good" and ran.rows()[0]["result"] == "updated"
