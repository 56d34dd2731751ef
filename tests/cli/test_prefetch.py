"""staplectl prefetch: --once in-process, and the real service as a process:
it renews, reloads on SIGHUP, serves metrics, and stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

from cryptography.x509 import ocsp

from engine.ocsp.certs import load_leaf
from engine.clock import iso
from engine.store.providers import open_provider
from tests.loopback import CONFIG_ALLOW
from tests.responder import Behaviour
from tests.servers import free_port


def write_config(path: Path, certs: list[Path], extra: str = "") -> Path:
    listed = ", ".join(f'"{c}"' for c in certs)
    path.write_text(f"certificates = [{listed}]\n{extra}{CONFIG_ALLOW}")
    return path


def wait_for(condition, timeout: float = 20.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class TestOnce:
    def test_once_renews_what_is_due_and_exits(self, cli, pki, responder, home, tmp_path):
        config = write_config(tmp_path / "c.toml", [pki.good.chain_path, pki.other.chain_path])
        ran = cli("prefetch", "--once", "--config", config)
        assert ran.exit_code == 0, ran.stderr
        assert responder.requests_for(pki.good) == 1 and responder.requests_for(pki.other) == 1
        assert "updated" in ran.stderr
        with open_provider(f"local:{home / 'staples.db'}") as provider:
            assert provider.get(load_leaf(pki.good.chain_path).cert_id)

    def test_once_reports_failures_with_exit_3(self, cli, pki, responder, tmp_path):
        responder.script(pki.good, Behaviour(http_status=500))
        config = write_config(tmp_path / "c.toml", [pki.good.chain_path])
        ran = cli("prefetch", "--once", "--config", config)
        assert ran.exit_code == 3
        assert "ERROR" in ran.stderr and "HTTP 500" in ran.stderr and "retry at" in ran.stderr

    def test_once_revoked_exits_1(self, cli, pki, responder, tmp_path):
        responder.script(pki.other, Behaviour(cert_status="revoked"))
        config = write_config(tmp_path / "c.toml", [pki.other.chain_path])
        assert cli("prefetch", "--once", "--config", config).exit_code == 1

    def test_once_exits_1_for_a_revoked_staple_found_fresh_in_the_cache(self, cli, pki, responder, tmp_path):
        leaf = pki.leaf("once-revoked-cached")
        responder.script(leaf, Behaviour(cert_status="revoked"))
        config = write_config(tmp_path / "c.toml", [leaf.chain_path])
        assert cli("prefetch", "--once", "--config", config).exit_code == 1  # fetched: a job saw it
        # the second run finds it fresh at load, and runs no job for it
        again = cli("-v", "prefetch", "--once", "--config", config)
        assert responder.requests_for(leaf) == 1
        assert "fresh" in again.stderr and again.exit_code == 1, again.stderr

    def test_certificates_without_ocsp_are_counted_not_failed(self, cli, pki, responder, tmp_path):
        config = write_config(tmp_path / "c.toml", [pki.good.chain_path, pki.no_aia.chain_path])
        ran = cli("prefetch", "--once", "--config", config)
        assert ran.exit_code == 0, ran.stderr
        assert "loaded 2 certificates (1 added, 0 removed, 1 without OCSP: nothing to fetch)" in ran.stderr
        assert "no_aia" not in ran.stderr  # one line for all of them; -v names each
        assert "no_aia-chain.pem no_ocsp: names no OCSP responder" in cli("-v", "prefetch", "--once", "--config", config).stderr

    def test_a_must_staple_certificate_without_ocsp_is_an_error(self, cli, pki, responder, tmp_path):
        issued = pki.leaf("prefetch-must-no-ocsp", must_staple=True, aia=False)
        config = write_config(tmp_path / "c.toml", [pki.good.chain_path, issued.chain_path])
        ran = cli("prefetch", "--once", "--config", config)
        assert ran.exit_code == 3
        assert "ERROR" in ran.stderr and "must-staple, yet names no OCSP responder" in ran.stderr

    def test_no_certificates_is_bad_input(self, cli, tmp_path):
        config = tmp_path / "empty.toml"
        config.write_text("")
        ran = cli("prefetch", "--once", "--config", config)
        assert ran.exit_code == 2
        assert "no certificates configured" in ran.stderr

    def test_bad_metrics_address(self, cli, pki, tmp_path):
        config = write_config(tmp_path / "c.toml", [pki.good.chain_path])
        ran = cli("prefetch", "--metrics", "nowhere", "--config", config)
        assert ran.exit_code == 2
        assert "--metrics 'nowhere': expected HOST:PORT" in ran.stderr


def log_of(proc) -> str:
    proc.log.flush()
    proc.log.seek(0)
    return proc.log.read()


def test_service_renews_reloads_serves_metrics_and_stops(service, pki, responder, tmp_path):
    # 6-second responses and a 1 s minimum delay: renewals every few seconds
    short = Behaviour(this_update_offset=0, next_update_offset=6)
    first = pki.leaf("svc_first")
    second = pki.leaf("svc_second")
    responder.script(first, short)
    port = free_port()
    config = write_config(
        tmp_path / "c.toml", [first.chain_path, pki.no_aia.chain_path], '[prefetch]\nmin_delay = "1s"\njitter = 0\n'
    )
    proc = service(config, "--metrics", f"127.0.0.1:{port}")

    # it renews: several fetches of one certificate, each before the last expired
    wait_for(lambda: responder.requests_for(first) >= 3, 30, "three renewals")
    assert proc.poll() is None

    # metrics over HTTP
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    cert_id = load_leaf(first.chain_path).cert_id
    assert f'staplectl_staple_seconds_until_next_update{{cert="{first.chain_path}",cert_sha1="{cert_id}"}}' in body
    assert "staplectl_fetch_success_total" in body
    assert "\nstaplectl_fetch_lock_acquisitions_total " in body and "stripe=" not in body
    assert "\nstaplectl_fetch_locks_held " in body
    assert "\nstaplectl_certificates 1\n" in body and "\nstaplectl_certificates_without_ocsp 1\n" in body

    # SIGHUP: a new certificate in the file is picked up without a restart
    write_config(config, [first.chain_path, second.chain_path], '[prefetch]\nmin_delay = "1s"\njitter = 0\n')
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: responder.requests_for(second) >= 1, 20, "the reloaded certificate's fetch")
    assert "reloading the configuration" in log_of(proc)
    assert proc.poll() is None

    # SIGTERM: a clean exit within 5 s
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    log = log_of(proc)
    assert "stopped" in log and "Traceback" not in log


def test_service_stops_promptly_while_a_fetch_hangs(service, pki, responder, tmp_path):
    stuck = pki.leaf("svc_hanging")
    responder.script(stuck, Behaviour(hang=True))
    proc = service(write_config(tmp_path / "c.toml", [stuck.chain_path]))
    wait_for(lambda: responder.requests_for(stuck) >= 1, 20, "the hanging fetch")
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5


def test_reload_with_a_broken_file_keeps_running(service, pki, responder, tmp_path):
    config = write_config(tmp_path / "c.toml", [pki.good.chain_path])
    proc = service(config)
    wait_for(lambda: responder.requests_for(pki.good) >= 1, 20, "the first fetch")
    config.write_text("certificates = [\n")  # not TOML
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed, keeping the running configuration" in log_of(proc), 10, "the reload error")
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0



def test_json_log_lines_carry_the_event_and_the_stored_staple(service, pki, responder, tmp_path):
    leaf = pki.leaf("svc_json")
    config = write_config(tmp_path / "c.toml", [leaf.chain_path])
    port = free_port()
    proc = service(config, "--log-format", "json", "--metrics", f"127.0.0.1:{port}")
    # "started" is said once the worker runs, so it may follow the first renewal
    wait_for(lambda: '"event": "updated"' in log_of(proc) and '"event": "started"' in log_of(proc), 20,
             "the first renewal")  # fmt: skip
    lines = [json.loads(line) for line in log_of(proc).splitlines()]  # every line is one object
    started = next(line for line in lines if line["event"] == "started")
    assert started["level"] == "info" and started["pid"] == proc.pid
    updated = next(line for line in lines if line["event"] == "updated")
    cert_id = load_leaf(leaf.chain_path).cert_id
    assert updated["cert"] == str(leaf.chain_path) and updated["cert_sha1"] == cert_id
    assert updated["status"] == "good" and updated["level"] == "info"
    # the staple's own times, as stored: what an outside check compares with the store
    with open_provider(f"local:{tmp_path / 'home' / 'staples.db'}") as provider:
        stored = ocsp.load_der_ocsp_response(provider.get(cert_id).der)
    assert updated["this_update"] == iso(stored.this_update_utc.timestamp())
    assert updated["next_update"] == iso(stored.next_update_utc.timestamp())
    assert "time" in updated and updated["message"].startswith(f"{leaf.chain_path} updated")
    responder_key = responder.url.rstrip("/")  # scheme://host:port
    assert updated["responder"] == responder_key and 0 < updated["duration_seconds"] < 20
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "staplectl_cache_up 1\n" in body and 'staplectl_cache_outages_total{reason="cache_unavailable"} 0\n' in body
    # the renewal, timed in the latency histogram of its responder
    assert f'staplectl_fetch_duration_seconds_count{{responder="{responder_key}"}} 1\n' in body
    assert f'staplectl_fetch_duration_seconds_bucket{{responder="{responder_key}",le="+Inf"}} 1\n' in body
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert json.loads(log_of(proc).splitlines()[-1])["event"] == "stopped"


def test_an_unknown_log_format_is_bad_input(cli, pki, tmp_path):
    ran = cli("prefetch", "--log-format", "xml", "--config", write_config(tmp_path / "c.toml", [pki.good.chain_path]))
    assert ran.exit_code == 2
    assert "--log-format 'xml': expected one of text, json" in ran.stderr


def test_a_file_broken_at_reload_keeps_its_certificate_and_a_replaced_one_swaps(service, pki, responder, tmp_path):
    # 6-second responses: renewals keep coming while the file is broken
    short = Behaviour(this_update_offset=0, next_update_offset=6)
    kept, other, new = pki.leaf("svc_kept"), pki.leaf("svc_other"), pki.leaf("svc_new")
    for leaf in (kept, other, new):
        responder.script(leaf, short)
    directory = tmp_path / "certs"
    directory.mkdir()
    (directory / "kept.pem").write_bytes(kept.chain_path.read_bytes())
    (directory / "other.pem").write_bytes(other.chain_path.read_bytes())
    config = write_config(
        tmp_path / "c.toml", [directory], '[prefetch]\nmin_delay = "1s"\njitter = 0\n'
    )
    proc = service(config, "--log-format", "json")
    wait_for(lambda: responder.requests_for(kept) >= 1, 20, "the first fetch")

    # half-written by a deploy when the reload comes: the certificate stays
    (directory / "kept.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB")
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "keeping the certificate loaded from it before" in log_of(proc), 20, "the skip line")
    asked = responder.requests_for(kept)
    wait_for(lambda: responder.requests_for(kept) >= asked + 2, 30, "renewals of the kept certificate")

    # replaced for good: the new certificate takes its place
    (directory / "kept.pem").write_bytes(new.chain_path.read_bytes())
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: responder.requests_for(new) >= 1, 20, "the new certificate's fetch")
    loaded = [json.loads(line) for line in log_of(proc).splitlines() if '"event": "loaded"' in line]
    assert (loaded[-1]["added"], loaded[-1]["removed"]) == (1, 1)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_under_the_journal_lines_carry_a_priority_and_no_timestamp(pki, responder, home, tmp_path):
    """systemd's $JOURNAL_STREAM names the stream it connected: when it is our
    stderr, the journal stamps the time and reads <N> as the priority."""
    import os
    import subprocess

    from tests.cli.conftest import _env, staplectl_path

    responder.script(pki.other, Behaviour(http_status=500))
    config = write_config(tmp_path / "c.toml", [pki.good.chain_path, pki.other.chain_path])

    def run(journal: bool) -> list[str]:
        log = tmp_path / f"log-{journal}"
        with open(log, "wb") as err:
            info = os.fstat(err.fileno())
            env = dict(os.environ, **_env(None))
            env.pop("JOURNAL_STREAM", None)
            if journal:
                env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
            subprocess.run([staplectl_path(), "prefetch", "--once", "--config", str(config)],
                           stdout=subprocess.DEVNULL, stderr=err, env=env, timeout=60)  # fmt: skip
        return log.read_text().splitlines()

    lines = run(journal=True)
    assert any(line.startswith("<6>") and "good-chain.pem updated" in line for line in lines), lines
    assert any(line.startswith("<3>") and "other-chain.pem failed" in line for line in lines), lines
    assert all(line[:1] == "<" and not line[3:4].isdigit() for line in lines), lines  # no timestamp
    plain = run(journal=False)
    assert plain and all(line[:4].isdigit() for line in plain), plain  # elsewhere: timestamps of our own
    assert any(" ERROR " in line and "other-chain.pem failed" in line for line in plain), plain
