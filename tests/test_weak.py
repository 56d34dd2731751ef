"""Weak algorithms (SHA-1 signatures, RSA under 2048 bits): accepted as
OpenSSL accepts them, flagged wherever a staple is shown, refused only with
responder.refuse_weak."""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine import errors
from engine.ocsp.certs import load_leaf
from engine.ocsp.validate import ValidationOptions
from engine.ocsp.weak import weaknesses
from engine.refresh.fetch import fetch
from tests.loopback import FETCH, local
from tests.responder import Behaviour
from tests.sha1_signing import resign_certificate

WEAK = Behaviour(signer="delegate_weak", sign_sha1=True)


def fetch_with(responder, pki, behaviour, **validation):
    responder.script(pki.good, behaviour)
    options = replace(FETCH, transport=local(FETCH.transport), validation=ValidationOptions(**validation))
    return fetch(load_leaf(pki.good.chain_path), options)


def test_a_strong_response_has_nothing_to_say(responder, pki):
    assert fetch_with(responder, pki, Behaviour(signer="delegate")).weak == ()


def test_sha1_and_a_short_key_are_accepted_and_said(responder, pki):
    staple = fetch_with(responder, pki, WEAK)
    assert staple.status == "good"
    assert staple.weak == ("response signed with SHA1", "responder key 1024 bits")


def test_refuse_weak_refuses_them(responder, pki):
    with pytest.raises(errors.WeakAlgorithmError, match="response signed with SHA1; responder key 1024 bits"):
        fetch_with(responder, pki, WEAK, refuse_weak=True)
    assert fetch_with(responder, pki, Behaviour(), refuse_weak=True).weak == ()  # strong ones pass


def test_openssl_accepts_what_we_flag(responder, pki, tmp_path):
    """Our SHA-1 signature is a real one: OpenSSL verifies the response."""
    staple = fetch_with(responder, pki, WEAK)
    path = tmp_path / "weak.der"
    path.write_bytes(staple.der)
    done = subprocess.run(
        ["openssl", "ocsp", "-respin", str(path), "-issuer", str(pki.intermediate.cert_path),
         "-CAfile", str(pki.bundle_path), "-cert", str(pki.good.cert_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "Response verify OK" in done.stderr + done.stdout, done.stderr


def test_a_delegate_certificate_signed_with_sha1_is_said():
    """GlobalSign's and others' delegated responder certificates (RSA CAs)."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = lambda cn: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # noqa: E731
    now = dt.datetime.now(dt.timezone.utc)
    made = (
        x509.CertificateBuilder().subject_name(name("delegate")).issuer_name(name("CA"))
        .public_key(key.public_key()).serial_number(7)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    from cryptography.hazmat.primitives.serialization import Encoding

    delegate = x509.load_der_x509_certificate(
        resign_certificate(made.public_bytes(Encoding.DER), made.tbs_certificate_bytes, made.signature, ca_key)
    )
    assert delegate.signature_hash_algorithm.name == "sha1"
    response = _response_signed_by(delegate, key)
    assert weaknesses(response, delegate, delegate) == ("delegated responder certificate signed with SHA1",)
    assert weaknesses(response, delegate, None) == ()  # the issuer's own certificate is not the response's


def _response_signed_by(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> ocsp.OCSPResponse:
    now = dt.datetime.now(dt.timezone.utc)
    return (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(b"\0" * 20, b"\0" * 20, 1, hashes.SHA1(), ocsp.OCSPCertStatus.GOOD, now, None, None,
                              None)  # fmt: skip
        .responder_id(ocsp.OCSPResponderEncoding.HASH, cert)
        .sign(key, hashes.SHA256())
    )
