"""engine.ocsp.openssl_text beside the real openssl, on what the corpus has
too little of: names that need quoting or escaping, and times written
with a fraction of a second."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from engine.ocsp.response_text import render
from tests.corpus_cases import openssl_binary
from tests.resigning import resigned

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
A = x509.NameAttribute

NAMES = {
    "comma": [A(NameOID.COUNTRY_NAME, "US"), A(NameOID.ORGANIZATION_NAME, "Facebook, Inc.")],
    "specials": [A(NameOID.COMMON_NAME, 'a+b;c<d>e "q" back\\slash')],
    "spaces-and-hash": [A(NameOID.COMMON_NAME, "#lead"), A(NameOID.ORGANIZATIONAL_UNIT_NAME, " both ends ")],
    "utf8": [A(NameOID.LOCALITY_NAME, "Zürich"), A(NameOID.COMMON_NAME, "Ωmega ✓")],
    "bmp-string": [A(NameOID.COMMON_NAME, "Größe", _type=_ASN1Type.BMPString)],
    "control": [A(NameOID.COMMON_NAME, "tab\there")],
    "short-names": [
        A(NameOID.DOMAIN_COMPONENT, "example"), A(NameOID.USER_ID, "u1"), A(NameOID.EMAIL_ADDRESS, "a@example.com"),
        A(NameOID.ORGANIZATION_IDENTIFIER, "VATDE-1"), A(NameOID.JURISDICTION_COUNTRY_NAME, "DE"),
        A(x509.ObjectIdentifier("1.2.3.4"), "private"),
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def openssl() -> str:
    return openssl_binary()


def openssl_lines(openssl: str, der: bytes, tmp_path) -> list[str]:
    path = tmp_path / "response.der"
    path.write_bytes(der)
    done = subprocess.run([openssl, "ocsp", "-respin", str(path), "-resp_text", "-noverify"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [line.rstrip() for line in done.stdout.splitlines()]


def by_name(attributes: list[x509.NameAttribute] | list[x509.RelativeDistinguishedName]) -> bytes:
    """A response whose ResponderID is ``byName``, signed by a self-signed certificate of that name."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(attributes)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=cert, issuer=cert, algorithm=hashes.SHA1(), cert_status=ocsp.OCSPCertStatus.GOOD,
        this_update=NOW, next_update=None, revocation_time=None, revocation_reason=None,
    ).responder_id(ocsp.OCSPResponderEncoding.NAME, cert)  # fmt: skip
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def responder_line(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith("    Responder Id:"))


@pytest.mark.parametrize("attributes", NAMES.values(), ids=NAMES.keys())
def test_a_name_is_written_as_openssl_writes_it(attributes, openssl, tmp_path):
    der = by_name(attributes)
    assert responder_line(render(der).splitlines()) == responder_line(openssl_lines(openssl, der, tmp_path))


def test_a_multi_valued_rdn(openssl, tmp_path):
    rdn = x509.RelativeDistinguishedName([A(NameOID.COMMON_NAME, "a"), A(NameOID.ORGANIZATION_NAME, "b")])
    der = by_name([x509.RelativeDistinguishedName([A(NameOID.COUNTRY_NAME, "DE")]), rdn])
    assert responder_line(render(der).splitlines()) == responder_line(openssl_lines(openssl, der, tmp_path))


def test_a_fraction_of_a_second_is_shown_as_written(pki, openssl, tmp_path):
    built = by_name([A(NameOID.COMMON_NAME, "x")])  # any response will do: only times are compared
    der = resigned(pki, built, lambda tag, content: content[:-1] + b".125Z" if tag == 0x18 else content)
    ours = [line for line in render(der).splitlines() if line.startswith(("    Produced At", "    This Update"))]
    theirs = [line for line in openssl_lines(openssl, der, tmp_path) if line.startswith(("    Produced At", "    This Update"))]
    assert ours == theirs and all(".125 " in line for line in ours) and len(ours) == 2
