"""nginx staples the ssl_stapling_file that `staplectl export --nginx` writes.

nginx reads the file at start and at each reload, and serves it with no
time check. So the tests follow a staple through a renewal and a reload,
and through its expiry: the expired file is removed and nginx, reloaded,
staples nothing rather than it. With a plain `ssl_stapling_file` line that
reload is refused (the file is missing), so export also writes the line
into a snippet that exists only while the staple does, included through a
glob (which may match nothing), as docs/nginx.md shows.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.x509 import ocsp as x509_ocsp

from engine.store.providers import open_provider
from tests.integration.nginx import Site
from tests.integration.tlsclient import handshake
from tests.pki import Issued
from tests.responder import Behaviour

def stored(home: Path, leaf: Issued) -> bytes:
    cert_id = hashlib.sha1(leaf.der_path.read_bytes()).hexdigest()
    with open_provider(f"local:{home / 'staples.db'}") as provider:
        return provider.get(cert_id).der


def staple_file(directory: Path, leaf: Issued) -> Path:
    return directory / f"{leaf.chain_path.stem}.ocsp"


def plain(directory: Path, leaf: Issued) -> Site:
    return Site(f"{leaf.name}.test", leaf.chain_path, leaf.key_path, [f"ssl_stapling_file {staple_file(directory, leaf)};"])


def actions(ran) -> list[str]:
    return [row["result"] for row in ran.rows()]


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    directory = tmp_path / "ocsp"
    directory.mkdir()
    return directory


def test_each_renewal_is_stapled_after_the_reload(ocsp, leaves, run, nginx, exported, staplectl_env):
    issued = leaves("www", "api")
    chains = [leaf.chain_path for leaf in issued]
    home = Path(staplectl_env["STAPLECTL_HOME"])
    run("warm", *chains, check=True)
    run("export", "--nginx", exported, *chains, check=True)  # before nginx starts, as ExecStartPre
    asked = ocsp.request_count
    server = nginx([plain(exported, leaf) for leaf in issued])
    for leaf in issued:
        first = handshake(server.port, f"{leaf.name}.test").staple
        assert first == staple_file(exported, leaf).read_bytes() == stored(home, leaf)
    assert ocsp.request_count == asked  # nginx never asks the responder for a file-backed staple

    # A renewal exported without a reload is not served: nginx read the file at start.
    old = {leaf.name: stored(home, leaf) for leaf in issued}
    run("warm", "--force", *chains, check=True)
    assert actions(run("export", "--nginx", exported, *chains, "--json", check=True)) == ["written", "written"]
    for leaf in issued:
        assert handshake(server.port, f"{leaf.name}.test").staple == old[leaf.name]

    # The next renewal, exported with the reload command, is.
    run("warm", "--force", *chains, check=True)
    ran = run("export", "--nginx", exported, *chains, "--reload-cmd", server.reload_command(), "--json", check=True)
    assert actions(ran) == ["written", "written"]
    for leaf in issued:
        new = stored(home, leaf)
        assert new not in (old[leaf.name], None)
        shake = server.wait_for(f"{leaf.name}.test", lambda s, new=new: s.staple == new)
        assert shake.staple == new == staple_file(exported, leaf).read_bytes()


def wait_past_next_update(der: bytes) -> None:
    next_update = x509_ocsp.load_der_ocsp_response(der).next_update_utc.timestamp()
    time.sleep(max(0.0, next_update - time.time()) + 0.5)


def short_lived(ocsp, leaf: Issued, run, exported: Path) -> bytes:
    """Warm and export a staple that expires in a few seconds; the responder then hangs."""
    ocsp.default = Behaviour(this_update_offset=0, next_update_offset=5)
    run("warm", leaf.chain_path, check=True)
    run("export", "--nginx", exported, leaf.chain_path, check=True)
    ocsp.default = Behaviour(hang=True)  # an outage: no renewal, and nginx's own fetch gets nothing
    return staple_file(exported, leaf).read_bytes()


def test_expired_staple_is_removed_and_never_stapled(ocsp, leaves, run, nginx, exported):
    [leaf] = leaves("short")
    der = short_lived(ocsp, leaf, run, exported)
    snippet = exported / f"{leaf.chain_path.stem}.stapling"
    assert snippet.read_text() == f"ssl_stapling_file {staple_file(exported, leaf)};\n"
    site = Site("short.test", leaf.chain_path, leaf.key_path, [f"include {exported}/{leaf.chain_path.stem}.stapling*;"])
    server = nginx([site])
    assert handshake(server.port, "short.test").staple == der

    wait_past_next_update(der)
    # nginx has no time check on a file's staple: it still sends the expired one
    assert handshake(server.port, "short.test").staple == der
    ran = run("export", "--nginx", exported, leaf.chain_path, "--reload-cmd", server.reload_command(), "--json")
    assert ran.exit_code == 3 and actions(ran) == ["removed"]  # loud: something to alert on
    assert "reload command" not in ran.stderr  # the reload itself succeeded
    assert not staple_file(exported, leaf).exists() and not snippet.exists()
    shake = server.wait_for("short.test", lambda s: s.staple is None)
    assert shake.staple is None


def test_plain_stapling_file_keeps_the_expired_staple_after_removal(ocsp, leaves, run, nginx, exported):
    """Why docs/nginx.md does not recommend a bare ssl_stapling_file line."""
    [leaf] = leaves("bare")
    der = short_lived(ocsp, leaf, run, exported)
    server = nginx([plain(exported, leaf)])
    wait_past_next_update(der)
    ran = run("export", "--nginx", exported, leaf.chain_path, "--reload-cmd", server.reload_command(), "--json")
    assert ran.exit_code == 3 and actions(ran) == ["removed"]
    assert "reload command" in ran.stderr and "exited with 1" in ran.stderr
    assert "BIO_new_file" in ran.stderr  # nginx -s reload refuses the configuration: the file is missing
    # ...so the running nginx keeps the staple it loaded, expired as it is,
    assert handshake(server.port, "bare.test").staple == der
    # and this configuration would not start at all.
    refused = subprocess.run(server.test_command(), capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "BIO_new_file" in refused.stderr
