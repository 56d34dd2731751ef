"""A parsed OCSP response: what it says, in the terms an operator reads.

``good`` is the only status worth stapling. ``revoked`` and ``unknown`` are
valid answers (signed, current) but not good ones: the engine keeps them
apart from errors, and a front end reports them with their own exit code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509 import ocsp

from engine.errors import MalformedResponseError
from engine.ocsp import written

GOOD = "good"
REVOKED = "revoked"
UNKNOWN = "unknown"

_STATUS = {
    ocsp.OCSPCertStatus.GOOD: GOOD,
    ocsp.OCSPCertStatus.REVOKED: REVOKED,
    ocsp.OCSPCertStatus.UNKNOWN: UNKNOWN,
}

RESPONSE_STATUS_NAMES = {
    ocsp.OCSPResponseStatus.SUCCESSFUL: "successful",
    ocsp.OCSPResponseStatus.MALFORMED_REQUEST: "malformed_request",
    ocsp.OCSPResponseStatus.INTERNAL_ERROR: "internal_error",
    ocsp.OCSPResponseStatus.TRY_LATER: "try_later",
    ocsp.OCSPResponseStatus.SIG_REQUIRED: "sig_required",
    ocsp.OCSPResponseStatus.UNAUTHORIZED: "unauthorized",
}


def parse_response(der: bytes, source: str = "response") -> ocsp.OCSPResponse:
    """The response, parsed; MalformedResponseError when it is not one.

    cryptography parses strictly. What it refuses but OpenSSL reads (an
    explicit default version, fractional seconds: engine.ocsp.written) is
    parsed from a canonical copy instead, and comes back as a ``Reencoded``
    whose signed bytes are still the responder's. A response cryptography
    takes costs nothing more: the copy is written only after a refusal.
    """
    try:
        return ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        refused = exc
    canonical = written.canonical(der)
    if canonical is None:
        raise MalformedResponseError(f"{source}: not a DER OCSPResponse ({refused})") from None
    try:
        response = ocsp.load_der_ocsp_response(canonical)
        return Reencoded(response, written.read(der).tbs)  # type: ignore[return-value]
    except ValueError as exc:
        raise MalformedResponseError(
            f"{source}: not a DER OCSPResponse ({refused}; and once written as DER: {exc})"
        ) from None


class Reencoded:
    """A response cryptography parsed from a canonical copy of the DER a
    responder sent: every field is the copy's, but ``tbs_response_bytes``
    is tbsResponseData as the responder wrote it. The signature covers
    those bytes, so the copy can only ever verify as the original does.
    The original DER, not the copy, is what a Staple keeps.
    """

    def __init__(self, response: ocsp.OCSPResponse, tbs: bytes) -> None:
        self._response = response
        self.tbs_response_bytes = tbs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)


@dataclass(frozen=True, slots=True)  # slots: a worker holds one per certificate
class Staple:
    """A validated (or, for inspect, merely decoded) single OCSP answer."""

    der: bytes
    status: str
    serial_number: int
    this_update: float
    next_update: float | None
    produced_at: float
    revocation_time: float | None = None
    revocation_reason: str | None = None
    #: weak algorithms it was signed with (engine.ocsp.weak), set by validation
    weak: tuple[str, ...] = ()

    @property
    def good(self) -> bool:
        return self.status == GOOD

    @property
    def age_key(self) -> tuple[float, float]:
        """What "newer" means between two responses for one certificate:
        thisUpdate, then producedAt."""
        return (self.this_update, self.produced_at)

    def may_replace(self, stored: "Staple | None") -> bool:
        """May this response take the place of ``stored``?

        Never an older one. A good (or unknown) answer replaces a revoked
        one only when it is strictly newer: a revocation is not undone by
        a copy of the same age.
        """
        if stored is None:
            return True
        if self.age_key < stored.age_key:
            return False
        if stored.status == REVOKED and self.status != REVOKED:
            return self.age_key > stored.age_key
        return True

    @classmethod
    def from_single(
        cls, der: bytes, response: ocsp.OCSPResponse, single: ocsp.OCSPSingleResponse, weak: tuple[str, ...] = ()
    ) -> "Staple":
        """``weak``: what validation found weak (given here, not by a
        dataclasses.replace afterwards: 2.7 µs a staple at a first start)."""
        revocation_time = None
        reason = None
        status = _STATUS[single.certificate_status]
        if status == REVOKED:
            revocation_time = single.revocation_time_utc.timestamp() if single.revocation_time_utc else None
            reason = single.revocation_reason.name if single.revocation_reason else None
        next_update = single.next_update_utc
        return cls(
            der=der,
            status=status,
            serial_number=single.serial_number,
            this_update=single.this_update_utc.timestamp(),
            next_update=next_update.timestamp() if next_update else None,
            produced_at=response.produced_at_utc.timestamp(),
            revocation_time=revocation_time,
            revocation_reason=reason,
            weak=weak,
        )


#: what cryptography raises when a field it parses lazily, on first read,
#: does not parse: a Name with an empty RDN, a duplicate extension, an
#: algorithm it does not know, a certificate of version 10 in the response
UNREADABLE = (
    ValueError, UnsupportedAlgorithm, x509.DuplicateExtension, x509.UnsupportedGeneralNameType, x509.InvalidVersion
)


@contextmanager
def reading(source: str) -> Iterator[None]:
    """Read a parsed response's fields inside this: one that does not parse
    is the MalformedResponseError parse_response would have raised had it
    read every field at once (it does not: warm pays for what it reads)."""
    try:
        yield
    except UNREADABLE as exc:
        raise MalformedResponseError(
            f"{source}: a field of the response cannot be read ({type(exc).__name__}: {exc})"
        ) from None


_OID_SAID = re.compile(r"OID: ?([0-9.]+)")


def certid_hash_name(single: ocsp.OCSPSingleResponse) -> str:
    """The CertID's hash algorithm, by name; one cryptography does not know
    as "unsupported hash" and its OID, which only its error message tells."""
    try:
        return single.hash_algorithm.name
    except UnsupportedAlgorithm as exc:
        said = _OID_SAID.search(str(exc))
        return f"unsupported hash {said.group(1)}" if said else "unsupported hash"


def staple_end(der: bytes, max_age: float = 3600.0) -> float | None:
    """When a response's first answer stops being servable (nextUpdate, else
    thisUpdate + ``max_age``), read without validating: for a file a server
    staples, whose bytes say when they expire. None when it answers nothing;
    MalformedResponseError when it is no response."""
    with reading("staple file"):
        response = parse_response(der, "staple file")
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            return None
        for single in response.responses:
            if single.next_update_utc is not None:
                return single.next_update_utc.timestamp()
            return single.this_update_utc.timestamp() + max_age
    return None
