"""staplectl probe and check --probe against the real servers: what each one
staples, set beside the cache, and a server stapling something a client
would refuse (expired, for another certificate, nothing at all)."""

from __future__ import annotations

from pathlib import Path

from engine.ocsp.certs import load_leaf
from engine.ocsp.request import build_request
from engine.responders.transport import post
from tests.integration.haproxy import bundle
from tests.integration.nginx import Site
from tests.integration.test_httpd import memcache_store
from tests.loopback import TRANSPORT
from tests.pki import Issued
from tests.responder import Behaviour


def answer(ocsp, leaf: Issued, behaviour: Behaviour | None = None) -> bytes:
    """The responder's answer for ``leaf``, unvalidated: what a server may be given."""
    if behaviour is not None:
        ocsp.script(leaf, behaviour)
    der = post(ocsp.url, build_request(load_leaf(leaf.chain_path)).der, TRANSPORT)
    ocsp.script(leaf, None)
    return der


def site(leaf: Issued, staple_file: Path | None) -> Site:
    lines = [f"ssl_stapling_file {staple_file};"] if staple_file else []
    return Site(f"{leaf.name}.test", leaf.chain_path, leaf.key_path, lines)


def probe(run, port: int, name: str, *more: object):
    return run("probe", f"127.0.0.1:{port}", "--servername", name, "--json", *more)


def test_nginx_staples_the_cache_then_falls_behind_it(ocsp, leaves, run, nginx, tmp_path):
    [www] = leaves("www")
    (tmp_path / "ocsp").mkdir()
    run("warm", www.chain_path, check=True)
    run("export", "--nginx", tmp_path / "ocsp", www.chain_path, check=True)
    server = nginx([site(www, tmp_path / "ocsp" / f"{www.chain_path.stem}.ocsp")])
    ran = probe(run, server.port, "www.test")
    assert ran.exit_code == 0, ran.stderr
    assert ran.json()["server"] == f"127.0.0.1:{server.port}" and ran.json()["servername"] == "www.test"
    data = ran.row()
    assert (data["stapled"], data["acceptable"], data["status"]) == (True, True, "good")
    assert data["subject"] == "CN=www" and data["in_cache"]["state"] == "same"
    assert data["time_left_seconds"] > 3600

    # renewed, but nginx was not reloaded: a thisUpdate a minute later than the
    # first (-60 s), so that it is newer however fast the two warms follow
    # each other (within one second, they were of the same age: "other")
    ocsp.script(www, Behaviour(this_update_offset=-1))
    run("warm", "--force", www.chain_path, check=True)
    later = probe(run, server.port, "www.test")
    assert later.exit_code == 0 and later.row()["in_cache"]["state"] == "newer_in_cache"
    human = run("probe", f"127.0.0.1:{server.port}", "--servername", "www.test")
    assert "the server has not picked it up" in human.stdout


def test_what_a_client_would_refuse(ocsp, leaves, run, nginx, tmp_path):
    expired, foreign, bare, other = leaves("stale", "foreign", "bare", "elsewhere")
    files = {
        "expired": answer(ocsp, expired, Behaviour(this_update_offset=-7200, next_update_offset=-3600)),
        "foreign": answer(ocsp, other),  # the other certificate's good staple
    }
    for name, der in files.items():
        (tmp_path / f"{name}.der").write_bytes(der)
    server = nginx([site(expired, tmp_path / "expired.der"), site(foreign, tmp_path / "foreign.der"), site(bare, None)])
    for name, reason in (("stale", "expired"), ("foreign", "certid_mismatch"), ("bare", "not_stapled")):
        ran = probe(run, server.port, f"{name}.test")
        assert ran.exit_code == 3, (name, ran.stdout, ran.stderr)
        assert ran.row()["acceptable"] is False and ran.row()["reason"] == reason, name

    # as a monitoring check: CRITICAL although the cache holds a fresh staple
    run("warm", expired.chain_path, check=True)
    check = run("check", "--probe", f"127.0.0.1:{server.port}", "--servername", "stale.test")
    assert check.exit_code == 2 and check.stdout.startswith("STAPLECTL CRITICAL - ")
    assert "stapled response expired" in check.stdout


def test_httpd_staples_from_memcached(memcache, ocsp, leaves, run, httpd):
    [leaf] = leaves("mc")
    store = memcache_store(memcache)
    run("warm", "--cache", store.uri, leaf.chain_path, check=True)
    server = httpd([leaf], store.httpd)
    ran = probe(run, server.port, "mc.test", "--cache", store.uri)
    assert ran.exit_code == 0, ran.stderr
    assert ran.row()["in_cache"]["state"] == "same"
    check = run("check", "--probe", f"127.0.0.1:{server.port}", "--servername", "mc.test", "--cache", store.uri)
    assert check.exit_code == 0 and check.stdout.startswith("STAPLECTL OK - ")


def test_haproxy_staples_its_ocsp_files(leaves, run, haproxy, tmp_path):
    [leaf] = leaves("hap")
    certs = tmp_path / "certs"
    certs.mkdir()
    path = bundle(leaf, certs)
    run("warm", path, check=True)
    run("export", "--haproxy", path, check=True)
    server = haproxy([path])
    ran = probe(run, server.port, "hap.test")
    assert ran.exit_code == 0, ran.stderr
    assert ran.row()["in_cache"]["state"] == "same"


def test_a_server_that_is_not_there(run):
    from tests.servers import free_port

    ran = run("probe", f"127.0.0.1:{free_port()}", "--json")
    assert ran.exit_code == 3 and "cannot connect" in ran.json()["error"]["message"]
    bad = run("probe", "127.0.0.1:99999")
    assert bad.exit_code == 2 and "the port must be a number from 1 to 65535" in bad.stderr
