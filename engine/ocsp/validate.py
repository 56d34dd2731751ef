"""Validating an OCSP response before anything stores, serves or exports it.

RFC 6960 section 3.2 and 4.2.2.2, in the order an operator would want to
hear about failures: is it an answer at all, is it about our certificate,
did someone with authority sign it, is it current. Each failed check raises
its own error class with a message that names the check and the values.

cryptography parses OCSP responses but does not verify their signatures:
that is done here, with the issuer's key or a delegated responder's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID

from engine.bounds import DEFAULT_MAX_AGE, DEFAULT_SKEW
from engine.ocsp import der
from engine.ocsp.certs import Leaf
from engine.ocsp.issuers import issued_by, subject_der, verify_with
from engine.clock import iso
from engine.errors import (
    BadValidityError,
    BeyondCertificateError,
    CertIDMismatchError,
    ExpiredResponseError,
    NonceMismatchError,
    NotYetValidError,
    ResponderCertificateError,
    ResponseStatusError,
    SignatureError,
    TooOldError,
    UnauthorizedResponderError,
    WeakAlgorithmError,
)
from engine.ocsp.request import CertID, key_hash
from engine.ocsp.staple import RESPONSE_STATUS_NAMES, Staple, certid_hash_name, parse_response, reading
from engine.ocsp.weak import weaknesses



@dataclass(frozen=True)
class ValidationOptions:
    skew: float = DEFAULT_SKEW
    #: how old a response without nextUpdate may be, in seconds
    max_age: float = DEFAULT_MAX_AGE
    #: refuse a nextUpdate after the certificate's own notAfter
    check_not_after: bool = False
    #: refuse weak algorithms (engine.ocsp.weak) instead of flagging them
    refuse_weak: bool = False


def validate(
    der: bytes,
    leaf: Leaf,
    now: float,
    *,
    cert_id: CertID | None = None,
    nonce: bytes | None = None,
    options: ValidationOptions = ValidationOptions(),
    source: str = "response",
    check_time: bool = True,
    verified_before: bool = False,
) -> Staple:
    """_checked, with every field of the response read inside staple.reading:
    whatever the bytes, a Staple or a ValidationError, nothing else.

    ``verified_before``: these very bytes passed validation on this host
    before (engine.refresh.reader knows by their digest): their signatures
    are not verified again; everything else is checked as always.
    """
    with reading(source):
        return _checked(
            der, leaf, now, cert_id=cert_id, nonce=nonce, options=options, source=source, check_time=check_time,
            verify=not verified_before,
        )  # fmt: skip


def _checked(
    der: bytes,
    leaf: Leaf,
    now: float,
    *,
    cert_id: CertID | None = None,
    nonce: bytes | None = None,
    options: ValidationOptions = ValidationOptions(),
    source: str = "response",
    check_time: bool = True,
    verify: bool = True,
) -> Staple:
    """Check everything, or raise the ValidationError of the first failed check.

    ``cert_id`` is the CertID we asked about; when re-validating a cached
    staple it is None and the leaf is matched with whatever hash the
    response used. ``nonce`` is the nonce we sent, if any.
    """
    response = parse_response(der, source)
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        name = RESPONSE_STATUS_NAMES.get(response.response_status, str(response.response_status))
        raise ResponseStatusError(
            f"{source}: responseStatus is {name} ({response.response_status.value}), not successful",
            name,
        )
    single = _matching_single(response, leaf, cert_id, source)
    signer, delegate = _check_signer(response, leaf, now, options, source, verify)
    weak = weaknesses(response, signer, delegate)
    if weak and options.refuse_weak:
        raise WeakAlgorithmError(f"{source}: {'; '.join(weak)} (refused: responder.refuse_weak is set)")
    staple = Staple.from_single(der, response, single, weak)
    if staple.next_update is not None and staple.next_update < staple.this_update:
        raise BadValidityError(
            f"{source}: nextUpdate {iso(staple.next_update)} is before thisUpdate {iso(staple.this_update)}"
        )
    if check_time:
        check_times(staple, now, options, source)
    if nonce is not None:
        _check_nonce(response, nonce, source)
    if check_time and options.check_not_after and staple.next_update and staple.next_update > leaf.not_after:
        raise BeyondCertificateError(
            f"{source}: nextUpdate {iso(staple.next_update)} is after the certificate's "
            f"notAfter {iso(leaf.not_after)}"
        )
    return staple


def check_times(staple: Staple, now: float, options: ValidationOptions, source: str) -> None:
    if staple.this_update > now + options.skew:
        raise NotYetValidError(
            f"{source}: thisUpdate {iso(staple.this_update)} is in the future "
            f"(now {iso(now)}, allowed skew {options.skew:g} s)"
        )
    if staple.next_update is not None:
        if staple.next_update < now - options.skew:
            raise ExpiredResponseError(
                f"{source}: nextUpdate {iso(staple.next_update)} has passed "
                f"(now {iso(now)}, allowed skew {options.skew:g} s)"
            )
    elif now - staple.this_update > options.max_age:
        raise TooOldError(
            f"{source}: no nextUpdate and thisUpdate {iso(staple.this_update)} is "
            f"{now - staple.this_update:.0f} s old (maximum age {options.max_age:g} s)"
        )


def _expected(leaf: Leaf, hash_name: str) -> CertID | None:
    """The certificate's CertID under ``hash_name``; None for a hash hashlib lacks."""
    try:
        return CertID(hash_name, _name_hash(leaf.issuer_name, hash_name), key_hash(leaf.issuer, hash_name), leaf.serial)
    except ValueError:
        return None


@lru_cache(maxsize=1024)  # one issuer name for all of a CA's leaves
def _name_hash(name: bytes, hash_name: str) -> bytes:
    return hashlib.new(hash_name, name).digest()


def _single_id(single: ocsp.OCSPSingleResponse) -> CertID | None:
    """The SingleResponse's CertID; None when cryptography does not know its hash."""
    try:
        hash_name = single.hash_algorithm.name
    except UnsupportedAlgorithm:
        return None
    return CertID(hash_name, single.issuer_name_hash, single.issuer_key_hash, single.serial_number)


def _matching_single(
    response: ocsp.OCSPResponse, leaf: Leaf, cert_id: CertID | None, source: str
) -> ocsp.OCSPSingleResponse:
    """The SingleResponse about our certificate (RFC 6960 4.2.2.3: hash, issuer name and key hash, serial).

    The leaf's CertID is computed under whichever hash each answer uses.
    ``cert_id`` is what we asked about: an answer under its hash, or under
    SHA-1, is taken. httpd and HAProxy look a staple up by the SHA-1
    CertID, so an answer under SHA-1 serves whatever was asked, while one
    under another hash than asked (SHA-256 to a SHA-1 request) is one they
    would find no status in: it must not replace a staple they can serve.
    Without ``cert_id`` (a cached staple) any hash is taken.
    """
    seen, unservable = [], []
    for single in response.responses:
        got = _single_id(single)
        if got is None:
            seen.append(f"serial {single.serial_number:X}, {certid_hash_name(single)}")
            continue
        asked_in_it = cert_id is not None and cert_id.hash_algorithm == got.hash_algorithm
        if got == (cert_id if asked_in_it else _expected(leaf, got.hash_algorithm)):
            if _servable(got, cert_id):
                return single
            unservable.append(got.hash_algorithm)  # ours, but a server could not use it: another may follow
            continue
        seen.append(got.describe())
    if unservable and cert_id is not None:
        raise CertIDMismatchError(
            f"{source}: answers for our certificate under {' and '.join(unservable)} only, where "
            f"{cert_id.hash_algorithm} was asked: httpd and HAProxy look a staple up by its SHA-1 CertID and "
            "would find no status in it"
        )
    wanted = cert_id or _expected(leaf, "sha1")
    asked = wanted.describe() if wanted else f"serial {leaf.serial:X}"
    found = "; ".join(seen) or "no single responses"
    raise CertIDMismatchError(f"{source}: answers for a different certificate: asked about {asked}, got {found}")


def _servable(got: CertID, asked: CertID | None) -> bool:
    return asked is None or got.hash_algorithm in (asked.hash_algorithm, "sha1")


def _written_id(response: ocsp.OCSPResponse, tbs: bytes | None = None) -> tuple[int, bytes] | None:
    """The ResponderID as written: (0xA1, the Name's DER) or (0xA2, the
    KeyHash OCTET STRING), read from ResponseData; None if it cannot be read.

    cryptography gives the name only as a Name object, built in Python for
    each response (and the candidate's subject another): bytes compare for
    nothing. ``tbs``: the response's tbs_response_bytes, when the caller read them.
    """
    data = tbs if tbs is not None else response.tbs_response_bytes
    try:
        _, offset, _ = der.header(data, 0)  # ResponseData ::= SEQUENCE {
        tag, start, end = der.header(data, offset)
        if tag == 0xA0:  # version [0] EXPLICIT, present only when not v1
            tag, start, end = der.header(data, end)
    except ValueError:
        return None
    return (tag, data[start:end]) if tag in (0xA1, 0xA2) else None


def _names(response: ocsp.OCSPResponse, written: tuple[int, bytes] | None, cert: x509.Certificate) -> bool:
    """True when the response's ResponderID (``written``: _written_id) names ``cert`` (RFC 6960 4.2.2.3)."""
    if written is not None and written[0] == 0xA1 and written[1] == subject_der(cert):
        return True
    # A name written differently (another string type, say) may still be
    # the same name: cryptography's comparison decides.
    if response.responder_name is not None:
        return response.responder_name == cert.subject
    # byKey: SHA-1 of the subjectPublicKey BIT STRING, as the CertID's issuerKeyHash
    return response.responder_key_hash == key_hash(cert, "sha1")


def _responder_id(response: ocsp.OCSPResponse) -> str:
    if response.responder_name is not None:
        return f"name {response.responder_name.rfc4514_string()}"
    return f"key hash {response.responder_key_hash.hex() if response.responder_key_hash else '?'}"


def _check_signer(
    response: ocsp.OCSPResponse, leaf: Leaf, now: float, options: ValidationOptions, source: str, verify: bool = True
) -> tuple[x509.Certificate, x509.Certificate | None]:
    """Who signed it, with authority: (the signer, the delegated responder
    certificate or None when the issuer itself signed); or raise.
    ``verify=False``: every check but the two signatures (validate's verified_before)."""
    tbs = response.tbs_response_bytes  # written out again at every read (3 µs): once here
    written = _written_id(response, tbs)
    if _names(response, written, leaf.issuer):
        if verify:
            _verify_signature(response, leaf.issuer, source, "the issuer", tbs)
        return leaf.issuer, None
    delegate = next((c for c in response.certificates if _names(response, written, c)), None)
    if delegate is None:
        raise UnauthorizedResponderError(
            f"{source}: signed by responder {_responder_id(response)}, which is not the issuer "
            f"{leaf.issuer.subject.rfc4514_string()} and whose certificate is not in the response"
        )
    who = f"delegated responder {delegate.subject.rfc4514_string()}"
    if not issued_by(delegate, leaf.issuer, signature=verify):
        raise UnauthorizedResponderError(
            f"{source}: {who} is not issued by the certificate's issuer "
            f"{leaf.issuer.subject.rfc4514_string()}"
        )
    try:
        eku = delegate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = []
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        raise ResponderCertificateError(f"{source}: {who} lacks the OCSPSigning extended key usage")
    not_before = delegate.not_valid_before_utc.timestamp()
    not_after = delegate.not_valid_after_utc.timestamp()
    if not (not_before - options.skew <= now <= not_after + options.skew):
        raise ResponderCertificateError(
            f"{source}: {who} is not valid now ({iso(now)}): valid from {iso(not_before)} "
            f"to {iso(not_after)}"
        )
    if verify:
        _verify_signature(response, delegate, source, who, tbs)
    return delegate, delegate


def _verify_signature(
    response: ocsp.OCSPResponse, signer: x509.Certificate, source: str, who: str, tbs: bytes | None = None
) -> None:
    """``tbs``: the response's tbs_response_bytes, when the caller read them."""
    try:
        algorithm = response.signature_hash_algorithm
    except UnsupportedAlgorithm:
        # md2WithRSA, a post-quantum scheme cryptography lacks, a made-up OID
        raise SignatureError(
            f"{source}: signed with {response.signature_algorithm_oid.dotted_string}, "
            "a signature algorithm we cannot verify"
        ) from None
    # An OCSP response does not hand out its RSA padding as a certificate does
    if response.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
        pad: padding.AsymmetricPadding = padding.PSS(
            mgf=padding.MGF1(algorithm or hashes.SHA256()), salt_length=padding.PSS.AUTO
        )
    else:
        pad = padding.PKCS1v15()
    try:
        data = tbs if tbs is not None else response.tbs_response_bytes
        verify_with(signer.public_key(), response.signature, data, algorithm, pad)
    except InvalidSignature:
        raise SignatureError(f"{source}: signature does not verify with the key of {who}") from None
    except (UnsupportedAlgorithm, TypeError, ValueError) as exc:
        raise SignatureError(f"{source}: cannot verify the signature of {who}: {exc}") from None


def _check_nonce(response: ocsp.OCSPResponse, sent: bytes, source: str) -> None:
    try:
        got = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        raise NonceMismatchError(f"{source}: we sent a nonce and the response carries none") from None
    if got != sent:
        raise NonceMismatchError(
            f"{source}: nonce {got.hex()} does not match the one we sent ({sent.hex()})"
        )
