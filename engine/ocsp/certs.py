"""Leaf certificates and their issuers, as an operator hands them to us.

A leaf comes from a PEM file that may also hold its chain (what servers are
configured with), or from a DER file. Its issuer is found in that chain or
in a file named with ``--issuer``; OCSP needs the issuer's name and key to
build the CertID and to check who signed the response.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID

from engine.errors import CertificateFileError, IssuerNotFoundError, NoResponderURLError
from engine.ocsp.issuers import find_issuer, tbs_names

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
        if cert_sha1(cert) != self.cert_id:
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


def cert_sha1(cert: x509.Certificate) -> str:
    """httpd's cache id of a certificate: the lower-case SHA-1 hex of its DER (a Leaf's cert_id)."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


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
