"""Apache httpd staples what staplectl put in its memcached/redis stapling cache.

Real httpd 2.4 (mod_ssl, mod_socache_memcache, mod_socache_redis), real
cache servers, a TLS client that returns the stapled bytes: each staple is
compared byte for byte with the value staplectl stored under httpd's key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import format_datetime

import pytest
import redis as redis_client
from cryptography.x509 import ocsp as x509_ocsp
from pymemcache.client.base import Client as MemcacheClient

from engine.store.providers.layout import apr_server_index
from tests.loopback import CONFIG_ALLOW
from tests.cli.conftest import staplectl_path
from tests.integration.tlsclient import Handshake, handshake
from tests.pki import Issued
from tests.responder import Behaviour
from tests.servers import ServerProcess

#: SSLStaplingResponderTimeout is 5 s (httpd.py): a handshake that waited on
#: the responder would take that long
NO_WAIT = 2.0


def cert_id(leaf: Issued) -> str:
    return hashlib.sha1(leaf.der_path.read_bytes()).hexdigest()


def key_of(leaf: Issued, namespace: str = "mod_ssl-staple") -> str:
    return f"{namespace}:{cert_id(leaf)}"


@dataclass
class Store:
    """One cache as staplectl names it and as httpd names it, and its raw contents."""

    uri: str
    httpd: str
    servers: list[ServerProcess]

    def raw(self, key: str) -> bytes | None:
        """The value under key, read from the server apr-util picks; asserts no other server has it."""
        values = [self._get(server, key) for server in self.servers]
        pick = apr_server_index(key, len(self.servers))
        assert all(v is None for i, v in enumerate(values) if i != pick), f"{key} is on a server apr-util does not pick"
        return values[pick]

    def staple(self, leaf: Issued) -> bytes:
        value = self.raw(key_of(leaf))
        assert value is not None and value[0] == 0x01, f"no valid entry for {leaf.name}: {value!r}"
        return value[1:]

    def _get(self, server: ServerProcess, key: str) -> bytes | None:
        if self.uri.startswith("redis"):
            return redis_client.Redis(*server.address, socket_timeout=2).get(key)
        client = MemcacheClient(server.address, timeout=2)
        try:
            return client.get(key)
        finally:
            client.close()


@pytest.fixture(params=["memcache", "memcache-two", "redis"])
def store(request) -> Store:
    if request.param == "redis":
        servers = [request.getfixturevalue("redis")]
    elif request.param == "memcache":
        servers = [request.getfixturevalue("memcache")]
    else:
        servers = request.getfixturevalue("memcache_two")
    scheme = "redis" if request.param == "redis" else "memcache"
    listed = ",".join(f"{s.host}:{s.port}" for s in servers)
    return Store(f"{scheme}://{listed}", f"{scheme}:{listed}", servers)


def memcache_store(server: ServerProcess) -> Store:
    return Store(f"memcache://{server.host}:{server.port}", f"memcache:{server.host}:{server.port}", [server])


def spread(store: Store, make: Callable[..., list[Issued]], count: int = 3) -> list[Issued]:
    """At least `count` leaves, and (with several servers) some on every one of them."""
    issued: list[Issued] = []
    while len(issued) < count or len({apr_server_index(key_of(l), len(store.servers)) for l in issued}) < len(store.servers):
        assert len(issued) < 40, "apr-util's hash never picked every server"
        issued += make(f"vhost{len(issued)}")
    return issued


def at_once(port: int, issued: list[Issued]) -> list[Handshake]:
    """Every vhost's first handshake, all at the same moment."""
    with ThreadPoolExecutor(len(issued)) as pool:
        return list(pool.map(lambda leaf: handshake(port, f"{leaf.name}.test"), issued))


def test_warmed_cache_staples_every_first_handshake_without_waiting(store, ocsp, leaves, run, httpd):
    issued = spread(store, leaves)
    run("warm", "--cache", store.uri, *(leaf.chain_path for leaf in issued), check=True)
    fetched = {leaf.name: store.staple(leaf) for leaf in issued}
    # From now on a request to the responder would hang until httpd's 5 s timeout.
    ocsp.default = Behaviour(hang=True)
    asked = ocsp.request_count

    server = httpd(issued, store.httpd)
    for leaf, shake in zip(issued, at_once(server.port, issued)):
        assert shake.certificate == leaf.cert
        assert shake.staple == fetched[leaf.name], f"{leaf.name}: not the staple staplectl fetched"
        assert shake.seconds < NO_WAIT, f"{leaf.name}: handshake took {shake.seconds:.2f} s"
    assert ocsp.request_count == asked
    assert not server.queried_responder()


def test_legacy_namespace_is_what_goes_on_the_wire(memcache, ocsp, leaves, run, httpd):
    """httpd 2.4.5-2.4.43 read `mod_ssl-stapling:<sha1>`; we cannot run one, so check the keys."""
    [leaf] = leaves("legacy")
    store = memcache_store(memcache)
    run("warm", "--cache", store.uri + "?namespace=mod_ssl-stapling", leaf.chain_path, check=True)
    value = store.raw(key_of(leaf, "mod_ssl-stapling"))
    assert value is not None and value[0] == 0x01
    assert x509_ocsp.load_der_ocsp_response(value[1:]).serial_number == leaf.serial
    assert store.raw(key_of(leaf)) is None
    listed = run("inspect", "--cache", store.uri + "?namespace=mod_ssl-stapling", "--json", check=True)
    assert [e["cache_key"] for e in listed.json()["entries"]] == [key_of(leaf, "mod_ssl-stapling")]

    # And it matters: httpd 2.4.44+ looks under mod_ssl-staple, misses, and asks
    # the responder (which fails at once here: no staple).
    ocsp.default = Behaviour(http_status=500)
    server = httpd([leaf], store.httpd)
    assert handshake(server.port, "legacy.test").staple is None
    assert server.queried_responder()


def test_prefetch_beside_httpd_keeps_each_staple_current(memcache, ocsp, leaves, run, httpd, tmp_path, staplectl_env):
    validity = 6  # seconds: staplectl renews at half of it
    issued = leaves("p1", "p2")
    store = memcache_store(memcache)
    config = tmp_path / "staplectl.toml"
    config.write_text(
        f'cache = "{store.uri}"\n'
        f"certificates = [{', '.join(repr(str(leaf.chain_path)) for leaf in issued)}]\n"
        '[prefetch]\nmin_delay = "1s"\n' + CONFIG_ALLOW
    )
    ocsp.default = Behaviour(this_update_offset=0, next_update_offset=validity)
    run("warm", "--config", config, check=True)
    server = httpd(issued, store.httpd)

    log = tmp_path / "prefetch.log"
    with open(log, "wb") as out:
        service = subprocess.Popen(
            [staplectl_path(), "prefetch", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=out, env=staplectl_env,
        )
    seen: dict[str, list[bytes]] = {leaf.name: [] for leaf in issued}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and min(len(set(s)) for s in seen.values()) < 4:
            for leaf in issued:
                shake = handshake(server.port, f"{leaf.name}.test")
                assert shake.staple is not None and shake.seconds < NO_WAIT
                response = x509_ocsp.load_der_ocsp_response(shake.staple)
                # current: httpd itself would staple up to 300 s past nextUpdate
                assert response.next_update_utc.timestamp() > time.time(), f"{leaf.name}: stale staple"
                seen[leaf.name].append(shake.staple)
            time.sleep(0.25)
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=10)
    text = log.read_text()
    for leaf in issued:
        assert len(set(seen[leaf.name])) >= 4, f"{leaf.name}: {len(set(seen[leaf.name]))} staples in 30 s\n{text}"
    # every response the responder gave went to staplectl: warm's, then the worker's
    assert " failed" not in text, text
    assert ocsp.request_count == len(issued) + text.count(" updated: ")
    assert not server.queried_responder()


def test_inspect_shows_httpd_entries_and_warm_replaces_the_bad_ones(memcache, ocsp, leaves, run, httpd):
    own, error, fake = leaves("own", "error", "fake")
    ocsp.script(error, Behaviour(response_status="internal_error"))  # httpd caches it with flag 0x00
    ocsp.script(fake, Behaviour(http_status=500))  # httpd caches a fake tryLater, flag 0x01
    store = memcache_store(memcache)
    server = httpd([own, error, fake], store.httpd, stapling={"SSLStaplingFakeTryLater": "on"})
    stapled = {leaf.name: handshake(server.port, f"{leaf.name}.test").staple for leaf in (own, error, fake)}

    entries = {e["cert_sha1"]: e for e in run("inspect", "--cache", store.uri, "--json", check=True).json()["entries"]}
    assert set(entries) == {cert_id(own), cert_id(error), cert_id(fake)}
    mine = entries[cert_id(own)]
    assert (mine["status"], mine["valid"], mine["entry_flag"], mine["fetched_at"]) == ("good", True, 1, None)
    assert mine["flags"] == ["unverified"]  # no staplectl metadata: httpd wrote it
    bad = entries[cert_id(error)]
    assert (bad["entry_flag"], bad["response_status"], bad["valid"]) == (0, "internal_error", False)
    assert "error-entry" in bad["flags"]
    later = entries[cert_id(fake)]
    assert (later["entry_flag"], later["response_status"], later["valid"]) == (1, "try_later", False)
    assert "try-later" in later["flags"]
    # and these are what clients got: httpd staples its error entries
    assert stapled["error"] == store.raw(key_of(error))[1:]
    assert stapled["fake"] == store.raw(key_of(fake))[1:]
    table = run("inspect", "--cache", store.uri, check=True).stdout
    assert "error-entry" in table and "try-later" in table

    ocsp.script(error, None)
    ocsp.script(fake, None)
    rows = run("warm", "--cache", store.uri, own.chain_path, error.chain_path, fake.chain_path, "--json").rows()
    assert {r["cert"].rsplit("/", 1)[-1]: r["result"] for r in rows} == {
        "own-chain.pem": "fresh", "error-chain.pem": "updated", "fake-chain.pem": "updated",
    }
    asked = ocsp.request_count
    for leaf in (error, fake):
        shake = handshake(server.port, f"{leaf.name}.test")
        assert shake.staple == store.staple(leaf)
        assert x509_ocsp.load_der_ocsp_response(shake.staple).certificate_status == x509_ocsp.OCSPCertStatus.GOOD
    assert ocsp.request_count == asked
    after = run("inspect", "--cache", store.uri, "--json", check=True).json()["entries"]
    assert all(e["valid"] and e["entry_flag"] == 1 for e in after)
    assert not any({"error-entry", "try-later"} & set(e["flags"]) for e in after)


def test_mod_md_staples_what_export_wrote_in_its_store(ocsp, leaves, run, httpd, memcache, tmp_path):
    """mod_md (MDStapling on) keeps staples as JSON files and reads them at
    start (docs/design.md): what `staplectl export --mod-md` writes there is
    stapled on the first handshake, without asking the responder."""
    [leaf] = leaves("md")
    store_dir = tmp_path / "md-store"
    store_dir.mkdir()
    run("warm", leaf.chain_path, check=True)
    run("export", "--mod-md", store_dir, leaf.chain_path, check=True)
    entry = store_dir / "ocsp" / "other" / f"ocsp-{cert_id(leaf)}.json"  # "other": not a managed domain
    data = json.loads(entry.read_text())
    der = base64.urlsafe_b64decode(data["response"] + "=" * (-len(data["response"]) % 4))
    response = x509_ocsp.load_der_ocsp_response(der)
    assert data["valid"]["until"] == format_datetime(response.next_update_utc, usegmt=True)
    ocsp.default = Behaviour(hang=True)
    asked = ocsp.request_count
    server = httpd([leaf], memcache_store(memcache).httpd, modules=["md"],
                   extra=[f"MDStoreDir {store_dir}", "MDStapling on"])
    shake = handshake(server.port, "md.test")
    assert shake.staple == der and shake.seconds < NO_WAIT
    assert ocsp.request_count == asked
