"""Responses naming algorithms cryptography does not know (issue 15's reports).

A signature algorithm it has no hash for (md2WithRSA), a CertID hash it
does not know at all, or one it knows but staplectl never asks with
(sha224): from a responder, ``fetch`` says what is wrong in one line and
exits 3; planted in a shared memcached, the entry is junk for its own
certificate alone: ``warm`` refreshes every certificate, ``inspect CERT``
shows the entry and the failed check, ``check`` judges the certificate
(CRITICAL: no staple) instead of going UNKNOWN for the whole run. A
value that is no response at all is planted beside them, for warm and check.
"""

from __future__ import annotations

import uuid

import pytest
from pymemcache.client.base import Client

from engine.ocsp.certs import serial_text
from tests.fuzz.responses import SHA224, UNKNOWN_HASH, certid_hashed_with, md2_signed
from tests.loopback import CONFIG_ALLOW
from tests.responder import Behaviour
from tests.test_inspection import sha1

#: response name -> (how to make it, what fetch says about it)
ODD = {
    "md2 signature": (md2_signed, "1.2.840.113549.1.1.2, a signature algorithm we cannot verify"),
    "unknown CertID hash": (
        lambda pki, issued: certid_hashed_with(pki, issued, UNKNOWN_HASH),
        "got serial {serial}, unsupported hash " + UNKNOWN_HASH,
    ),
    "sha224 CertID": (lambda pki, issued: certid_hashed_with(pki, issued, SHA224), "got serial {serial}, sha224"),
}
#: and a value that is no response at all, planted beside them
PLANTED = {**ODD, "unparsable": (lambda pki, issued: b"\x30\x82\xff\xff junk", "")}


def said(name: str, issued) -> str:
    return ODD[name][1].format(serial=format(issued.serial, "X"))


# (fetch matches the answer with the CertID it asked with, so sha224 was always a plain mismatch there)
@pytest.mark.parametrize("name", ["md2 signature", "unknown CertID hash"])
def test_fetch_says_what_is_wrong_in_one_line(cli, pki, responder, name):
    responder.script(pki.good, Behaviour(body=ODD[name][0](pki, pki.good)))
    ran = cli("fetch", pki.good.chain_path)
    assert ran.exit_code == 3, ran.stdout + ran.stderr  # not 1, "revoked", as a traceback made it
    [line] = ran.stderr.splitlines()
    assert line.startswith("staplectl: error: response from ") and said(name, pki.good) in line, line


def leaves(pki, count: int) -> list:
    tag = uuid.uuid4().hex[:8]
    return [pki.leaf(f"odd-{tag}-{n}") for n in range(count)]


@pytest.fixture
def planted(pki, memcached, tmp_path, request):
    """Four certificates in a configuration; the first with ``request.param``'s response planted in memcached."""
    certs = leaves(pki, 4)
    victim = certs[0]
    Client(memcached.address).set(f"mod_ssl-staple:{sha1(victim)}", b"\x01" + PLANTED[request.param][0](pki, victim),
                                  expire=600)  # fmt: skip
    config = tmp_path / "c.toml"
    config.write_text("certificates = [" + ", ".join(f'"{c.chain_path}"' for c in certs) + "]\n" + CONFIG_ALLOW)
    return certs, config, f"memcache://{memcached.host}:{memcached.port}"


@pytest.mark.parametrize("planted", list(PLANTED), indirect=True)
def test_check_judges_the_certificate_and_the_others(cli, planted):
    certs, config, uri = planted
    for other in certs[1:]:
        assert cli("fetch", other.chain_path, "--cache", uri).exit_code == 0
    ran = cli("check", "--cache", uri, "--config", config, "--json")
    assert ran.exit_code == 2, ran.stdout + ran.stderr  # CRITICAL, not UNKNOWN
    states = {c["cert_sha1"]: (c["state"], c["message"]) for c in ran.json()["certificates"]}
    assert states.pop(sha1(certs[0])) == ("CRITICAL", "no staple cached")
    assert set(states.values()) == {("OK", "")}


@pytest.mark.parametrize("planted", list(ODD), indirect=True)
def test_inspect_cert_shows_the_entry_and_the_failed_check(cli, planted):
    certs, _, uri = planted
    ran = cli("inspect", certs[0].chain_path, "--cache", uri, "--json")
    assert ran.exit_code == 0, ran.stderr
    data = ran.row("entries")
    assert data["validation"]["ok"] is False and data["problem"]
    assert data["response"]["responses"][0]["serial"] == serial_text(certs[0].serial)
    text = cli("inspect", certs[0].chain_path, "--cache", uri, "--text")
    assert text.exit_code == 0 and "Hash Algorithm:" in text.stdout, text.stderr


@pytest.mark.parametrize("planted", list(PLANTED), indirect=True)
def test_warm_refreshes_every_certificate(cli, planted):
    certs, config, uri = planted
    ran = cli("warm", "--cache", uri, "--config", config, "--json")
    assert ran.exit_code == 0, ran.stdout + ran.stderr
    assert [row["result"] for row in ran.rows()] == ["updated"] * len(certs)
    # the planted entry was replaced by a genuine staple
    check = cli("check", "--cache", uri, "--config", config)
    assert check.stdout.startswith("STAPLECTL OK"), check.stdout
