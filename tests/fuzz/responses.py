"""Signed OCSP responses about the test PKI's leaves, and the reported odd ones.

The seeds the fuzz targets mutate, and the responses of issue 15's
reports: a signature algorithm cryptography does not know (md2WithRSA)
and a CertID hash it does not know, or knows but our CertIDs do not use.
Those are written by signing a normal response and then rewriting one OID
in its DER (lengths fixed up): the signature no longer verifies, which is
what a planted or broken response looks like anyway.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.fuzz.der_tree import replace_oid

ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2"
MD2_WITH_RSA = "1.2.840.113549.1.1.2"
SHA1 = "1.3.14.3.2.26"
#: a hash OID under a private arc: no library knows it
UNKNOWN_HASH = "1.3.6.1.4.1.55555.2.1"
#: known to cryptography, not a CertID hash staplectl writes
SHA224 = "2.16.840.1.101.3.4.2.4"

_STATUS = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
           "unknown": ocsp.OCSPCertStatus.UNKNOWN}  # fmt: skip


def signed_response(
    pki,
    issued,
    *,
    signer=None,
    algorithm: hashes.HashAlgorithm | None = None,
    cert_status: str = "good",
    next_update: float | None = 86400,
    nonce: bytes | None = None,
    by_name: bool = False,
) -> bytes:
    """A DER OCSPResponse about ``issued`` (a tests.pki Issued), signed by the
    issuer or ``signer`` (whose certificate it then carries); times are
    seconds from now."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    signer = signer or pki.intermediate
    revoked = cert_status == "revoked"
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=issued.cert,
        issuer=pki.intermediate.cert,
        algorithm=algorithm or hashes.SHA1(),
        cert_status=_STATUS[cert_status],
        this_update=now - dt.timedelta(seconds=60),
        next_update=None if next_update is None else now + dt.timedelta(seconds=next_update),
        revocation_time=now - dt.timedelta(hours=1) if revoked else None,
        revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
    )
    encoding = ocsp.OCSPResponderEncoding.NAME if by_name or signer is not pki.intermediate else ocsp.OCSPResponderEncoding.HASH
    builder = builder.responder_id(encoding, signer.cert)
    if signer is not pki.intermediate:
        builder = builder.certificates([signer.cert])
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.sign(signer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def md2_signed(pki, issued) -> bytes:
    """The issuer's response whose signatureAlgorithm says md2WithRSAEncryption."""
    return replace_oid(signed_response(pki, issued), ECDSA_WITH_SHA256, MD2_WITH_RSA)


def certid_hashed_with(pki, issued, hash_oid: str) -> bytes:
    """The issuer's response whose CertID names ``hash_oid`` as its hash."""
    return replace_oid(signed_response(pki, issued), SHA1, hash_oid)


def rsa_delegate(pki):
    """An OCSP-signing delegate with an RSA key, issued by the intermediate
    (the PKI's own are EC): the RSA verification paths, PKCS#1 and PSS."""
    return pki._issue(
        "delegate_rsa", issuer=pki.intermediate, key_type="rsa", nocheck=True,
        eku=x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]),
    )  # fmt: skip


def unsuccessful(status: ocsp.OCSPResponseStatus = ocsp.OCSPResponseStatus.TRY_LATER) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)
