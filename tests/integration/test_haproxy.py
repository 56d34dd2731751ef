"""HAProxy staples the `<cert>.ocsp` files of `staplectl export --haproxy`,
and, with --haproxy-socket, each renewal pushed through its runtime API."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from engine.store.providers import open_provider
from staplectl.haproxy_api import HAProxyAPIError, set_ocsp_response
from tests.integration.haproxy import bundle
from tests.integration.tlsclient import handshake
from tests.pki import Issued
from tests.responder import Behaviour


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    directory.mkdir()
    return directory


def stored(home: Path, leaf: Issued) -> bytes:
    cert_id = hashlib.sha1(leaf.der_path.read_bytes()).hexdigest()
    with open_provider(f"local:{home / 'staples.db'}") as provider:
        return provider.get(cert_id).der


def ocsp_file(path: Path) -> Path:
    return path.with_name(path.name + ".ocsp")


def rows(ran) -> dict[str, dict]:
    return {Path(row["cert"]).name: row for row in ran.rows()}


def test_exported_files_are_stapled_from_the_start(leaves, run, haproxy, certs, staplectl_env):
    issued = leaves("www", "api")
    paths = [bundle(leaf, certs) for leaf in issued]
    run("warm", certs, check=True)  # the bundles' keys are ignored
    run("export", "--haproxy", certs, check=True)
    server = haproxy(paths)
    home = Path(staplectl_env["STAPLECTL_HOME"])
    for leaf, path in zip(issued, paths):
        staple = handshake(server.port, f"{leaf.name}.test").staple
        assert staple == ocsp_file(path).read_bytes() == stored(home, leaf)


def test_socket_push_replaces_staples_without_a_reload(leaves, run, haproxy, certs, staplectl_env):
    issued = leaves("www", "api", "late")
    paths = [bundle(leaf, certs) for leaf in issued]
    run("warm", paths[0], paths[1], check=True)
    run("export", "--haproxy", paths[0], paths[1], check=True)
    # No staple for "late" yet: an empty .ocsp still makes HAProxy set up
    # stapling for it at start, so that a push can fill it in later.
    ocsp_file(paths[2]).write_bytes(b"")
    server = haproxy(paths)
    pid = server.pid()
    home = Path(staplectl_env["STAPLECTL_HOME"])
    before = {leaf.name: handshake(server.port, f"{leaf.name}.test").staple for leaf in issued}
    assert before["late"] is None

    run("warm", "--force", certs, check=True)
    ran = run("export", "--haproxy", "--haproxy-socket", server.socket, certs, "--json", check=True)
    assert {name: row["result"] for name, row in rows(ran).items()} == dict.fromkeys(
        ["api.pem", "late.pem", "www.pem"], "written"
    )
    for leaf, path in zip(issued, paths):
        staple = handshake(server.port, f"{leaf.name}.test").staple
        assert staple == stored(home, leaf) == ocsp_file(path).read_bytes()
        assert staple != before[leaf.name]
    assert server.pid() == pid  # the same process: no reload, no restart


def test_push_refused_for_a_certificate_loaded_without_ocsp(leaves, run, haproxy, certs):
    [leaf] = leaves("plain")
    path = bundle(leaf, certs)
    server = haproxy([path])  # no .ocsp at start: HAProxy set up no stapling for it
    run("warm", path, check=True)
    ran = run("export", "--haproxy", "--haproxy-socket", server.socket, path, "--json")
    assert ran.exit_code == 3
    row = rows(ran)["plain.pem"]
    assert row["result"] == "written" and ocsp_file(path).exists()  # there for the next reload
    assert row["error"]["reason"] == "haproxy_api"
    assert "Certificate ID does not match" in row["error"]["message"]
    assert handshake(server.port, "plain.test").staple is None


def test_socket_option_needs_haproxy_and_a_socket(leaves, run, certs, tmp_path):
    paths = [bundle(leaf, certs) for leaf in leaves("one", "two")]
    run("warm", *paths, check=True)
    assert run("export", "--nginx", tmp_path, "--haproxy-socket", tmp_path / "s", *paths).exit_code == 2
    with pytest.raises(HAProxyAPIError, match="No such file"):
        set_ocsp_response(tmp_path / "no-such.sock", b"\x30\x03\x0a\x01\x03")
    ran = run("export", "--haproxy", "--haproxy-socket", tmp_path / "no-such.sock", *paths, "--json")
    assert ran.exit_code == 3
    for row in rows(ran).values():  # the files are written all the same
        assert row["result"] == "written" and "No such file" in row["error"]["message"]


def test_haproxy_stops_stapling_300_s_before_next_update(ocsp, leaves, run, haproxy, certs):
    """A fact docs/haproxy.md relies on: renewals must land before nextUpdate - 300 s."""
    [leaf] = leaves("margin")
    path = bundle(leaf, certs)
    ocsp.default = Behaviour(this_update_offset=0, next_update_offset=306)
    run("warm", path, check=True)
    run("export", "--haproxy", path, check=True)
    server = haproxy([path])
    started = time.monotonic()
    assert handshake(server.port, "margin.test").staple == ocsp_file(path).read_bytes()
    while handshake(server.port, "margin.test").staple is not None:
        assert time.monotonic() - started < 12, "HAProxy still staples it"
        time.sleep(0.2)
    # thisUpdate + 306 s - 300 s, measured from a little after thisUpdate
    assert time.monotonic() - started < 8


def test_bundle_needs_its_issuer_when_an_ocsp_file_is_present(leaves, haproxy, certs, ocsp):
    [leaf] = leaves("alone")
    path = bundle(leaf, certs, issuer=False)
    ocsp_file(path).write_bytes(b"")
    server = haproxy([path], run=False)
    code, output = server.check()
    assert code != 0 and "impossible to compute the OCSP certificate ID" in output
    assert leaf.issuer is not None
    path.with_name(path.name + ".issuer").write_bytes(leaf.issuer.cert_path.read_bytes())
    code, output = server.check()
    assert code == 0, output
