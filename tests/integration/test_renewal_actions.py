"""The prefetch service's renewal actions with the real servers: each renewal
reaches what nginx and HAProxy staple within seconds, with no timer and no
manual step, and an expired staple leaves nginx at once."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.x509 import ocsp as x509_ocsp

from tests.cli.conftest import staplectl_path
from tests.integration.haproxy import bundle
from tests.integration.nginx import Site
from tests.integration.tlsclient import handshake
from tests.loopback import CONFIG_ALLOW
from tests.responder import Behaviour


def next_update(der: bytes) -> float:
    return x509_ocsp.load_der_ocsp_response(der).next_update_utc.timestamp()


@contextmanager
def service(config: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen([staplectl_path(), "prefetch", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=out, env=env)  # fmt: skip
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def test_nginx_staples_each_renewal_and_drops_an_expired_one(ocsp, leaves, nginx, tmp_path, staplectl_env):
    [leaf] = leaves("auto")
    directory = tmp_path / "ocsp"
    directory.mkdir()
    server = nginx([Site("auto.test", leaf.chain_path, leaf.key_path,
                         [f"include {directory}/{leaf.chain_path.stem}.stapling*;"])])  # fmt: skip
    assert handshake(server.port, "auto.test").staple is None  # nothing exported yet
    config = tmp_path / "staplectl.toml"
    config.write_text(
        f'certificates = ["{leaf.chain_path}"]\n'
        f'[[actions]]\ntype = "nginx"\ndirectory = "{directory}"\nreload = "{server.reload_command()}"\n'
        'min_interval = "1s"\n'
        '[prefetch]\nmin_delay = "1s"\njitter = 0\n' + CONFIG_ALLOW
    )
    ocsp.default = Behaviour(this_update_offset=0, next_update_offset=6)  # renewed every 3 s
    log = tmp_path / "prefetch.log"
    with service(config, staplectl_env, log):
        seen: list[bytes] = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(set(seen)) < 4:
            staple = handshake(server.port, "auto.test").staple
            if staple is not None:
                assert next_update(staple) > time.time(), "nginx staples an expired response"
                seen.append(staple)
            time.sleep(0.2)
        assert len(set(seen)) >= 4, f"{len(set(seen))} staples in 40 s\n{log.read_text()}"

        # The responder goes silent: no renewal. When the last staple runs
        # out, its file goes and nginx, reloaded, staples nothing.
        ocsp.default = Behaviour(hang=True)
        last = handshake(server.port, "auto.test").staple
        assert last is not None
        # a renewal already answered may still land; then nothing more can
        deadline = next_update(last) + 20
        gone = False
        while time.time() < deadline and not gone:
            staple = handshake(server.port, "auto.test").staple
            gone = staple is None
            if staple is not None:
                late = time.time() - next_update(staple)
                assert late < 1.5, f"nginx staples a response {late:.1f} s past its nextUpdate\n{log.read_text()}"
            time.sleep(0.2)
        assert gone, f"nginx still staples at {time.time():.1f}\n{log.read_text()}"
    text = log.read_text()
    assert "action nginx ran" in text and "action nginx failed" not in text, text


def test_haproxy_gets_each_renewal_through_its_socket(ocsp, leaves, run, haproxy, tmp_path, staplectl_env):
    [leaf] = leaves("hauto")
    certs = tmp_path / "certs"
    certs.mkdir()
    path = bundle(leaf, certs)
    # HAProxy stops stapling 300 s before nextUpdate: 330 s responses, renewed after 1 %
    ocsp.default = Behaviour(this_update_offset=0, next_update_offset=330)
    run("warm", path, check=True)
    run("export", "--haproxy", path, check=True)  # a .ocsp at start: HAProxy then takes pushes for it
    server = haproxy([path])
    config = tmp_path / "staplectl.toml"
    config.write_text(
        f'certificates = ["{path}"]\n'
        f'[[actions]]\ntype = "haproxy"\nsocket = "{server.socket}"\n'
        '[prefetch]\nmin_delay = "1s"\nrenew_fraction = 0.01\njitter = 0\n' + CONFIG_ALLOW
    )
    first = handshake(server.port, "hauto.test").staple
    log = tmp_path / "prefetch.log"
    with service(config, staplectl_env, log):
        seen = {first}
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(seen) < 4:
            staple = handshake(server.port, "hauto.test").staple
            assert staple is not None
            seen.add(staple)
            time.sleep(0.2)
    assert len(seen) >= 4, f"{len(seen)} staples in 40 s\n{log.read_text()}"
    assert path.with_name(path.name + ".ocsp").read_bytes() in seen  # the file follows too, for a restart


def test_a_failing_action_is_retried_and_never_holds_up_renewals(ocsp, leaves, tmp_path, staplectl_env):
    [leaf] = leaves("cmd")
    marker = tmp_path / "ran"
    config = tmp_path / "staplectl.toml"
    # fails until the marker exists: the first runs fail, the retry succeeds
    command = f'test -e {marker} && printf "%s" "$STAPLECTL_CERTS" > {tmp_path / "certs.txt"}'
    config.write_text(
        f'certificates = ["{leaf.chain_path}"]\n'
        f"[[actions]]\ntype = \"command\"\ncommand = '{command}'\nmin_interval = \"0s\"\n"
        '[prefetch]\nmin_delay = "1s"\njitter = 0\n' + CONFIG_ALLOW
    )
    ocsp.default = Behaviour(this_update_offset=0, next_update_offset=4)
    log = tmp_path / "prefetch.log"
    with service(config, staplectl_env, log):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and log.read_text().count(" updated: ") < 3:
            time.sleep(0.2)  # renewals go on while the action fails
        assert "action command failed" in log.read_text()
        marker.touch()
        while time.monotonic() < deadline and not (tmp_path / "certs.txt").exists():
            time.sleep(0.2)
    text = log.read_text()
    assert text.count(" updated: ") >= 3 and "action command ran" in text, text
    assert (tmp_path / "certs.txt").read_text() == str(leaf.chain_path)
