"""A response as its responder wrote it, read with engine.ocsp.der.

cryptography reads OCSP responses strictly: DER as X.690 writes it, times
as RFC 5280 profiles them. OpenSSL, and so every server that staples,
reads more, and responders have sent some of it for years: Go's encoder
wrote ResponseData's default version explicitly until 2016 (Let's
Encrypt's responses of the time), other responders fractional seconds in
their times or a non-critical flag written out. This module

- writes a canonical copy of a response cryptography refused (``canonical``),
  for cryptography to read and nothing else;
- finds the tbsResponseData bytes as written (``read(...).tbs``), which is
  what the signature covers and what engine.ocsp.staple hands the
  signature check, so that a rewritten copy can never verify by itself;
- reads what cryptography does not say (``read``): a CertID hash it does
  not know, times as written, every SingleResponse's extensions.

It judges nothing. RFC 6960 4.2.1 has the shapes read here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.ocsp import der

_SEQUENCE, _OCTET_STRING, _OID, _BOOLEAN, _TIME = 0x30, 0x04, 0x06, 0x01, 0x18
_EXPLICIT_0, _EXPLICIT_1 = 0xA0, 0xA1
_REVOKED = 0xA1  # certStatus revoked [1] IMPLICIT RevokedInfo
_V1 = b"\x02\x01\x00"  # version [0] EXPLICIT INTEGER v1 (0): the DEFAULT, which DER leaves out
_FRACTION = re.compile(rb"(\d{14})\.\d+Z")
_BASIC_OID = b"\x06\x09\x2b\x06\x01\x05\x05\x07\x30\x01\x01"  # id-pkix-ocsp-basic


@dataclass(frozen=True)
class Extension:
    oid: str
    critical: bool
    #: extnValue's content: the extension's own DER
    value: bytes


@dataclass(frozen=True)
class Single:
    """One SingleResponse, as much as cryptography does not tell."""

    hash_oid: str
    #: times as written (GeneralizedTime text): a fraction of a second is kept
    this_update: str
    next_update: str | None
    revocation_time: str | None
    extensions: tuple[Extension, ...]


@dataclass(frozen=True)
class Written:
    #: tbsResponseData, header included: the bytes the signature covers
    tbs: bytes
    version: int
    produced_at: str
    singles: tuple[Single, ...]
    extensions: tuple[Extension, ...]


def read(data: bytes) -> Written:
    """The BasicOCSPResponse's ResponseData as written; ValueError if it is not one."""
    try:
        return _read(data)
    except IndexError:  # an element missing where one must be
        raise ValueError("ResponseData is missing a field") from None


def _read(data: bytes) -> Written:
    basic = _basic(data)
    tbs = _kids(data, *basic[:2], _SEQUENCE)[0]
    if tbs[0] != _SEQUENCE:
        raise ValueError("tbsResponseData is not a SEQUENCE")
    fields = der.children(data, tbs[2], tbs[3])
    version = 0
    if fields and fields[0][0] == _EXPLICIT_0:
        version = _integer(data, fields[0])
        fields = fields[1:]
    if len(fields) < 3:
        raise ValueError("ResponseData is too short")
    responses = _expect(fields[2], _SEQUENCE)
    return Written(
        tbs=data[tbs[1] : tbs[3]],
        version=version,
        produced_at=_time_text(data, fields[1]),
        singles=tuple(_single(data, s) for s in der.children(data, responses[2], responses[3])),
        extensions=_extensions(data, fields[3]) if len(fields) > 3 else (),
    )


def canonical(data: bytes) -> bytes | None:
    """``data`` with what OpenSSL reads but DER forbids written as DER: an
    explicit v1 version left out, fractional seconds cut, an explicit
    ``critical FALSE`` left out, a BOOLEAN TRUE written 0xFF. Only
    ResponseData is rewritten (the certificates are cryptography's to
    read as they are). None when nothing needs it, or when ``data`` is no
    OCSP response at all: then it is malformed as it stands.
    """
    try:
        start, end, path = _basic(data)
        tbs = _kids(data, start, end, _SEQUENCE)[0]
        fixed_tbs = _fix_tbs(data, tbs)
    except (ValueError, IndexError):
        return None
    if fixed_tbs == data[tbs[1] : tbs[3]]:
        return None
    inner = der.tlv(_SEQUENCE, fixed_tbs + data[tbs[3] : end])  # BasicOCSPResponse
    # Rewrap out to the OCSPResponse: each container keeps its tag and
    # what precedes and follows the rewritten part.
    for tag, before, after in reversed(path):
        inner = der.tlv(tag, before + inner + after)
    return inner


# -- reading --------------------------------------------------------------------


def _basic(data: bytes) -> tuple[int, int, list[tuple[int, bytes, bytes]]]:
    """Where the BasicOCSPResponse's content is, and the containers around
    it, from the outside in: (tag, the bytes before it, the bytes after it)."""
    tag, start, end = der.header(data, 0)  # OCSPResponse
    if tag != _SEQUENCE or end != len(data):
        raise ValueError("not one SEQUENCE")
    path = []
    element = (tag, 0, start, end)
    # OCSPResponse { status, [0] EXPLICIT ResponseBytes { OID, OCTET STRING { BasicOCSPResponse } } }
    for index, want in ((1, _EXPLICIT_0), (0, _SEQUENCE), (1, _OCTET_STRING), (0, _SEQUENCE)):
        kids = der.children(data, element[2], element[3])
        if index >= len(kids):
            raise ValueError("OCSPResponse without a BasicOCSPResponse")
        inner = _expect(kids[index], want)
        if want == _OCTET_STRING and data[kids[0][1] : kids[0][3]] != _BASIC_OID:
            raise ValueError("responseType is not id-pkix-ocsp-basic")
        path.append((element[0], data[element[2] : inner[1]], data[inner[3] : element[3]]))
        element = inner
    return element[2], element[3], path


def _single(data: bytes, element: tuple[int, int, int, int]) -> Single:
    cert_id, status, this_update, *rest = der.children(data, element[2], element[3])
    algorithm = _kids(data, cert_id[2], cert_id[3], _SEQUENCE)[0]
    oid = _expect(der.children(data, algorithm[2], algorithm[3])[0], _OID)
    revoked = None
    if status[0] == _REVOKED:
        revoked = _time_text(data, der.children(data, status[2], status[3])[0])
    next_update, extensions = None, ()
    for tag, offset, start, end in rest:
        inside = der.children(data, start, end)[0]
        if tag == _EXPLICIT_0:
            next_update = _time_text(data, inside)
        elif tag == _EXPLICIT_1:
            extensions = _extensions(data, (tag, offset, start, end))
    return Single(
        hash_oid=der.oid_text(data[oid[2] : oid[3]]),
        this_update=_time_text(data, this_update),
        next_update=next_update,
        revocation_time=revoked,
        extensions=extensions,
    )


def _extensions(data: bytes, wrapper: tuple[int, int, int, int]) -> tuple[Extension, ...]:
    found = []
    (listing,) = der.children(data, wrapper[2], wrapper[3])
    for ext in der.children(data, listing[2], listing[3]):
        parts = der.children(data, ext[2], ext[3])
        oid, value = _expect(parts[0], _OID), _expect(parts[-1], _OCTET_STRING)
        critical = len(parts) == 3 and data[parts[1][2] : parts[1][3]] != b"\x00"
        found.append(Extension(der.oid_text(data[oid[2] : oid[3]]), critical, data[value[2] : value[3]]))
    return tuple(found)


def _time_text(data: bytes, element: tuple[int, int, int, int]) -> str:
    return data[_expect(element, _TIME)[2] : element[3]].decode("ascii")


def _integer(data: bytes, wrapper: tuple[int, int, int, int]) -> int:
    (inner,) = der.children(data, wrapper[2], wrapper[3])
    return int.from_bytes(data[inner[2] : inner[3]], "big", signed=True)


def _kids(data: bytes, start: int, end: int, first: int) -> list[tuple[int, int, int, int]]:
    kids = der.children(data, start, end)
    if not kids or kids[0][0] != first:
        raise ValueError(f"expected tag {first:#x}")
    return kids


def _expect(element: tuple[int, int, int, int], tag: int) -> tuple[int, int, int, int]:
    if element[0] != tag:
        raise ValueError(f"expected tag {tag:#x}, found {element[0]:#x}")
    return element


# -- rewriting ------------------------------------------------------------------


def _fix_tbs(data: bytes, tbs: tuple[int, int, int, int]) -> bytes:
    out = []
    for index, element in enumerate(der.children(data, tbs[2], tbs[3])):
        tag, offset, start, end = element
        if index == 0 and tag == _EXPLICIT_0 and data[start:end] == _V1:
            continue  # the DEFAULT version, written out
        if tag == _TIME:
            out.append(_fix_time(data, element))
        elif tag == _SEQUENCE and index > 0:  # responses
            out.append(der.tlv(tag, b"".join(_fix_single(data, s) for s in der.children(data, start, end))))
        elif tag == _EXPLICIT_1 and index > 1:  # responseExtensions (byName is [1] too, but first)
            out.append(_fix_extensions(data, element))
        else:
            out.append(data[offset:end])
    return der.tlv(_SEQUENCE, b"".join(out))


def _fix_single(data: bytes, element: tuple[int, int, int, int]) -> bytes:
    out = []
    for index, (tag, offset, start, end) in enumerate(der.children(data, element[2], element[3])):
        if index == 1 and tag == _REVOKED:
            out.append(der.tlv(tag, b"".join(_fix_time(data, e) for e in der.children(data, start, end))))
        elif tag == _TIME:
            out.append(_fix_time(data, (tag, offset, start, end)))
        elif index > 2 and tag == _EXPLICIT_0:  # nextUpdate
            out.append(der.tlv(tag, b"".join(_fix_time(data, e) for e in der.children(data, start, end))))
        elif index > 2 and tag == _EXPLICIT_1:  # singleExtensions
            out.append(_fix_extensions(data, (tag, offset, start, end)))
        else:
            out.append(data[offset:end])
    return der.tlv(_SEQUENCE, b"".join(out))


def _fix_time(data: bytes, element: tuple[int, int, int, int]) -> bytes:
    tag, offset, start, end = element
    match = _FRACTION.fullmatch(data[start:end]) if tag == _TIME else None
    return der.tlv(tag, match.group(1) + b"Z") if match else data[offset:end]


def _fix_extensions(data: bytes, wrapper: tuple[int, int, int, int]) -> bytes:
    (listing,) = der.children(data, wrapper[2], wrapper[3])
    fixed = []
    for ext in der.children(data, listing[2], listing[3]):
        parts = []
        for tag, offset, start, end in der.children(data, ext[2], ext[3]):
            if tag == _BOOLEAN and data[start:end] == b"\x00":
                continue  # critical DEFAULT FALSE, written out
            parts.append(der.tlv(tag, b"\xff") if tag == _BOOLEAN else data[offset:end])
        fixed.append(der.tlv(_SEQUENCE, b"".join(parts)))
    return der.tlv(wrapper[0], der.tlv(_SEQUENCE, b"".join(fixed)))
