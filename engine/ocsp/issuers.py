"""A certificate's issuer: found among the candidates by its name and its
signature, and what is read of issuers again and again, kept.

The issuer of a leaf is the candidate named as its issuer whose key
verifies the leaf's signature (find_issuer). One CA's issuer comes with
every leaf it signed and signs every response, so its key, names and
fingerprint are computed once (lru_cache) and found by the object itself
first (by_identity). The names a CertID hashes and find_issuer compares
are read off the DER (tbs_names), not built as Python Names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache, wraps
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from engine.ocsp import der


def tbs_names(data: bytes) -> tuple[bytes, bytes]:
    """A certificate's issuer and subject Name, as its DER writes them.

    cryptography builds a Name in Python to give its bytes (tens of
    microseconds); these are read off the DER by hand (engine.ocsp.der),
    reading no further than the subject.
    Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version
    OPTIONAL, serialNumber, signature, issuer, validity, subject, ... } ... }
    """
    _, start, _ = der.header(data, 0)
    _, offset, _ = der.header(data, start)
    tag, _, after = der.header(data, offset)
    if tag == 0xA0:  # the version
        offset = after
    offset = der.header(data, der.header(data, offset)[2])[2]  # past serialNumber and signature
    issuer_at, issuer_end = offset, der.header(data, offset)[2]
    subject_at = der.header(data, issuer_end)[2]  # past validity
    return data[issuer_at:issuer_end], data[subject_at : der.header(data, subject_at)[2]]


def signed_part(data: bytes) -> bytes:
    """A certificate's tbsCertificate, as its DER writes it: what its signature signs.

    Sliced from the DER (1 µs), where tbs_certificate_bytes writes it out
    again (4 µs). Certificate ::= SEQUENCE { tbsCertificate, ... }
    """
    _, start, _ = der.header(data, 0)
    return data[start : der.header(data, start)[2]]


def issued_by(
    cert: x509.Certificate, candidate: x509.Certificate, issuer_name: bytes | None = None, *, signature: bool = True,
    tbs: bytes | None = None,
) -> bool:
    """True when ``candidate``'s name is ``cert``'s issuer and its key signed ``cert``.

    The signature is checked with the key itself, not with cryptography's
    verify_directly_issued_by, which refuses SHA-1 signatures outright:
    CAs signed delegated responder certificates with sha1WithRSA for years,
    and OpenSSL accepts them, so refusing them would mean no staple where
    httpd staples one. ``issuer_name``: ``cert``'s, when the caller read it already.
    ``signature=False`` compares the names alone (bytes this host verified before).
    ``tbs``: ``cert``'s tbsCertificate as its DER writes it (signed_part), when the caller has it.
    """
    if issuer_name is None:
        issuer_name = tbs_names(cert.public_bytes(serialization.Encoding.DER))[0]
    if issuer_name != subject_der(candidate):
        return False
    if not signature:
        return True
    key = _public_key(candidate)
    if key is None:
        return False  # a key type cryptography cannot load (SLH-DSA today) verifies nothing
    # tbs_certificate_bytes writes the TBS out again: 4 µs a call
    return signed_by(cert.signature, tbs if tbs is not None else cert.tbs_certificate_bytes, cert, key)


def by_identity(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` of a certificate (and of other hashable arguments),
    looked up by the certificate object before its lru_cache is asked.

    lru_cache hashes a certificate by its whole DER at every call (1.3 µs)
    and compares it with the one it keeps; the issuer of every leaf loaded
    is one shared object (engine.ocsp.certfiles.Loading), looked up
    several times a certificate on a first start. A hit holds the very
    object: an id is not reused while it is held.
    """
    seen: dict[tuple[Any, ...], tuple[x509.Certificate, Any]] = {}

    @wraps(function)
    def cached(cert: x509.Certificate, *args: Any) -> Any:
        key = (id(cert), *args)
        hit = seen.get(key)
        if hit is not None and hit[0] is cert:
            return hit[1]
        value = function(cert, *args)
        if len(seen) >= _IDENTITY_SIZE:
            seen.clear()  # certificates that come once each (a delegated responder's, per response)
        seen[key] = (cert, value)
        return value

    return cached


_IDENTITY_SIZE = 256


@by_identity
@lru_cache(maxsize=256)  # the same few issuers come with every leaf
def _public_key(cert: x509.Certificate) -> Any:
    """The certificate's public key (loaded once per issuer, not once per leaf); None when unloadable."""
    try:
        return cert.public_key()
    except (UnsupportedAlgorithm, ValueError):
        return None


def signed_by(signature: bytes, data: bytes, signed: Any, key: Any) -> bool:
    """Does ``key`` verify ``signature`` over ``data``, with the algorithm ``signed``
    (a certificate) names?"""
    try:
        # the parameters are RSA's padding; for an EC signature cryptography
        # builds an ECDSA object to hand them out (2.8 µs), which verify_with
        # has no use for
        rsa_padding = signed.signature_algorithm_parameters if isinstance(key, rsa.RSAPublicKey) else None
        verify_with(key, signature, data, signed.signature_hash_algorithm, rsa_padding)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def verify_with(key: Any, signature: bytes, data: bytes, hash_algorithm: Any, rsa_padding: Any) -> None:
    """Verify a signature with a public key of any type X.509 and OCSP use.

    Raises InvalidSignature (it does not verify), UnsupportedAlgorithm,
    TypeError (a key type nobody signs with) or ValueError.
    """
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, rsa_padding, hash_algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, _ecdsa(hash_algorithm))
    elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        key.verify(signature, data)
    elif isinstance(key, dsa.DSAPublicKey):
        key.verify(signature, data, hash_algorithm)
    else:
        raise TypeError(f"a key type we cannot verify ({type(key).__name__})")


def _ecdsa(hash_algorithm: Any) -> ec.ECDSA:
    """ec.ECDSA(hash_algorithm), one per hash: its constructor imports the
    backend at every call (1.2 µs, two signatures a certificate)."""
    # getattr: a signature algorithm without a hash (Ed25519's OID over an
    # EC key) fails in verify, as ever, and not here
    key = (type(hash_algorithm), getattr(hash_algorithm, "digest_size", None))
    algorithm = _ECDSA.get(key)
    if algorithm is None:
        algorithm = _ECDSA[key] = ec.ECDSA(hash_algorithm)
    return algorithm


#: (hash type, digest size) -> its ECDSA: the few hashes X.509 and OCSP sign with
_ECDSA: dict[tuple[type, int | None], ec.ECDSA] = {}


#: what a certificate with unparsable or duplicate extensions raises
_EXTENSION_ERRORS = (ValueError, x509.ExtensionNotFound, x509.DuplicateExtension)


@by_identity
@lru_cache(maxsize=1024)  # the same few issuers come with every leaf and sign every response
def subject_der(cert: x509.Certificate) -> bytes:
    """The certificate's subject name as its DER writes it."""
    return tbs_names(cert.public_bytes(serialization.Encoding.DER))[1]


@by_identity
@lru_cache(maxsize=256)  # the same few issuers come with every leaf
def _issuer_ids(cert: x509.Certificate) -> tuple[bytes | None, bytes]:
    """A would-be issuer's subjectKeyIdentifier (None without one) and subject DER."""
    try:
        key_id = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.key_identifier
    except _EXTENSION_ERRORS:
        key_id = None
    return key_id, subject_der(cert)


@by_identity
@lru_cache(maxsize=256)  # the same few issuers come with every leaf
def fingerprint(cert: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's DER."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


def find_issuer(
    cert: x509.Certificate, candidates: list[x509.Certificate], verified: bytes | None = None,
    issuer_name: bytes | None = None, der: bytes | None = None,
) -> x509.Certificate | None:  # fmt: skip
    """The candidate that issued ``cert``: its key verifies ``cert``'s signature.

    A name and key identifier anyone can copy: a forged "issuer" with the
    real one's name and authorityKeyIdentifier but a key of its own would
    otherwise vouch for responses signed with that key. So a candidate is
    chosen only once its key verified the certificate. Those whose subject
    key identifier matches the authorityKeyIdentifier (RFC 5280 4.2.1.1)
    are tried first, so that in a chain the right one is usually the only
    one verified; a certificate without the extension (CAcert's) is found
    by name and signature alone.

    ``verified``: the fingerprint of the issuer whose key this host
    verified ``cert`` with before (the prefetch worker's state, at a
    restart): that candidate, named as the issuer, is taken without
    verifying the same signature again. ``issuer_name``, ``der``: ``cert``'s
    issuer field and DER, when the caller read them already.
    """
    try:
        key_id = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except _EXTENSION_ERRORS:
        key_id = None
    name = issuer_name if issuer_name is not None else tbs_names(cert.public_bytes(serialization.Encoding.DER))[0]
    likely = [c for c in candidates if key_id and _issuer_ids(c) == (key_id, name)]
    ordered = likely + [c for c in candidates if all(c is not other for other in likely)]
    if verified is not None:
        for candidate in ordered:
            if fingerprint(candidate) == verified and issued_by(cert, candidate, name, signature=False):
                return candidate
    tbs = signed_part(der) if der is not None else None
    for candidate in ordered:
        if issued_by(cert, candidate, name, tbs=tbs):
            return candidate
    return None
