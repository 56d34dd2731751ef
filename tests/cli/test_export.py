"""staplectl export: nginx ssl_stapling_file and HAProxy <cert>.ocsp files,
written only when they change, removed when nothing usable is cached,
and the reload command run only after a change."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import time
from email.utils import parsedate_to_datetime

import pytest
from cryptography.x509 import ocsp

from engine.store.providers import open_provider
from tests.loopback import CONFIG_ALLOW
from tests.cli.warm_helpers import cert_id_of, certs_dir, fresh_leaf, store_expired, stored
from tests.responder import Behaviour

ROW_KEYS = ["cert", "file", "result", "no_ocsp", "status", "revocation_time", "revocation_reason", "this_update",
            "next_update", "produced_at", "time_left_seconds", "weak", "error"]


def warm(cli, *args):
    ran = cli("warm", *args)
    assert ran.exit_code in (0, 1), ran.stderr


def actions(ran):
    return {row["cert"].rsplit("/", 1)[-1]: row["result"] for row in ran.rows()}


def delete(home, issued):
    with open_provider(f"local:{home / 'staples.db'}") as provider:
        provider.delete(cert_id_of(issued))


@pytest.fixture
def out(tmp_path):
    directory = tmp_path / "nginx"
    directory.mkdir()
    return directory


class TestNginx:
    def test_files_are_the_cached_der(self, cli, pki, home, out):
        warm(cli, pki.good.chain_path, pki.rsa.chain_path)
        ran = cli("export", "--nginx", out, pki.good.chain_path, pki.rsa.chain_path, "--json")
        assert ran.exit_code == 0, ran.stderr
        assert actions(ran) == {"good-chain.pem": "written", "rsa-chain.pem": "written"}
        for issued in (pki.good, pki.rsa):
            file = out / f"{issued.chain_path.stem}.ocsp"
            assert file.read_bytes() == stored(home, issued).der
            mode = stat.S_IMODE(file.stat().st_mode)
            assert mode == 0o644 and not mode & stat.S_IWOTH
            snippet = out / f"{issued.chain_path.stem}.stapling"
            assert snippet.read_text() == f"ssl_stapling_file {file};\n"
        # no temporary left behind
        assert sorted(os.listdir(out)) == ["good-chain.ocsp", "good-chain.stapling", "rsa-chain.ocsp", "rsa-chain.stapling"]

    def test_second_run_leaves_files_alone(self, cli, pki, out):
        warm(cli, pki.good.chain_path)
        assert cli("export", "--nginx", out, pki.good.chain_path).exit_code == 0
        file = out / "good-chain.ocsp"
        before = file.stat()
        ran = cli("export", "--nginx", out, pki.good.chain_path, "--json")
        assert ran.exit_code == 0
        assert actions(ran) == {"good-chain.pem": "unchanged"}
        after = file.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    def test_new_staple_is_written_over_the_old(self, cli, pki, home, out):
        warm(cli, pki.good.chain_path)
        assert cli("export", "--nginx", out, pki.good.chain_path).exit_code == 0
        old = (out / "good-chain.ocsp").read_bytes()
        warm(cli, pki.good.chain_path, "--force")
        ran = cli("export", "--nginx", out, pki.good.chain_path, "--json")
        assert actions(ran) == {"good-chain.pem": "written"}
        new = (out / "good-chain.ocsp").read_bytes()
        assert new != old and new == stored(home, pki.good).der

    def test_removed_when_nothing_usable_is_cached(self, cli, pki, home, out):
        warm(cli, pki.good.chain_path, pki.rsa.chain_path)
        assert cli("export", "--nginx", out, pki.good.chain_path, pki.rsa.chain_path).exit_code == 0
        delete(home, pki.rsa)
        ran = cli("export", "--nginx", out, pki.good.chain_path, pki.rsa.chain_path, "--json")
        assert ran.exit_code == 3
        assert actions(ran) == {"good-chain.pem": "unchanged", "rsa-chain.pem": "removed"}
        assert not (out / "rsa-chain.ocsp").exists()
        assert not (out / "rsa-chain.stapling").exists()  # nginx must not include a directive naming it
        assert (out / "good-chain.stapling").exists()
        again = cli("export", "--nginx", out, pki.rsa.chain_path, "--json")
        assert again.exit_code == 3 and actions(again) == {"rsa-chain.pem": "missing"}

    def test_an_expired_staple_is_never_exported(self, cli, pki, responder, home, out):
        (out / "good-chain.ocsp").write_bytes(b"yesterday's staple")
        store_expired(home, pki, responder, pki.good)
        ran = cli("export", "--nginx", out, pki.good.chain_path, "--json")
        assert ran.exit_code == 3
        assert actions(ran) == {"good-chain.pem": "removed"}
        assert not (out / "good-chain.ocsp").exists()

    def test_missing_without_a_file(self, cli, pki, out):
        ran = cli("export", "--nginx", out, pki.good.chain_path)
        assert ran.exit_code == 3
        assert "missing" in ran.stdout
        assert os.listdir(out) == []

    def test_a_certificate_without_ocsp_is_no_failure_and_its_old_file_goes(self, cli, pki, out):
        (out / "no_aia-chain.ocsp").write_bytes(b"a staple from when the CA still had OCSP")
        ran = cli("export", "--nginx", out, pki.no_aia.chain_path, "--json")
        assert ran.exit_code == 0, ran.stdout + ran.stderr
        [row] = ran.rows()
        assert (row["result"], row["no_ocsp"]) == ("removed", True)
        assert not (out / "no_aia-chain.ocsp").exists()  # never served past its time
        again = cli("export", "--nginx", out, pki.no_aia.chain_path)
        assert again.exit_code == 0 and "no OCSP" in again.stdout

    def test_a_must_staple_certificate_without_ocsp_is_a_failure(self, cli, pki, out):
        issued = pki.leaf("export-must-no-ocsp", must_staple=True, aia=False)
        ran = cli("export", "--nginx", out, issued.chain_path, "--json")
        assert ran.exit_code == 3
        [row] = ran.rows()
        assert (row["result"], row["no_ocsp"]) == ("missing", False)

    def test_revoked_is_exported_with_exit_1(self, cli, pki, responder, out):
        responder.script(pki.other, Behaviour(cert_status="revoked"))
        warm(cli, pki.other.chain_path)
        ran = cli("export", "--nginx", out, pki.other.chain_path, "--json")
        assert ran.exit_code == 1
        [row] = ran.rows()
        assert row["status"] == "revoked" and row["result"] == "written"

    def test_json_shape_and_table(self, cli, pki, out):
        warm(cli, pki.good.chain_path)
        [row] = cli("export", "--nginx", out, pki.good.chain_path, "--json").rows()
        assert list(row) == ROW_KEYS
        assert row["file"] == str(out / "good-chain.ocsp")
        assert row["status"] == "good" and row["next_update"].endswith("Z") and row["error"] is None
        table = cli("export", "--nginx", out, pki.good.chain_path).stdout.splitlines()
        assert table[0].split() == ["CERTIFICATE", "FILE", "RESULT", "STATUS", "NEXT", "UPDATE"]
        assert str(out / "good-chain.ocsp") in table[1] and " unchanged " in table[1]

    def test_a_certbot_tree_is_named_after_its_directories(self, cli, pki, tmp_path, out, home):
        """live/<name>/fullchain.pem for every certificate: one command exports them all."""
        for issued, site in ((pki.good, "a.example"), (pki.rsa, "b.example")):
            (tmp_path / "live" / site).mkdir(parents=True)
            shutil.copy(issued.chain_path, tmp_path / "live" / site / "fullchain.pem")
        warm(cli, f"{tmp_path}/live/*/fullchain.pem")
        ran = cli("export", "--nginx", out, f"{tmp_path}/live/*/fullchain.pem", "--json")
        assert ran.exit_code == 0, ran.stdout + ran.stderr
        assert sorted(os.listdir(out)) == [
            "a.example.ocsp", "a.example.stapling", "b.example.ocsp", "b.example.stapling"]
        assert (out / "a.example.ocsp").read_bytes() == stored(home, pki.good).der
        # HAProxy's files go beside each certificate, so the same tree needs no naming
        haproxy = cli("export", "--haproxy", f"{tmp_path}/live/*/fullchain.pem")
        assert haproxy.exit_code == 0, haproxy.stderr
        assert (tmp_path / "live" / "b.example" / "fullchain.pem.ocsp").read_bytes() == stored(home, pki.rsa).der

    def test_a_pattern_names_them_explicitly(self, cli, pki, tmp_path, out):
        warm(cli, pki.good.chain_path)
        ran = cli("export", "--nginx", out, pki.good.chain_path, "--name", "site-{stem}-{sha1}")
        assert ran.exit_code == 0, ran.stderr
        assert f"site-good-chain-{cert_id_of(pki.good)}.ocsp" in os.listdir(out)

    @pytest.mark.parametrize("pattern, message", [
        ("{owner}", "unknown field {owner}"), ("plain", "no field"), ("{stem", "--name '{stem'"),
        ("../{stem}", "not a file name"),
    ])
    def test_a_bad_pattern_is_bad_input(self, cli, pki, out, pattern, message):
        ran = cli("export", "--nginx", out, pki.good.chain_path, "--name", pattern)
        assert ran.exit_code == 2 and message in ran.stderr and os.listdir(out) == []

    def test_names_that_still_clash_are_refused(self, cli, pki, tmp_path, out):
        for issued, site in ((pki.good, "a"), (pki.rsa, "b")):
            (tmp_path / site).mkdir()
            shutil.copy(issued.chain_path, tmp_path / site / "fullchain.pem")
        warm(cli, f"{tmp_path}/*/fullchain.pem")
        ran = cli("export", "--nginx", out, f"{tmp_path}/*/fullchain.pem", "--name", "{stem}", "--json")
        assert ran.exit_code == 3
        assert {row["result"] for row in ran.rows()} == {"failed"}
        assert "2 certificates would be exported to this one file" in ran.rows()[0]["error"]["message"]
        assert os.listdir(out) == []

    def test_unreadable_certificate_among_others_is_a_failed_row(self, cli, pki, tmp_path, out):
        warm(cli, pki.good.chain_path)
        junk = tmp_path / "junk.pem"
        junk.write_text("junk\n")
        ran = cli("export", "--nginx", out, pki.good.chain_path, junk, "--json")
        assert ran.exit_code == 3
        assert actions(ran) == {"good-chain.pem": "written", "junk.pem": "failed"}

    def test_config_certificates_and_memcached(self, cli, pki, memcached, tmp_path, out):
        leaf = fresh_leaf(pki, "export")
        uri = f"memcache://{memcached.host}:{memcached.port}"
        config = tmp_path / "c.toml"
        config.write_text(f'cache = "{uri}"\ncertificates = ["{leaf.chain_path}"]\n' + CONFIG_ALLOW)
        warm(cli, "--config", config)
        ran = cli("--config", config, "export", "--nginx", out, "--json")
        assert ran.exit_code == 0, ran.stderr
        assert (out / f"{leaf.chain_path.stem}.ocsp").read_bytes()[:1] == b"\x30"  # DER, no flag byte


class TestReloadCommand:
    def test_runs_once_and_only_after_a_change(self, cli, pki, home, tmp_path, out):
        log = tmp_path / "reloads"
        reload_cmd = f"echo reloaded >> {log}; echo noise"
        warm(cli, pki.good.chain_path, pki.rsa.chain_path)
        args = ["export", "--nginx", out, pki.good.chain_path, pki.rsa.chain_path, "--reload-cmd", reload_cmd, "--json"]
        first = cli(*args)
        assert first.exit_code == 0
        assert log.read_text() == "reloaded\n"  # two files written, one reload
        assert "noise" in first.stderr and first.rows()  # its output stays off stdout
        assert cli(*args).exit_code == 0
        assert log.read_text() == "reloaded\n"  # unchanged: no reload
        delete(home, pki.rsa)
        assert cli(*args).exit_code == 3
        assert log.read_text() == "reloaded\nreloaded\n"  # a removal is a change

    def test_failure_is_reported_and_files_stay(self, cli, pki, out):
        warm(cli, pki.good.chain_path)
        ran = cli("export", "--nginx", out, pki.good.chain_path, "--reload-cmd", "exit 7")
        assert ran.exit_code == 3
        assert "reload command 'exit 7' exited with 7; the files stay exported" in ran.stderr
        assert (out / "good-chain.ocsp").exists()


class TestHAProxy:
    def test_ocsp_file_next_to_the_certificate(self, cli, pki, home, tmp_path):
        directory = certs_dir(tmp_path, pki.good, pki.rsa)
        warm(cli, directory)
        ran = cli("export", "--haproxy", directory, "--json")
        assert ran.exit_code == 0, ran.stderr
        for issued in (pki.good, pki.rsa):
            file = directory / f"{issued.chain_path.name}.ocsp"  # site.pem -> site.pem.ocsp
            assert file.read_bytes() == stored(home, issued).der
            assert not file.stat().st_mode & stat.S_IWOTH
        assert cli("export", "--haproxy", directory, "--json").rows()[0]["result"] == "unchanged"

    def test_nothing_usable_leaves_an_empty_file(self, cli, pki, home, tmp_path):
        # HAProxy refuses to start without the .ocsp of a bundle and accepts
        # runtime pushes only where one was loaded: empty keeps both working
        directory = certs_dir(tmp_path, pki.good)
        warm(cli, directory)
        assert cli("export", "--haproxy", directory).exit_code == 0
        delete(home, pki.good)
        # its entry was the store's only one: --prune says that is meant
        ran = cli("export", "--haproxy", directory, "--json", "--prune")
        assert ran.exit_code == 3 and actions(ran) == {"good-chain.pem": "removed"}
        file = directory / "good-chain.pem.ocsp"
        assert file.exists() and file.read_bytes() == b""
        again = cli("export", "--haproxy", directory, "--json", "--prune")
        assert actions(again) == {"good-chain.pem": "missing"}

    def test_unwritable_target_is_a_failed_row(self, cli, pki, tmp_path):
        directory = certs_dir(tmp_path, pki.good, pki.rsa)
        warm(cli, directory)
        (directory / "good-chain.pem.ocsp").mkdir()  # in the way, whoever we run as
        ran = cli("export", "--haproxy", directory, "--json")
        assert ran.exit_code == 3
        assert actions(ran) == {"good-chain.pem": "failed", "rsa-chain.pem": "written"}
        assert "good-chain.pem.ocsp: cannot write or remove" in ran.rows()[0]["error"]["message"]


class TestModMD:
    def test_store_layout_and_removal(self, cli, pki, home, tmp_path):
        store = tmp_path / "md"
        store.mkdir()
        warm(cli, pki.good.chain_path)
        ran = cli("export", "--mod-md", store, pki.good.chain_path, "--json")
        assert ran.exit_code == 0, ran.stderr
        cert_id = hashlib.sha1(pki.good.der_path.read_bytes()).hexdigest()
        entry = store / "ocsp" / "other" / f"ocsp-{cert_id}.json"
        data = json.loads(entry.read_text())
        der = stored(home, pki.good).der
        assert base64.urlsafe_b64decode(data["response"] + "=" * (-len(data["response"]) % 4)) == der
        assert "=" not in data["response"] and data["status"] == "good"
        response = ocsp.load_der_ocsp_response(der)
        assert parsedate_to_datetime(data["valid"]["until"]) == response.next_update_utc
        assert parsedate_to_datetime(data["valid"]["from"]) == response.this_update_utc
        assert actions(cli("export", "--mod-md", store, pki.good.chain_path, "--json")) == {"good-chain.pem": "unchanged"}
        delete(home, pki.good)
        assert actions(cli("export", "--mod-md", store, pki.good.chain_path, "--json", "--prune")) == {
            "good-chain.pem": "removed"
        }
        assert not entry.exists()

    def test_store_directory_must_exist(self, cli, pki, tmp_path):
        ran = cli("export", "--mod-md", tmp_path / "nope", pki.good.chain_path)
        assert ran.exit_code == 2 and "MDStoreDir" in ran.stderr


class TestBadInput:
    def test_needs_exactly_one_target(self, cli, pki, out):
        for args in ([], ["--nginx", out, "--haproxy"]):
            ran = cli("export", pki.good.chain_path, *args)
            assert ran.exit_code == 2
            assert "exactly one target: --nginx DIR, --haproxy or --mod-md DIR" in ran.stderr

    def test_nginx_directory_must_exist(self, cli, pki, tmp_path):
        ran = cli("export", "--nginx", tmp_path / "nope", pki.good.chain_path, "--json")
        assert ran.exit_code == 2
        assert ran.json()["error"]["message"].endswith("nope: no such directory")

    def test_no_certificates(self, cli, out):
        ran = cli("export", "--nginx", out)
        assert ran.exit_code == 2 and "no certificates to work on" in ran.stderr


def test_subprocess_export_and_reload(staplectl, pki, tmp_path, out):
    log = tmp_path / "reloads"
    assert staplectl("warm", pki.good.chain_path).exit_code == 0
    ran = staplectl("export", "--nginx", out, pki.good.chain_path, "--reload-cmd", f"echo x >> {log}")
    assert ran.exit_code == 0, ran.stderr
    assert "written" in ran.stdout and log.read_text() == "x\n"
    ran = staplectl("export", "--nginx", out, pki.good.chain_path, "--reload-cmd", f"echo x >> {log}", "--json")
    assert ran.rows()[0]["result"] == "unchanged" and log.read_text() == "x\n"
    assert "Traceback" not in ran.stderr


class TestWhatIsNotOurs:
    """A staple file's place holding something else is never replaced, removed or read."""

    def test_a_symlink_in_a_staples_place_is_left_alone(self, cli, pki, out, tmp_path):
        warm(cli, pki.good.chain_path)
        elsewhere = tmp_path / "precious"
        elsewhere.write_bytes(b"not yours")
        (out / "good-chain.ocsp").symlink_to(elsewhere)
        ran = cli("export", "--nginx", out, pki.good.chain_path, "--json")
        assert ran.exit_code == 3
        [row] = ran.rows()
        assert row["result"] == "failed" and "a symbolic link, not a regular file" in row["error"]["message"]
        assert (out / "good-chain.ocsp").is_symlink() and elsewhere.read_bytes() == b"not yours"

    def test_a_fifo_in_a_staples_place_neither_hangs_nor_goes(self, cli, pki, home, out):
        warm(cli, pki.good.chain_path)
        os.mkfifo(out / "good-chain.ocsp")
        ran = cli("export", "--nginx", out, pki.good.chain_path, "--json")  # would block reading it
        assert ran.exit_code == 3 and "a FIFO, not a regular file" in ran.rows()[0]["error"]["message"]
        delete(home, pki.good)  # nothing usable: export would remove the staple file
        ran = cli("export", "--nginx", out, pki.good.chain_path, "--json", "--prune")
        assert ran.exit_code == 3 and "a FIFO, not a regular file" in ran.rows()[0]["error"]["message"]
        assert stat.S_ISFIFO(os.lstat(out / "good-chain.ocsp").st_mode)

    def test_temporaries_of_a_killed_export_are_removed_next_time(self, cli, pki, out):
        warm(cli, pki.good.chain_path)
        stale = out / ".good-chain.ocsp.k9x2_abc.tmp"  # what write_atomic leaves when killed
        young = out / ".good-chain.stapling.a1b2c3d4.tmp"  # another export's, mid-write
        foreign = out / ".someone-else.tmp"
        for path in (stale, young, foreign):
            path.write_bytes(b"half")
        hour_ago = time.time() - 3600
        os.utime(stale, (hour_ago, hour_ago))
        os.utime(foreign, (hour_ago, hour_ago))
        assert cli("export", "--nginx", out, pki.good.chain_path).exit_code == 0
        assert not stale.exists() and young.exists() and foreign.exists()


class TestAnEmptyStoreWipesNothing:
    """A cron line with a wrong --cache (or a new, empty store) must not remove every staple."""

    def test_refused_with_exit_3_and_every_file_kept(self, cli, pki, home, out, tmp_path):
        warm(cli, pki.good.chain_path, pki.rsa.chain_path)
        assert cli("export", "--nginx", out, pki.good.chain_path, pki.rsa.chain_path).exit_code == 0
        before = sorted(os.listdir(out))
        empty = tmp_path / "elsewhere"
        empty.mkdir()
        ran = cli("export", "--nginx", out, pki.good.chain_path, pki.rsa.chain_path, "--cache", f"local:{empty}")
        assert ran.exit_code == 3
        assert "has no entry for any of the 2 certificates: refusing to remove 2 exported staples" in ran.stderr
        assert sorted(os.listdir(out)) == before
        assert not (empty / "staples.db").exists()  # and the read created no store

    def test_prune_removes_them(self, cli, pki, out, tmp_path):
        warm(cli, pki.good.chain_path)
        assert cli("export", "--nginx", out, pki.good.chain_path).exit_code == 0
        empty = tmp_path / "elsewhere"
        empty.mkdir()
        ran = cli("export", "--nginx", out, pki.good.chain_path, "--cache", f"local:{empty}", "--prune", "--json")
        assert actions(ran) == {"good-chain.pem": "removed"} and os.listdir(out) == []

    def test_a_mistyped_store_path_is_bad_input(self, cli, pki, out, tmp_path):
        ran = cli("export", "--nginx", out, pki.good.chain_path, "--cache", f"local:{tmp_path / 'nonexist' / 'x.db'}")
        assert ran.exit_code == 2 and "does not exist" in ran.stderr
        assert not (tmp_path / "nonexist").exists()
