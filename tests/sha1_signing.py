"""Signing with SHA-1 where cryptography's builders no longer will.

CAs signed OCSP responses and delegated responder certificates with
sha1WithRSAEncryption for years; cryptography refuses to make such
signatures, so the tests make them by hand: build with SHA-256, swap the
algorithm's OID for SHA-1's (the same length, so every DER length stays
right) and sign again. RSA only: an RSA signature is as long as the key
whatever the hash.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SHA256_WITH_RSA = bytes.fromhex("06092a864886f70d01010b")
SHA1_WITH_RSA = bytes.fromhex("06092a864886f70d010105")


def resign_response(der: bytes, tbs: bytes, signature: bytes, key: rsa.RSAPrivateKey) -> bytes:
    """A BasicOCSPResponse's outer signatureAlgorithm made sha1WithRSA, and signed again."""
    assert der.count(SHA256_WITH_RSA) >= 1 and tbs.count(SHA256_WITH_RSA) == 0
    swapped = der.replace(SHA256_WITH_RSA, SHA1_WITH_RSA, 1)
    return swapped.replace(signature, key.sign(tbs, padding.PKCS1v15(), hashes.SHA1()), 1)


def resign_certificate(der: bytes, tbs: bytes, signature: bytes, key: rsa.RSAPrivateKey) -> bytes:
    """A certificate (signed by ``key`` with sha256WithRSA) signed with sha1WithRSA instead:
    the OID in the TBS and outside it, and a new signature over the new TBS."""
    new_tbs = tbs.replace(SHA256_WITH_RSA, SHA1_WITH_RSA, 1)
    swapped = der.replace(tbs, new_tbs, 1).replace(SHA256_WITH_RSA, SHA1_WITH_RSA, 1)
    return swapped.replace(signature, key.sign(new_tbs, padding.PKCS1v15(), hashes.SHA1()), 1)
