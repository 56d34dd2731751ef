"""staplectl inspect: entries staplectl fetched, entries httpd wrote (raw, into a
real memcached), broken ones, one entry in full, the worker's state, bad input."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from cryptography.x509 import ocsp
from pymemcache.client.base import Client

from engine.ocsp.certs import serial_text
from engine.store.providers import open_provider
from engine.refresh.worker_state import CertState, HistoryEntry, StateStore
from tests.loopback import CONFIG_ALLOW
from tests.test_inspection import response_der, sha1

TRY_LATER = ocsp.OCSPResponseStatus.TRY_LATER


def local(home):
    return open_provider(f"local:{home / 'staples.db'}")


def put(home, issued, der, meta=None, flag=1):
    with local(home) as provider:
        provider.set(sha1(issued), der, 3600, flag=flag, meta=meta)


def by_key(data):
    return {e["cache_key"]: e for e in data["entries"]}


def write_config(tmp_path, *paths):
    config = tmp_path / "staplectl.toml"
    config.write_text("certificates = [" + ", ".join(f'"{p}"' for p in paths) + "]\n" + CONFIG_ALLOW)
    return config


class TestTable:
    def test_fetched_entry_is_valid_with_its_certificate(self, cli, pki):
        assert cli("fetch", pki.good.chain_path).exit_code == 0
        ran = cli("inspect", "--json")
        assert ran.exit_code == 0, ran.stderr
        row = by_key(ran.json())[f"mod_ssl-staple:{sha1(pki.good)}"]
        assert row["valid"] is True and row["flags"] == []
        assert row["cert"] == str(pki.good.chain_path)
        assert row["status"] == "good" and row["serial"] == serial_text(pki.good.cert.serial_number)
        assert row["cert_sha1"] == sha1(pki.good)
        assert row["this_update"].endswith("Z") and row["next_update"] and row["produced_at"]
        assert 0 < row["time_left_seconds"] <= 86400

    def test_table_shows_key_path_status_and_flags(self, cli, pki, home):
        assert cli("fetch", pki.good.chain_path).exit_code == 0
        put(home, pki.other, response_der(pki, pki.other, status=TRY_LATER))
        ran = cli("inspect")
        assert ran.exit_code == 0, ran.stderr
        good_line = next(line for line in ran.stdout.splitlines() if sha1(pki.good) in line)
        assert str(pki.good.chain_path) in good_line and " good " in good_line
        other_line = next(line for line in ran.stdout.splitlines() if sha1(pki.other) in line)
        assert "try_later" in other_line and "try-later" in other_line
        assert "2 entries in local:" in ran.stderr and "1 valid, 1 not" in ran.stderr  # a summary, not data

    def test_empty_cache(self, cli):
        ran = cli("inspect")
        assert ran.exit_code == 0 and ran.stdout == ""
        assert "no entries in cache" in ran.stderr
        assert cli("inspect", "--json").json()["entries"] == []

    def test_broken_entries_are_flagged(self, cli, pki, home, tmp_path):
        put(home, pki.good, response_der(pki, pki.good, corrupt=True))
        put(home, pki.other, response_der(pki, pki.other, this_update=-3000, next_update=600))
        put(home, pki.rsa, b"garbage")
        with local(home) as provider:
            provider.set_meta(sha1(pki.must_staple), {"cert_path": str(pki.must_staple.chain_path)}, 3600)
        config = write_config(tmp_path, pki.good.chain_path, pki.other.chain_path)
        rows = by_key(cli("inspect", "--json", "--config", config).json())
        bad = rows[f"mod_ssl-staple:{sha1(pki.good)}"]
        assert bad["flags"] == ["invalid: bad_signature"] and bad["valid"] is False
        assert "signature does not verify" in bad["problem"]
        due = rows[f"mod_ssl-staple:{sha1(pki.other)}"]
        assert due["flags"] == ["due"] and due["valid"] is True and due["cert"] == str(pki.other.chain_path)
        assert rows[f"mod_ssl-staple:{sha1(pki.rsa)}"]["flags"] == ["invalid: malformed"]
        assert rows[f"mod_ssl-staple:{sha1(pki.must_staple)}"]["flags"] == ["metadata-only"]

    def test_metadata_naming_a_renewed_file_is_not_trusted(self, cli, pki, home):
        # letsencrypt's live/ file now holds another certificate than the staple's
        put(home, pki.good, response_der(pki, pki.good), meta={"cert_path": str(pki.other.chain_path)})
        row = by_key(cli("inspect", "--json").json())[f"mod_ssl-staple:{sha1(pki.good)}"]
        assert row["cert"] is None and row["flags"] == ["unverified"]
        assert "now holds another certificate" in row["cert_note"]


class TestWithoutOCSP:
    """A certificate that names no OCSP responder has no entry by design."""

    def test_one_certificate_is_no_ocsp_not_missing(self, cli, pki):
        ran = cli("inspect", pki.no_aia.chain_path)
        assert ran.exit_code == 0 and "no_aia-chain.pem: names no OCSP responder" in ran.stdout
        data = cli("inspect", pki.no_aia.chain_path, "--json").json()
        assert data["entries"] == [] and data["without_ocsp"] == [str(pki.no_aia.chain_path)]

    def test_a_must_staple_one_is_a_failure(self, cli, pki):
        issued = pki.leaf("inspect-must-no-ocsp", must_staple=True, aia=False)
        ran = cli("inspect", issued.chain_path)
        assert ran.exit_code == 3 and "must-staple, yet names no OCSP responder" in ran.stderr

    def test_the_table_lists_configured_ones_apart(self, cli, pki, tmp_path):
        config = tmp_path / "c.toml"
        config.write_text(f'certificates = ["{pki.no_aia.chain_path}", "{pki.good.chain_path}"]\n')
        ran = cli("inspect", "--config", config, "--json")
        assert ran.exit_code == 0 and ran.json()["without_ocsp"] == [str(pki.no_aia.chain_path)]
        human = cli("inspect", "--config", config)
        assert "1 configured certificates name no OCSP responder" in human.stderr


class TestHttpdWrittenEntries:
    """Raw keys as mod_ssl writes them: no metadata, flag byte + DER."""

    def test_error_entry_fake_try_later_and_fetched_entry(self, cli, pki, memcached, tmp_path):
        uri = f"memcache://{memcached.host}:{memcached.port}"
        error_leaf = pki.leaf(f"httpd-error-{uuid.uuid4().hex[:8]}")
        later_leaf = pki.leaf(f"httpd-later-{uuid.uuid4().hex[:8]}")
        plain_leaf = pki.leaf(f"httpd-good-{uuid.uuid4().hex[:8]}")
        configured = pki.leaf(f"httpd-conf-{uuid.uuid4().hex[:8]}")
        raw = Client(memcached.address)
        try_later = response_der(pki, error_leaf, status=TRY_LATER)
        raw.set(f"mod_ssl-staple:{sha1(error_leaf)}", b"\x00" + try_later, expire=600)
        raw.set(f"mod_ssl-staple:{sha1(later_leaf)}", b"\x01" + try_later, expire=600)
        raw.set(f"mod_ssl-staple:{sha1(plain_leaf)}", b"\x01" + response_der(pki, plain_leaf), expire=600)
        raw.set(f"mod_ssl-staple:{sha1(configured)}", b"\x01" + response_der(pki, configured), expire=600)
        assert cli("fetch", pki.good.chain_path, "--cache", uri).exit_code == 0
        config = write_config(tmp_path, configured.chain_path)

        ran = cli("inspect", "--cache", uri, "--config", config, "--json")
        assert ran.exit_code == 0, ran.stderr
        rows = by_key(ran.json())
        error = rows[f"mod_ssl-staple:{sha1(error_leaf)}"]
        assert error["flags"] == ["error-entry"] and error["entry_flag"] == 0 and error["valid"] is False
        assert error["status"] == "try_later" and error["cert"] is None
        later = rows[f"mod_ssl-staple:{sha1(later_leaf)}"]
        assert later["flags"] == ["try-later"] and later["entry_flag"] == 1 and later["valid"] is False
        plain = rows[f"mod_ssl-staple:{sha1(plain_leaf)}"]
        assert plain["flags"] == ["unverified"] and plain["status"] == "good" and plain["cert"] is None
        conf = rows[f"mod_ssl-staple:{sha1(configured)}"]
        assert conf["flags"] == [] and conf["valid"] is True and conf["cert"] == str(configured.chain_path)
        # the file its metadata names is not opened: memcached is shared
        fetched = rows[f"mod_ssl-staple:{sha1(pki.good)}"]
        assert fetched["flags"] == ["unverified"] and fetched["cert"] is None
        assert f"metadata names {pki.good.chain_path}, not opened: the cache is shared" in fetched["cert_note"]
        assert fetched["fetched_at"] and fetched["responder"]

        table = cli("inspect", "--cache", uri, "--config", config).stdout
        line = next(line for line in table.splitlines() if sha1(error_leaf) in line)
        assert "error-entry" in line
        one = cli("inspect", f"mod_ssl-staple:{sha1(later_leaf)}", "--cache", uri)
        assert one.exit_code == 0 and "trylater (0x3)" in one.stdout and "try-later" in one.stdout


class TestOneEntry:
    @pytest.mark.parametrize("how", ["cert", "key", "id", "upper-id"])
    def test_named_four_ways(self, cli, pki, how):
        assert cli("fetch", pki.good.chain_path).exit_code == 0
        cert_id = sha1(pki.good)
        arg = {"cert": str(pki.good.chain_path), "key": f"mod_ssl-staple:{cert_id}", "id": cert_id,
               "upper-id": cert_id.upper()}[how]  # fmt: skip
        ran = cli("inspect", arg, "--json")
        assert ran.exit_code == 0, ran.stderr
        data = ran.row("entries")
        assert data["cert_sha1"] == cert_id and data["valid"] is True
        assert data["validation"] == {"ok": True, "problem": None}
        assert data["cert"] == str(pki.good.chain_path)
        assert data["response"]["responses"][0]["serial"] == serial_text(pki.good.cert.serial_number)
        assert data["meta"]["cert_path"] == str(pki.good.chain_path)
        assert data["state"] is None and data["history"] == []

    def test_text_is_the_decoded_response_only(self, cli, pki, home, tmp_path):
        der = response_der(pki, pki.good, nonce=b"\x07" * 16)
        put(home, pki.good, der)
        ran = cli("inspect", pki.good.chain_path, "--text")
        assert ran.exit_code == 0, ran.stderr
        path = tmp_path / "r.der"
        path.write_bytes(der)
        openssl = subprocess.run(
            ["openssl", "ocsp", "-respin", str(path), "-resp_text", "-noverify"], capture_output=True, text=True
        ).stdout
        assert ran.stdout.startswith("OCSP Response Data:")
        for line in ("Cert Status: good", "Serial Number:", "This Update:", "Produced At:", "OCSP Nonce:"):
            ours = next(x for x in ran.stdout.splitlines() if line in x)
            assert ours.rstrip() in [x.rstrip() for x in openssl.splitlines()]

    def test_full_view_names_the_failed_check(self, cli, pki, home):
        put(home, pki.good, response_der(pki, pki.good, signer=pki.rogue))
        ran = cli("inspect", pki.good.chain_path)
        assert ran.exit_code == 0
        assert "not usable" in ran.stdout and "not issued by the certificate's issuer" in ran.stdout.replace("\n", " ")
        assert "OCSP Response Status: successful" in ran.stdout

    def test_certificate_without_chain_needs_issuer_to_verify(self, cli, pki):
        assert cli("fetch", pki.good.chain_path).exit_code == 0
        alone = cli("inspect", pki.good.cert_path, "--json").row("entries")
        # the metadata names the chain file, which verifies it
        assert alone["valid"] is True and alone["flags"] == []
        with_issuer = cli("inspect", pki.good.cert_path, "--issuer", pki.intermediate.cert_path, "--json").row("entries")
        assert with_issuer["flags"] == [] and with_issuer["cert"] == str(pki.good.cert_path)

    def test_unverifiable_certificate_without_chain(self, cli, pki, home):
        put(home, pki.other, response_der(pki, pki.other))
        data = cli("inspect", pki.other.cert_path, "--json").row("entries")
        assert data["flags"] == ["unverified"] and "give --issuer" in data["cert_note"]
        assert data["subject"] == "CN=other"

    def test_worker_state_and_history(self, cli, pki, home):
        assert cli("fetch", pki.good.chain_path).exit_code == 0
        cert_id = sha1(pki.good)
        with StateStore(home / "worker.db") as store:
            store.put(
                CertState(cert_id=cert_id, name=str(pki.good.chain_path), failures=3, last_error="timeout: no answer",
                          last_reason="timeout", next_attempt=2_000_000_000.0),
                HistoryEntry(1_900_000_000.0, "failed", "timeout: no answer"),
            )  # fmt: skip
        data = cli("inspect", cert_id, "--json").row("entries")
        assert data["state"]["failures"] == 3 and data["state"]["cert_sha1"] == cert_id and data["state"]["last_error"] == "timeout: no answer"
        assert data["history"] == [{"when": "2030-03-17T17:46:40Z", "event": "failed", "detail": "timeout: no answer"}]
        assert data["failures"] == 3
        text = cli("inspect", cert_id).stdout
        assert "Prefetch worker" in text and "timeout: no answer" in text
        assert cli("inspect", "--json").json()["entries"][0]["last_error"] == "timeout: no answer"

    def test_inspect_never_creates_the_worker_state(self, cli, pki, home):
        assert cli("fetch", pki.good.chain_path).exit_code == 0
        assert cli("inspect", sha1(pki.good)).exit_code == 0
        assert not (home / "worker.db").exists()

    def test_metadata_only_has_no_text(self, cli, pki, home):
        with local(home) as provider:
            provider.set_meta(sha1(pki.good), {"cert_path": str(pki.good.chain_path)}, 3600)
        ran = cli("inspect", sha1(pki.good), "--text")
        assert ran.exit_code == 3 and "metadata only" in ran.stderr


BAD = [
    ("junk-file", lambda p, t: [_junk(t)], 2, "junk.pem: not a certificate"),
    ("neither", lambda p, t: ["www.example.org"], 2, "www.example.org: no such certificate file, and not a cache key"),
    ("short-hex", lambda p, t: ["abc123"], 2, "not a cache key"),
    ("text-and-json", lambda p, t: [p.good.chain_path, "--text", "--json"], 2, "--text and --json"),
    ("text-without-target", lambda p, t: ["--text"], 2, "name a CERT or KEY"),
    ("other-namespace", lambda p, t: ["mod_ssl-stapling:" + "a" * 40], 2, "namespace 'mod_ssl-stapling'"),
    ("wrong-issuer", lambda p, t: [p.good.cert_path, "--issuer", p.root.cert_path], 2, "issuer of CN=good"),
    ("not-cached-id", lambda p, t: ["b" * 40], 3, "no entry in cache local:"),
    ("not-cached-cert", lambda p, t: [p.rsa.chain_path], 3, "rsa-chain.pem: no entry in cache"),
    ("bad-cache", lambda p, t: ["--cache", "mongo://x"], 2, "unknown scheme 'mongo'"),
]


def _junk(tmp_path):
    path = tmp_path / "junk.pem"
    path.write_text("not a certificate\n")
    return path


@pytest.mark.parametrize(("args", "code", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(cli, pki, tmp_path, args, code, message):
    ran = cli("inspect", *args(pki, tmp_path))
    assert ran.exit_code == code, ran.stderr
    assert message in ran.stderr.replace("\n", " ")


def test_not_found_as_json_and_without_traceback(staplectl):
    ran = staplectl("inspect", "c" * 40, "--json")
    assert ran.exit_code == 3 and "Traceback" not in ran.stderr
    assert ran.json()["error"]["reason"] == "not_found"


def test_global_cache_option_before_the_command(cli, pki, tmp_path):
    db = tmp_path / "elsewhere.db"
    assert cli("--cache", f"local:{db}", "fetch", pki.good.chain_path).exit_code == 0
    data = cli("--cache", f"local:{db}", "inspect", "--json").json()
    assert data["cache"] == f"local:{db}" and len(data["entries"]) == 1


class TestReadingCreatesNothing:
    def test_a_mistyped_store_path_is_bad_input_and_nothing_is_created(self, cli, tmp_path):
        ran = cli("inspect", "--cache", f"local:{tmp_path / 'nonexist' / 'dir' / 'x.db'}")
        assert ran.exit_code == 2 and f"directory {tmp_path / 'nonexist' / 'dir'} does not exist" in ran.stderr
        assert not (tmp_path / "nonexist").exists()

    def test_a_store_not_made_yet_reads_as_empty_and_stays_unmade(self, cli, pki, tmp_path):
        store = tmp_path / "new.db"
        ran = cli("inspect", "--cache", f"local:{store}")
        assert ran.exit_code == 0 and "no entries" in ran.stderr
        check = cli("check", pki.good.chain_path, "--cache", f"local:{store}")
        assert check.stdout.startswith("STAPLECTL CRITICAL") and "no staple cached" in check.stdout
        assert not store.exists() and list(tmp_path.glob("new.db*")) == []

    def test_the_default_store_is_not_made_by_reading_either(self, cli, home):
        assert cli("inspect").exit_code == 0
        assert not (home / "staples.db").exists()


def test_in_an_80_column_terminal_rows_fit_and_keep_the_name_s_end(pki, home):
    """The rows wrapped to three lines at 80 columns."""
    import io

    from rich.console import Console

    from staplectl.table import print_table

    headers = ("key", "certificate", "status", "this update", "next update", "time left", "age", "flags")
    row = ("mod_ssl-staple:" + "a" * 40, "/etc/letsencrypt/live/www.example.org/fullchain.pem", "good",
           "2026-12-07T09:00:00Z", "2026-12-14T09:00:00Z", "6 d 22 h", "2 h", "due")  # fmt: skip
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    print_table(console, headers, [row], fit=("certificate", "status", "next update", "time left", "flags"),
                shorten="certificate")  # fmt: skip
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[1].startswith("…") and "fullchain.pem" in lines[1] and "6 d 22 h" in lines[1]
    piped = io.StringIO()
    print_table(Console(file=piped, width=80, color_system=None), headers, [row], fit=("status",))
    assert "mod_ssl-staple:" in piped.getvalue()  # not a terminal: every column, whole
