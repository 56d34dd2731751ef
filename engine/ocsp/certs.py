"""Leaf certificates and their issuers, as an operator hands them to us.

A leaf comes from a PEM file that may also hold its chain (what servers are
configured with), or from a DER file. Its issuer is found in that chain or
in a file named with ``--issuer``; OCSP needs the issuer's name and key to
build the CertID and to check who signed the response.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from functools import lru_cache, wraps
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID

from engine.ocsp import der
from engine.errors import CertificateFileError, IssuerNotFoundError, NoResponderURLError

_PEM_MARKER = b"-----BEGIN CERTIFICATE-----"


class Leaf:
    """A leaf certificate, its issuer, and what OCSP needs to know of them.

    Kept small: a worker holds 100,000 of them for as long as it runs. A
    parsed certificate with its extensions read costs about 3 KB in
    cryptography's objects; a Leaf keeps the DER (one copy) and the few
    fields the engine reads on every refresh, read once here, and parses
    the certificate again on the rare reads of anything else (``cert``,
    ``subject``: about a microsecond, plus what is read). What several
    leaves share (their issuer, its name, the responder URLs of one CA) is
    one object among them.

    The prefetch service keeps not even the DER (``keep_der=False``, about
    700 bytes of a Leaf's 826): it keeps the subject's text, and ``cert``
    reads the certificate from its file again, only if the file still
    holds that very certificate. Nothing a refresh does reads it.

    Immutable: ``replace`` makes a changed copy.
    """

    __slots__ = ("der", "issuer", "_path", "url_override", "cert_id", "serial", "not_after", "must_staple",
                 "aia_urls", "issuer_name", "_subject")  # fmt: skip

    #: None for a leaf loaded with keep_der=False
    der: bytes | None
    issuer: x509.Certificate
    #: the responder URL to use instead of the AIA one (SSLStaplingForceURL)
    url_override: str | None
    #: lower-case SHA-1 hex of the DER: httpd's cache id for this staple
    cert_id: str
    serial: int
    #: notAfter, Unix seconds
    not_after: float
    must_staple: bool
    #: the OCSP URLs of its Authority Information Access extension
    aia_urls: tuple[str, ...]
    #: the leaf's issuer field, as its DER writes it (what a CertID hashes)
    issuer_name: bytes

    def __init__(
        self, cert: x509.Certificate, issuer: x509.Certificate, path: Path | str | None = None,
        url_override: str | None = None, *, der: bytes | None = None, issuer_name: bytes | None = None,
        keep_der: bool = True,
    ) -> None:  # fmt: skip
        """``der`` and ``issuer_name``: the certificate's, when the caller read them already.
        ``keep_der=False``: keep the subject's text instead of the DER (see above)."""
        if not keep_der and path is None:
            raise ValueError("a Leaf without its DER needs the file it came from")
        data = der if der is not None else cert.public_bytes(serialization.Encoding.DER)
        if issuer_name is None:
            issuer_name = tbs_names(data)[0]
        fields = {
            "der": data if keep_der else None, "_subject": None if keep_der else cert.subject.rfc4514_string(),
            "issuer": issuer, "_path": None if path is None else str(path), "url_override": url_override,
            "cert_id": hashlib.sha1(data).hexdigest(), "serial": cert.serial_number,
            "not_after": cert.not_valid_after_utc.timestamp(), "must_staple": is_must_staple(cert),
            "aia_urls": _shared(tuple(ocsp_urls(cert))), "issuer_name": _shared(issuer_name),
        }  # fmt: skip
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a Leaf does not change (set {name}): make another with replace()")

    @property
    def cert(self) -> x509.Certificate:
        """The certificate, parsed again from its DER (a new object each time),
        or read again from its file when the DER was not kept."""
        if self.der is None:
            return self._read_again()
        return x509.load_der_x509_certificate(self.der)

    def _read_again(self) -> x509.Certificate:
        path = Path(self._path)  # type: ignore[arg-type]  # keep_der=False only with a path
        cert = read_certificates(path)[0]
        if hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest() != self.cert_id:
            raise CertificateFileError(f"{path}: holds another certificate than the one loaded from it; reload")
        return cert

    @property
    def path(self) -> Path | None:
        """The file the leaf came from (for display and metadata), if any."""
        return None if self._path is None else Path(self._path)

    @property
    def path_text(self) -> str | None:
        """``path`` as the string it was given as (no Path made: 100,000 of them add up)."""
        return self._path

    @property
    def serial_hex(self) -> str:
        return serial_text(self.serial)

    @property
    def subject(self) -> str:
        if self._subject is not None:
            return self._subject
        return self.cert.subject.rfc4514_string()

    @property
    def name(self) -> str:
        """What an operator calls this certificate: its file, else its subject."""
        return self._path if self._path is not None else self.subject

    def replace(self, **changes: Any) -> Leaf:
        """A copy with ``issuer``, ``path`` or ``url_override`` changed."""
        fields = {"issuer": self.issuer, "path": self._path, "url_override": self.url_override, **changes}
        return Leaf(self.cert, **fields, keep_der=self.der is not None)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Leaf):
            return NotImplemented
        # the cert_id is the DER's SHA-1: what httpd's cache tells certificates apart by
        return (self.cert_id, self._path, self.url_override) == (other.cert_id, other._path, other.url_override) and (
            self.issuer == other.issuer
        )

    def __hash__(self) -> int:
        return hash((self.cert_id, self._path, self.url_override))

    def __repr__(self) -> str:
        return f"Leaf({self.name!r}, serial {self.serial_hex}, cert_id {self.cert_id})"

    @property
    def has_responder(self) -> bool:
        """Is there anyone to ask: an override URL, or an OCSP URL in the AIA?

        Without one the certificate has no OCSP (several CAs, Let's Encrypt
        among them, dropped OCSP in 2025): nothing to fetch, which is not a
        failure unless it is must-staple.
        """
        return bool(self.url_override or self.aia_urls)

    def responder_url(self) -> str:
        """The URL to ask: the override, else the first AIA OCSP URL."""
        if self.url_override:
            return self.url_override
        urls = self.aia_urls
        if not urls:
            raise NoResponderURLError(
                f"{self.name}: the certificate names no OCSP responder "
                "(no OCSP URL in its Authority Information Access extension); "
                "give one with --url"
            )
        return urls[0]


#: values many leaves hold alike (one CA's issuer name, its responder URLs):
#: one object for all of them. Bounded by the CAs and URLs configured.
_SHARED_VALUES: dict[Any, Any] = {}


def _shared(value: Any) -> Any:
    if len(_SHARED_VALUES) > 10_000:
        _SHARED_VALUES.clear()  # a pathological set of certificates: sharing is only a saving
    return _SHARED_VALUES.setdefault(value, value)


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


def serial_text(serial: int) -> str:
    """A serial as OpenSSL prints it: upper-case hex, whole bytes (09FAC1,
    not 9FAC1), so that it reads the same as ``openssl x509 -serial``."""
    text = format(serial, "X")
    return text if len(text) % 2 == 0 else "0" + text


def read_certificates(path: Path | str) -> list[x509.Certificate]:
    """Every certificate in a PEM file (in order), or the one in a DER file."""
    try:
        data = _read(path)
    except FileNotFoundError:
        raise CertificateFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CertificateFileError(f"{path}: is a directory, not a certificate file") from None
    except OSError as exc:
        raise CertificateFileError(f"{path}: cannot read: {exc.strerror}") from None
    if _PEM_MARKER in data:
        try:
            return x509.load_pem_x509_certificates(data)
        except (ValueError, x509.InvalidVersion) as exc:  # version 10: not a ValueError
            raise CertificateFileError(f"{path}: bad PEM certificate: {exc}") from None
    try:
        return [x509.load_der_x509_certificate(data)]
    except (ValueError, x509.InvalidVersion):
        raise CertificateFileError(
            f"{path}: not a certificate (neither PEM with a CERTIFICATE block nor DER)"
        ) from None


def _read(path: Path | str) -> bytes:
    """A file's bytes, with os.open and os.read: open() built a buffered
    file object and asked whether it is a terminal, 11 µs a file against
    5 (pathlib's read_bytes cost twice as much again)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, _READ_SIZE):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


#: more than a certificate file with its chain holds: one read, and one to see the end
_READ_SIZE = 1 << 16


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


#: what cryptography raises when a certificate's field that it parses
#: lazily, on first read, does not parse: a Name with an empty RDN, an
#: extension that does not parse or comes twice, a TLS feature it does not
#: know (a KeyError from its table of them, or a TypeError from its
#: TLSFeature constructor)
_UNREADABLE = (
    ValueError, TypeError, KeyError, UnsupportedAlgorithm, x509.DuplicateExtension, x509.UnsupportedGeneralNameType,
)


def load_leaf(
    path: Path | str,
    *,
    issuer_path: Path | None = None,
    url_override: str | None = None,
    issuers: dict[x509.Certificate, x509.Certificate] | None = None,
    verified: Mapping[str, bytes] = {},
    keep_der: bool = True,
) -> Leaf:
    """Load a leaf and find its issuer: in ``issuer_path`` if given, else in the leaf's file.

    The issuer is the candidate whose key verifies the leaf's signature
    (find_issuer); an ``issuer_path`` the operator names is the only place
    looked in. ``issuers``, when given, makes issuers equal by DER one
    shared object (the first seen). ``verified``: cert_id -> fingerprint
    of the issuer this host verified the leaf with before (find_issuer).
    ``keep_der=False``: a Leaf without its DER (see Leaf).

    What the engine reads of a leaf (its subject, must-staple, responder
    URLs) is read here, so that a certificate whose fields do not parse is
    its file's CertificateFileError now, not an exception in the middle of
    a warm (the Leaf keeps what it reads; its subject is parsed here and
    formatted when shown).
    """
    try:
        leaf = _load_leaf(path, issuer_path, url_override, issuers, verified, keep_der)
    except _UNREADABLE as exc:
        raise CertificateFileError(
            f"{path}: a certificate in it cannot be read ({type(exc).__name__}: {exc})"
        ) from None
    return leaf


def _load_leaf(
    path: Path | str,
    issuer_path: Path | None,
    url_override: str | None,
    issuers: dict[x509.Certificate, x509.Certificate] | None,
    verified: Mapping[str, bytes],
    keep_der: bool,
) -> Leaf:
    certs = read_certificates(path)
    leaf = certs[0]
    leaf.subject  # noqa: B018  (parsed, to fail here if it does not)
    candidates = read_certificates(issuer_path) if issuer_path else certs[1:]
    if issuers is not None:
        # shared before they are looked at: the caches below find them by identity (by_identity)
        candidates = [issuers.setdefault(candidate, candidate) for candidate in candidates]
    data = leaf.public_bytes(serialization.Encoding.DER)
    name = tbs_names(data)[0]
    known = verified.get(hashlib.sha1(data).hexdigest()) if verified else None
    issuer = find_issuer(leaf, candidates, known, name, data)
    if issuer is not None:
        return Leaf(leaf, issuer, path, url_override, der=data, issuer_name=name, keep_der=keep_der)
    where = f"in {issuer_path}" if issuer_path else f"in {path} (it holds no chain after the leaf)"
    if not issuer_path and len(certs) > 1:
        where = f"among the {len(certs) - 1} chain certificate(s) in {path}"
    raise IssuerNotFoundError(
        f"{path}: issuer of {leaf.subject.rfc4514_string()} not found {where}; "
        "give the issuer certificate with --issuer"
    )


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    try:
        aia = cert.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_INFORMATION_ACCESS)
    except x509.ExtensionNotFound:
        return []
    return [
        desc.access_location.value
        for desc in aia.value
        if desc.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(desc.access_location, x509.UniformResourceIdentifier)
    ]


def is_must_staple(cert: x509.Certificate) -> bool:
    """RFC 7633: a TLS Feature extension asking for status_request."""
    try:
        feature = cert.extensions.get_extension_for_oid(ExtensionOID.TLS_FEATURE)
    except x509.ExtensionNotFound:
        return False
    return x509.TLSFeatureType.status_request in feature.value
