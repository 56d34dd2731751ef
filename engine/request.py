"""Building OCSP requests.

The CertID uses SHA-1 by default: httpd looks staples up by a SHA-1 CertID,
and most responders index on it (RFC 5019 section 2.1.1 requires SHA-1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from engine.certs import Leaf

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

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
    try:
        algorithm = _HASHES[hash_name]()
    except KeyError:
        raise ValueError(f"unsupported CertID hash {hash_name!r} (use one of {', '.join(_HASHES)})") from None
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf.cert, leaf.issuer, algorithm)
    nonce_value = None
    if nonce:
        nonce_value = os.urandom(NONCE_SIZE)
        builder = builder.add_extension(x509.OCSPNonce(nonce_value), critical=False)
    request = builder.build()
    cert_id = CertID(
        hash_algorithm=hash_name,
        issuer_name_hash=request.issuer_name_hash,
        issuer_key_hash=request.issuer_key_hash,
        serial_number=request.serial_number,
    )
    return OCSPQuery(
        der=request.public_bytes(serialization.Encoding.DER),
        cert_id=cert_id,
        nonce=nonce_value,
    )
