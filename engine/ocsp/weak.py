"""Weak algorithms in a response that validates: accepted, flagged, and
refused only when asked (``responder.refuse_weak``).

OpenSSL's ``ocsp -verify`` accepts SHA-1 signatures and 1024-bit RSA keys,
and so do the clients a server staples for; CAs signed responses and
delegated responder certificates with sha1WithRSA for years. Refusing
them by default would leave such a certificate without a staple where
httpd would staple one. So they are accepted and said: ``inspect``, the
dashboard and every ``--json`` carry the list, and an operator who would
rather have no staple than a weak one sets ``refuse_weak``.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from cryptography.x509 import ocsp

#: smaller RSA and DSA keys are weak (NIST SP 800-131A, CA/B Forum)
MIN_KEY_BITS = 2048
#: hashes whose collisions are practical
WEAK_HASHES = frozenset({"sha1", "md5", "md2", "md4"})


def weaknesses(
    response: ocsp.OCSPResponse, signer: x509.Certificate, delegate: x509.Certificate | None
) -> tuple[str, ...]:
    """What is weak about a response whose signature verified with ``signer``'s
    key (``delegate``: the delegated responder certificate, when one signed)."""
    found = []
    algorithm = _hash_name(response)
    if algorithm in WEAK_HASHES:
        found.append(f"response signed with {algorithm.upper()}")
    bits = _weak_key_bits(signer.public_key())
    if bits is not None:
        found.append(f"responder key {bits} bits")
    if delegate is not None and _hash_name(delegate) in WEAK_HASHES:
        found.append(f"delegated responder certificate signed with {_hash_name(delegate).upper()}")
    return tuple(found)


def _hash_name(signed: Any) -> str | None:
    try:
        algorithm = signed.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None  # it verified, so cryptography knew it; a guard, not a path
    return algorithm.name if algorithm is not None else None  # Ed25519/Ed448: none to name


def _weak_key_bits(key: Any) -> int | None:
    if isinstance(key, (rsa.RSAPublicKey, dsa.DSAPublicKey)) and key.key_size < MIN_KEY_BITS:
        return key.key_size
    return None
