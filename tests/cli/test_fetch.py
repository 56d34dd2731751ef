"""staplectl fetch, in-process and as the installed program, against the
scripted responder and the real `openssl ocsp`, on the local store and a
real memcached."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import threading

import pytest
from cryptography.x509 import ocsp
from pymemcache.client.base import Client

from engine.ocsp.certs import load_leaf, serial_text
from engine.store.providers import open_provider
from engine.store.providers.layout import apr_server_index
from tests.openssl_responder import OpenSSLResponder
from tests.responder import Behaviour
from tests.servers import free_port


def stored(home, cert_id):
    with open_provider(f"local:{home / 'staples.db'}") as provider:
        return provider.get(cert_id)


def cert_id_of(issued):
    import hashlib

    return hashlib.sha1(issued.der_path.read_bytes()).hexdigest()


class TestFetchInProcess:
    def test_good_is_stored_and_shown(self, cli, pki, home):
        ran = cli("fetch", pki.good.chain_path)
        assert ran.exit_code == 0, ran.stderr
        assert ran.stdout.startswith("good")
        assert "mod_ssl-staple:" + cert_id_of(pki.good) in ran.stdout
        entry = stored(home, cert_id_of(pki.good))
        assert entry and entry.flag == 1 and entry.meta["cert_path"] == str(pki.good.chain_path)

    def test_json_fields(self, cli, pki):
        ran = cli("fetch", pki.good.chain_path, "--json")
        assert ran.json()["command"] == "fetch" and ran.json()["error"] is None
        assert ran.json()["cache"].startswith("local:")
        data = ran.row()
        for key in ("cert_sha1", "serial", "status", "this_update", "next_update", "produced_at", "cache_key", "stored",
                    "time_left_seconds", "result"):
            assert key in data
        assert data["cert_sha1"] == cert_id_of(pki.good)
        assert data["serial"] == serial_text(pki.good.cert.serial_number)
        assert data["status"] == "good" and data["stored"] is True
        assert data["this_update"].endswith("Z") and "T" in data["next_update"]
        assert data["cache_key"] == f"mod_ssl-staple:{data['cert_sha1']}"

    def test_revoked_exits_1_and_is_stored(self, cli, pki, responder, home):
        responder.script(pki.other, Behaviour(cert_status="revoked"))
        ran = cli("fetch", pki.other.chain_path, "--json")
        assert ran.exit_code == 1
        assert ran.row()["status"] == "revoked"
        assert stored(home, cert_id_of(pki.other))

    def test_unknown_exits_1(self, cli, pki, responder):
        responder.script(pki.good, Behaviour(cert_status="unknown"))
        assert cli("fetch", pki.good.chain_path).exit_code == 1

    def test_no_store(self, cli, pki, home):
        ran = cli("fetch", pki.good.chain_path, "--no-store", "--json")
        assert ran.exit_code == 0
        assert ran.row()["stored"] is False
        assert not stored(home, cert_id_of(pki.good))

    def test_issuer_option_and_url_override(self, cli, pki, responder):
        ran = cli("fetch", pki.no_aia.cert_path, "--issuer", pki.intermediate.cert_path, "--url", responder.url)
        assert ran.exit_code == 0, ran.stderr
        assert responder.requests_for(pki.no_aia) == 1

    def test_global_cache_option_before_the_command(self, cli, pki, tmp_path):
        db = tmp_path / "elsewhere.db"
        assert cli("--cache", f"local:{db}", "fetch", pki.good.chain_path).exit_code == 0
        with open_provider(f"local:{db}") as provider:
            assert provider.get(cert_id_of(pki.good))

    def test_memcached_in_httpd_layout(self, cli, pki, memcached):
        uri = f"memcache://{memcached.host}:{memcached.port}"
        ran = cli("fetch", pki.good.chain_path, "--cache", uri, "--out", pki.directory / "good.ocsp")
        assert ran.exit_code == 0, ran.stderr
        raw = Client(memcached.address).get(f"mod_ssl-staple:{cert_id_of(pki.good)}")
        assert raw == b"\x01" + (pki.directory / "good.ocsp").read_bytes()

    def test_memcached_pair_uses_apr_utils_server(self, cli, pki, memcached_pair):
        uri = "memcache://" + ",".join(f"{s.host}:{s.port}" for s in memcached_pair)
        for issued in (pki.good, pki.other, pki.rsa):
            assert cli("fetch", issued.chain_path, "--cache", uri).exit_code == 0
            key = f"mod_ssl-staple:{cert_id_of(issued)}"
            chosen = memcached_pair[apr_server_index(key, 2)]
            assert Client(chosen.address).get(key) is not None


class TestOpenSSLInterop:
    def test_fetch_from_openssl_and_openssl_verifies_our_out_file(self, cli, pki, tmp_path):
        with OpenSSLResponder(pki, tmp_path / "ocsp", revoked=["other"]) as real:
            out = tmp_path / "good.der"
            ran = cli("fetch", pki.good.chain_path, "--url", real.url, "--out", out, "--json")
            assert ran.exit_code == 0, ran.stderr
            assert ran.row()["status"] == "good"
            revoked = cli("fetch", pki.other.chain_path, "--url", real.url, "--json")
            assert revoked.exit_code == 1 and revoked.row()["status"] == "revoked"
        check = subprocess.run(
            ["openssl", "ocsp", "-respin", str(out), "-issuer", str(pki.intermediate.cert_path),
             "-CAfile", str(pki.bundle_path), "-cert", str(pki.good.cert_path)],
            capture_output=True, text=True,
        )
        assert "Response verify OK" in check.stderr + check.stdout
        assert f"{pki.good.cert_path}: good" in check.stdout


class TestCertIDHash:
    def test_sha256_requests_reach_openssl_and_its_answer_matches(self, cli, pki, tmp_path):
        with OpenSSLResponder(pki, tmp_path / "ocsp") as real:
            out = tmp_path / "sha256.der"
            ran = cli("fetch", pki.good.chain_path, "--url", real.url, "--hash", "sha256", "--out", out, "--json")
        assert ran.exit_code == 0, ran.stderr
        [single] = ocsp.load_der_ocsp_response(out.read_bytes()).responses
        assert single.hash_algorithm.name == "sha256"  # openssl answers the hash it was asked in

    def test_the_configured_hash_is_what_requests_use(self, cli, pki, responder, tmp_path):
        config = tmp_path / "c.toml"
        config.write_text('[responder]\nhash = "SHA384"\nallow = ["loopback"]\n')
        ran = cli("fetch", pki.good.chain_path, "--config", config, "--out", tmp_path / "r.der")
        assert ran.exit_code == 0, ran.stderr
        [single] = ocsp.load_der_ocsp_response((tmp_path / "r.der").read_bytes()).responses
        assert single.hash_algorithm.name == "sha384"

    @pytest.mark.parametrize("asked", ["sha256", "sha512"])
    def test_an_answer_under_sha1_serves_whatever_was_asked(self, cli, pki, responder, asked):
        responder.script(pki.good, Behaviour(answer_hash="sha1"))
        ran = cli("fetch", pki.good.chain_path, "--hash", asked, "--json")
        assert ran.exit_code == 0, ran.stderr
        assert ran.row()["status"] == "good"

    def test_an_answer_servers_cannot_look_up_is_refused(self, cli, pki, responder, home):
        """SHA-256 to a SHA-1 request: httpd and HAProxy would find no status in it."""
        responder.script(pki.good, Behaviour(answer_hash="sha256"))
        ran = cli("fetch", pki.good.chain_path, "--hash", "sha1")
        assert ran.exit_code == 3
        assert "answers for our certificate under sha256 only, where sha1 was asked" in ran.stderr
        assert not stored(home, cert_id_of(pki.good))

    def test_an_answer_for_another_certificate_in_another_hash_is_still_refused(self, cli, pki, responder, home):
        responder.script(pki.good, Behaviour(answer_hash="sha256", wrong_certid=True))
        ran = cli("fetch", pki.good.chain_path, "--hash", "sha1")
        assert ran.exit_code == 3 and "different certificate" in ran.stderr
        assert not stored(home, cert_id_of(pki.good))

    @pytest.mark.parametrize("args", [("--hash", "md5"), ("--hash", "")])
    def test_an_unknown_hash_is_bad_input(self, cli, pki, args):
        ran = cli("fetch", pki.good.chain_path, *args)
        assert ran.exit_code == 2 and "unsupported CertID hash (use one of sha1, sha256" in ran.stderr


class TestInstalledProgram:
    def test_subprocess_fetch_local_store(self, staplectl, pki, home):
        ran = staplectl("fetch", pki.good.chain_path, "--json")
        assert ran.exit_code == 0, ran.stderr
        assert ran.row()["stored"] is True
        assert stored(home, cert_id_of(pki.good))

    def test_subprocess_fetch_from_openssl_into_memcached(self, staplectl, pki, memcached, tmp_path):
        with OpenSSLResponder(pki, tmp_path / "ocsp") as real:
            uri = f"memcache://{memcached.host}:{memcached.port}"
            ran = staplectl("fetch", pki.must_staple.chain_path, "--url", real.url, "--cache", uri)
        assert ran.exit_code == 0, ran.stderr
        assert "must-staple" in ran.stdout
        assert Client(memcached.address).get(f"mod_ssl-staple:{cert_id_of(pki.must_staple)}")[0] == 1

    def test_subprocess_bad_input_has_no_traceback(self, staplectl, tmp_path):
        ran = staplectl("fetch", tmp_path / "missing.pem")
        assert ran.exit_code == 2
        assert "missing.pem: no such file" in ran.stderr
        assert "Traceback" not in ran.stderr


# -- bad input and failures: message, exit code, and an unchanged cache -------


def _junk(tmp_path):
    path = tmp_path / "junk.pem"
    path.write_text("not a certificate\n")
    return path


BAD_INPUT = [
    # (id, args builder, exit code, message)
    ("missing-file", lambda p, t, r: ["fetch", t / "nope.pem"], 2, "nope.pem: no such file"),
    ("not-a-certificate", lambda p, t, r: ["fetch", _junk(t)], 2, "junk.pem: not a certificate"),
    ("private-key", lambda p, t, r: ["fetch", p.good.key_path], 2, "not a certificate"),
    ("no-issuer", lambda p, t, r: ["fetch", p.good.cert_path], 2, "issuer of CN=good"),
    ("no-ocsp-url", lambda p, t, r: ["fetch", p.no_aia.chain_path], 2, "names no OCSP responder"),
    ("bad-url-scheme", lambda p, t, r: ["fetch", p.good.chain_path, "--url", "ldap://x/"], 2, "'ldap' is not allowed"),
    ("bad-cache-uri", lambda p, t, r: ["fetch", p.good.chain_path, "--cache", "mongo://x"], 2, "unknown scheme 'mongo'"),
    ("bad-cache-port", lambda p, t, r: ["fetch", p.good.chain_path, "--cache", "memcache://127.0.0.1:http"], 2, "port 'http' is not a number"),
    ("bad-timeout", lambda p, t, r: ["fetch", p.good.chain_path, "--timeout", "soon"], 2, "Invalid value for '--timeout'"),
]


@pytest.mark.parametrize(("args", "code", "message"), [b[1:] for b in BAD_INPUT], ids=[b[0] for b in BAD_INPUT])
def test_bad_input(cli, pki, tmp_path, responder, args, code, message):
    ran = cli(*args(pki, tmp_path, responder))
    assert ran.exit_code == code
    assert message in ran.stderr


FAILURES = [
    ("try-later", Behaviour(response_status="try_later"), "try_later"),
    ("wrong-signer", Behaviour(signer="rogue"), "not issued by the certificate's issuer"),
    ("bad-signature", Behaviour(corrupt_signature=True), "signature does not verify"),
    ("wrong-certid", Behaviour(wrong_certid=True), "different certificate"),
    ("expired", Behaviour(this_update_offset=-7200, next_update_offset=-3600), "has passed"),
    ("http-500", Behaviour(http_status=500), "HTTP 500"),
    ("garbage", Behaviour(body=b"garbage"), "not a DER OCSPResponse"),
    ("hanging", Behaviour(hang=True), "no complete answer within 0.5 s"),
]


@pytest.mark.parametrize(("behaviour", "message"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
def test_failure_exits_3_and_leaves_the_cache_unchanged(cli, pki, responder, home, behaviour, message):
    assert cli("fetch", pki.good.chain_path).exit_code == 0
    before = stored(home, cert_id_of(pki.good))
    responder.script(pki.good, behaviour)
    ran = cli("fetch", pki.good.chain_path, "--timeout", "0.5", "--json")
    assert ran.exit_code == 3
    assert message in ran.stderr
    assert ran.json()["error"]["message"] in ran.stderr.replace("\n", " ") or ran.json()["error"]["reason"]
    after = stored(home, cert_id_of(pki.good))
    assert after.der == before.der and after.meta == before.meta


def test_unreachable_cache_exits_3(cli, pki):
    port = free_port()  # nothing listens there
    ran = cli("fetch", pki.good.chain_path, "--cache", f"memcache://127.0.0.1:{port}?timeout=0.5")
    assert ran.exit_code == 3
    assert f"127.0.0.1:{port}" in ran.stderr


def test_unwritable_out_is_bad_input_before_anything_is_fetched(cli, pki, responder, tmp_path):
    ran = cli("fetch", pki.good.chain_path, "--out", tmp_path / "no" / "such" / "dir" / "x.der")
    assert ran.exit_code == 2
    assert f"x.der: no such directory: {tmp_path / 'no' / 'such' / 'dir'}" in ran.stderr
    assert responder.requests_for(pki.good) == 0


class TestOutIsWrittenAsTheShellWould:
    """--out never replaces what is not a regular file: /dev/null run as root stays a device."""

    def test_a_character_device_is_written_through(self, cli, pki):
        before = os.stat("/dev/null")
        assert cli("fetch", pki.good.chain_path, "--out", "/dev/null").exit_code == 0
        after = os.stat("/dev/null")
        assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)

    def test_a_symlink_is_followed_and_stays(self, cli, pki, tmp_path):
        target = tmp_path / "real.der"
        target.write_bytes(b"old")
        link = tmp_path / "link.der"
        link.symlink_to(target)
        assert cli("fetch", pki.good.chain_path, "--out", link).exit_code == 0
        assert link.is_symlink() and os.readlink(link) == str(target)
        assert ocsp.load_der_ocsp_response(target.read_bytes()).certificate_status == ocsp.OCSPCertStatus.GOOD

    def test_a_fifo_with_a_reader_gets_the_response(self, cli, pki, tmp_path):
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
        reader.start()
        assert cli("fetch", pki.good.chain_path, "--out", fifo).exit_code == 0
        reader.join(10)
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        assert ocsp.load_der_ocsp_response(got[0]).certificate_status == ocsp.OCSPCertStatus.GOOD

    def test_a_fifo_nobody_reads_is_an_error_not_a_hang(self, cli, pki, tmp_path):
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        ran = cli("fetch", pki.good.chain_path, "--out", fifo)
        assert ran.exit_code == 2 and "cannot write the response: No such device or address" in ran.stderr
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)

    @pytest.mark.parametrize("kind", ["directory", "socket"])
    def test_anything_else_is_refused_before_the_fetch(self, cli, pki, responder, tmp_path, kind):
        path = tmp_path / kind
        if kind == "directory":
            path.mkdir()
        else:
            server = socket.socket(socket.AF_UNIX)
            server.bind(str(path))
        ran = cli("fetch", pki.good.chain_path, "--out", path)
        assert ran.exit_code == 2
        assert f"a {kind}, not a regular file: refusing to replace it" in ran.stderr
        assert responder.requests_for(pki.good) == 0


def test_a_response_older_than_the_stored_one_is_refused_with_exit_3(cli, responder, pki):
    leaf = load_leaf(pki.leaf("fetch-rollback").chain_path)
    responder.script(leaf.serial, Behaviour(cert_status="revoked", this_update_offset=-60))
    assert cli("fetch", leaf.path).exit_code == 1
    responder.script(leaf.serial, Behaviour(cert_status="good", this_update_offset=-600))
    ran = cli("fetch", leaf.path)
    assert ran.exit_code == 3
    assert "a replayed or stale response is never stored" in ran.stderr
    again = cli("fetch", leaf.path, "--no-store")  # nothing to compare with: it is shown, not stored
    assert again.exit_code == 0


@pytest.mark.parametrize(
    "option, value, said",
    [
        ("--timeout", "inf", "--timeout inf is out of bounds: it must be at least 0.1 and at most 300 s"),
        ("--timeout", "1e308", "--timeout 1e+308 is out of bounds"),
        ("--timeout", "nan", "Invalid value for '--timeout'"),  # Typer's own check
        ("--max-size", "99999999999999999999", "--max-size 99999999999999999999 is out of bounds: it must be at least 512 and at most 1048576 bytes"),
    ],
)
def test_numbers_out_of_bounds_are_bad_input(cli, pki, responder, option, value, said):
    ran = cli("fetch", pki.good.chain_path, option, value)
    assert ran.exit_code == 2 and said in ran.stderr and "Traceback" not in ran.stderr
    assert responder.requests_for(pki.good) == 0


def test_a_loopback_responder_is_refused_by_default_and_allowed_by_configuration(cli, pki, responder, tmp_path):
    bare = tmp_path / "bare.toml"
    bare.write_text("")
    ran = cli("fetch", pki.good.chain_path, "--config", bare)
    assert ran.exit_code == 3 and "is a loopback address" in ran.stderr and "responder.allow" in ran.stderr
    allowed = tmp_path / "allow.toml"
    allowed.write_text('[responder]\nallow = ["127.0.0.0/8"]\n')
    assert cli("fetch", pki.good.chain_path, "--config", allowed).exit_code == 0
