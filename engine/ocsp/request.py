"""Building OCSP requests.

The CertID uses SHA-1 by default: httpd looks staples up by a SHA-1 CertID,
and most responders index on it (RFC 5019 section 2.1.1 requires SHA-1).

The request is written by hand (engine.ocsp.der) rather than with cryptography's
OCSPRequestBuilder: its shape is fixed, and the builder costs twice as
much (warm builds one per certificate; docs/benchmarks.md). Tests check
every byte against the builder's output.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from engine.bounds import CERTID_HASHES
from engine.ocsp import der
from engine.ocsp.certs import Leaf
from engine.ocsp.issuers import by_identity

#: each CertID hash with its AlgorithmIdentifier (OID and NULL parameters, as OpenSSL writes it)
_HASHES: dict[str, bytes] = {
    "sha1": bytes.fromhex("300906052b0e03021a0500"),
    "sha256": bytes.fromhex("300d06096086480165030402010500"),
    "sha384": bytes.fromhex("300d06096086480165030402020500"),
    "sha512": bytes.fromhex("300d06096086480165030402030500"),
}
assert tuple(_HASHES) == CERTID_HASHES  # the names an operator may give (engine.bounds)
_NONCE_OID = bytes.fromhex("06092b0601050507300102")  # id-pkix-ocsp-nonce

NONCE_SIZE = 16  # CA/B Forum and RFC 8954 ask for 1..32 octets


@dataclass(frozen=True)
class CertID:
    """The fields RFC 6960 matches a SingleResponse on."""

    hash_algorithm: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int

    def describe(self) -> str:
        return (
            f"serial {self.serial_number:X}, {self.hash_algorithm} issuer name hash "
            f"{self.issuer_name_hash.hex()}, issuer key hash {self.issuer_key_hash.hex()}"
        )


@dataclass(frozen=True)
class OCSPQuery:
    """A request ready to send, and what its answer must match."""

    der: bytes
    cert_id: CertID
    nonce: bytes | None


def build_request(leaf: Leaf, *, hash_name: str = "sha1", nonce: bool = False) -> OCSPQuery:
    """An OCSPRequest for one certificate, unsigned, with a fresh nonce if asked."""
    try:
        algorithm = _HASHES[hash_name]
    except KeyError:
        raise ValueError(f"unsupported CertID hash {hash_name!r} (use one of {', '.join(_HASHES)})") from None
    cert_id = CertID(
        hash_algorithm=hash_name,
        # the name as the leaf writes its issuer field, which is what OpenSSL hashes
        issuer_name_hash=hashlib.new(hash_name, leaf.issuer_name).digest(),
        issuer_key_hash=key_hash(leaf.issuer, hash_name),
        serial_number=leaf.serial,
    )
    request = der.tlv(
        der.SEQUENCE,  # Request
        der.tlv(
            der.SEQUENCE,  # CertID
            algorithm
            + der.tlv(der.OCTET_STRING, cert_id.issuer_name_hash)
            + der.tlv(der.OCTET_STRING, cert_id.issuer_key_hash)
            + der.integer(cert_id.serial_number),
        ),
    )
    tbs = der.tlv(der.SEQUENCE, request)  # requestList
    nonce_value = None
    if nonce:
        nonce_value = os.urandom(NONCE_SIZE)
        # requestExtensions [2]: one Extension, not critical (so the flag is left out)
        value = der.tlv(der.OCTET_STRING, der.tlv(der.OCTET_STRING, nonce_value))
        tbs += der.tlv(0xA2, der.tlv(der.SEQUENCE, der.tlv(der.SEQUENCE, _NONCE_OID + value)))
    return OCSPQuery(
        der=der.tlv(der.SEQUENCE, der.tlv(der.SEQUENCE, tbs)),  # OCSPRequest { TBSRequest }
        cert_id=cert_id,
        nonce=nonce_value,
    )


@by_identity  # the issuer of every leaf loaded is one shared object (engine.ocsp.issuers.by_identity)
@lru_cache(maxsize=1024)  # the same few issuers sign every leaf
def key_hash(issuer: x509.Certificate, hash_name: str) -> bytes:
    """The hash of the issuer's subjectPublicKey BIT STRING contents (RFC 6960 4.1.1)."""
    return hashlib.new(hash_name, _public_key_bits(issuer)).digest()


def _public_key_bits(cert: x509.Certificate) -> bytes:
    # Read from the certificate's own DER, not through public_key(): a key
    # type cryptography cannot load (SLH-DSA, say) still has a key hash.
    # Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    #   serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ... } ... }
    data = cert.public_bytes(Encoding.DER)
    _, start, end = der.header(data, 0)
    _, start, end = der.header(data, start)
    fields = der.children(data, start, end)
    spki = fields[6] if fields[0][0] == 0xA0 else fields[5]
    # SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT STRING }
    _, bits = der.children(data, spki[2], spki[3])
    return data[bits[2] + 1 : bits[3]]  # after the count of unused bits, always 0 for a key
