"""A shared cache is untrusted: whoever can write to memcached or redis can
plant anything under our keys. Against real servers: nothing read there
names a file we open, metadata is read against a schema, and a value of the
wrong type or shape is junk for its own certificate, never for the rest."""

from __future__ import annotations

import json
import os
import uuid

import pytest
import redis
from pymemcache.client.base import Client

from tests.loopback import CONFIG_ALLOW
from tests.test_inspection import response_der, sha1


def leaves(pki, count: int) -> list:
    tag = uuid.uuid4().hex[:8]
    return [pki.leaf(f"hostile-{tag}-{n}") for n in range(count)]


def meta_key(issued) -> str:
    return f"staplectl-meta:mod_ssl-staple:{sha1(issued)}"


@pytest.mark.parametrize("planted", ["/dev/zero", "fifo"])
def test_a_path_in_shared_metadata_is_never_opened(cli, pki, memcached, tmp_path, planted):
    uri = f"memcache://{memcached.host}:{memcached.port}"
    [victim] = leaves(pki, 1)
    if planted == "fifo":
        planted = str(tmp_path / "fifo")
        os.mkfifo(planted)  # opening it would hang inspect for ever
    raw = Client(memcached.address)
    raw.set(f"mod_ssl-staple:{sha1(victim)}", b"\x01" + response_der(pki, victim), expire=600)
    raw.set(meta_key(victim), json.dumps({"cert_path": planted, "fetched_at": "2026-01-01T00:00:00Z"}), expire=600)
    ran = cli("inspect", "--cache", uri, "--json")
    assert ran.exit_code == 0, ran.stderr
    row = next(e for e in ran.json()["entries"] if e["cert_sha1"] == sha1(victim))
    assert row["cert"] is None and row["flags"] == ["unverified"]
    assert f"metadata names {planted}, not opened" in row["cert_note"]
    one = cli("inspect", sha1(victim), "--cache", uri)  # one entry in full: the same
    assert one.exit_code == 0 and "not opened" in one.stdout


@pytest.mark.parametrize(
    "junk, said",
    [
        (b"[1, 2, 3]", "metadata is a JSON list, not an object"),
        (b"42", "metadata is a JSON int, not an object"),
        (b"{not json", "metadata is not JSON"),
        (json.dumps({"cert_path": ["/etc/passwd"], "subject": 7}).encode(), "wrong type or size: cert_path, subject"),
        (json.dumps({"x": "y" * 20000}).encode(), "over the 16384-byte limit"),
    ],
)
def test_junk_metadata_is_junk_for_its_entry_alone(cli, pki, memcached, junk, said):
    uri = f"memcache://{memcached.host}:{memcached.port}"
    victim, bystander = leaves(pki, 2)
    assert cli("fetch", victim.chain_path, "--cache", uri).exit_code == 0
    assert cli("fetch", bystander.chain_path, "--cache", uri).exit_code == 0
    key = meta_key(victim)
    Client(memcached.address).set(key, junk, expire=600)
    ran = cli("inspect", "--cache", uri, "--json")
    assert ran.exit_code == 0, ran.stderr
    rows = {e["cert_sha1"]: e for e in ran.json()["entries"]}
    assert "junk" in rows[sha1(victim)]["flags"] and said in rows[sha1(victim)]["junk"]
    assert rows[sha1(bystander)]["junk"] is None and "junk" not in rows[sha1(bystander)]["flags"]
    table = cli("inspect", "--cache", uri)
    assert table.exit_code == 0 and "junk" in table.stdout


def test_a_redis_key_of_another_type_is_junk_for_its_certificate_alone(cli, pki, redis_server, tmp_path):
    uri = f"redis://{redis_server.host}:{redis_server.port}"
    certs = leaves(pki, 4)
    victim = certs[0]
    client = redis.Redis(*redis_server.address)
    client.rpush(meta_key(victim), "a", "list")
    client.rpush(f"mod_ssl-staple:{sha1(victim)}", "another", "list")
    config = tmp_path / "c.toml"
    config.write_text("certificates = [" + ", ".join(f'"{c.chain_path}"' for c in certs) + "]\n" + CONFIG_ALLOW)

    ran = cli("inspect", "--cache", uri, "--json")
    assert ran.exit_code == 0, ran.stderr
    row = next(e for e in ran.json()["entries"] if e["cert_sha1"] == sha1(victim))
    assert "WRONGTYPE" in row["junk"]
    # warm does not fail the others (it did: WRONGTYPE for the whole read), and
    # stores over the junk, which a string SET replaces
    warmed = cli("warm", "--cache", uri, "--config", config, "--json")
    assert warmed.exit_code == 0, warmed.stdout
    assert client.type(meta_key(victim)) == b"string"
    check = cli("check", "--cache", uri, "--config", config, "--warn", "1m", "--crit", "10s")
    assert check.stdout.startswith("STAPLECTL OK"), check.stdout



def test_the_dashboard_never_opens_a_path_from_a_shared_cache(pki, memcached, tmp_path):
    from staplectl.dashboard.snapshot import Collector

    [victim] = leaves(pki, 1)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    raw = Client(memcached.address)
    raw.set(f"mod_ssl-staple:{sha1(victim)}", b"\x01" + response_der(pki, victim), expire=600)
    raw.set(meta_key(victim), json.dumps({"cert_path": str(fifo)}), expire=600)
    collector = Collector(
        cache_uri=f"memcache://{memcached.host}:{memcached.port}", leaves=[],
        lock_dir=tmp_path / "locks", state_path=tmp_path / "w.db",
    )  # fmt: skip
    try:
        snapshot = collector.collect()  # would hang opening the FIFO
    finally:
        collector.close()
    item = next(i for i in snapshot.items if i.cert_id == sha1(victim))
    assert item.leaf is None and f"metadata names {fifo}, not opened" in item.note


def test_a_staple_with_a_bad_signature_in_a_shared_cache_is_never_served_checked_or_exported(cli, pki, memcached,
                                                                                              tmp_path):
    # The issuer's own response with one bit of its signature flipped: every
    # field is right, only the signature check can refuse it.
    uri = f"memcache://{memcached.host}:{memcached.port}"
    [victim] = leaves(pki, 1)
    Client(memcached.address).set(f"mod_ssl-staple:{sha1(victim)}", b"\x01" + response_der(pki, victim, corrupt=True),
                                  expire=600)  # fmt: skip
    checked = cli("check", str(victim.chain_path), "--cache", uri)
    assert checked.exit_code == 2, checked.stdout + checked.stderr  # CRITICAL: no usable staple
    assert "CRITICAL" in checked.stdout
    out = tmp_path / "nginx"
    out.mkdir()
    exported = cli("export", "--nginx", str(out), str(victim.chain_path), "--cache", uri)
    assert exported.exit_code == 3, exported.stderr
    assert list(out.iterdir()) == []
    inspected = cli("inspect", str(victim.chain_path), "--cache", uri, "--json").row("entries")
    assert inspected["validation"]["ok"] is False and "signature" in inspected["validation"]["problem"]
