"""An OCSP response decoded for people and scripts, without judging it.

``describe(der)`` gives a plain dict (ISO times, hex strings) for ``--json``;
``render(der)`` gives text laid out like ``openssl ocsp -resp_text``, with
openssl's labels and date format, so that an operator can put the two side
by side (engine.ocsp.openssl_text has OpenSSL's spellings; what
cryptography does not say, such as a CertID hash it does not know or a
second answer's extensions, is read from the bytes by engine.ocsp.written).
Neither verifies anything: that is engine.ocsp.validate's job, and inspect
reports its verdict separately. A response with a non-successful status
carries nothing but that status (RFC 6960 4.2.1), and is shown so: as
OCSP_RESPONSE_print shows it, where the openssl program says "Responder
Error: trylater (3)" instead.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from engine.clock import iso
from engine.errors import MalformedResponseError
from engine.ocsp import openssl_text, written
from engine.ocsp.certs import serial_text
from engine.ocsp.staple import RESPONSE_STATUS_NAMES, parse_response, reading

# openssl's own spellings (OCSP_response_status_str, OCSP_crl_reason_str)
_OPENSSL_STATUS = {
    "successful": "successful",
    "malformed_request": "malformedrequest",
    "internal_error": "internalerror",
    "try_later": "trylater",
    "sig_required": "sigrequired",
    "unauthorized": "unauthorized",
}
_REASON_CODES = {
    "unspecified": 0, "keyCompromise": 1, "cACompromise": 2, "affiliationChanged": 3,
    "superseded": 4, "cessationOfOperation": 5, "certificateHold": 6, "removeFromCRL": 8,
    "privilegeWithdrawn": 9, "aACompromise": 10,
}  # fmt: skip
_CERT_STATUS = {
    ocsp.OCSPCertStatus.GOOD: "good",
    ocsp.OCSPCertStatus.REVOKED: "revoked",
    ocsp.OCSPCertStatus.UNKNOWN: "unknown",
}




def _ts(value: Any) -> float | None:
    return value.timestamp() if value is not None else None


def _extensions(extensions: tuple[written.Extension, ...]) -> list[dict[str, Any]]:
    return [
        {
            "oid": e.oid, "name": _oid_name(x509.ObjectIdentifier(e.oid)), "critical": e.critical,
            "value": e.value.hex().upper(),
        }
        for e in extensions
    ]  # fmt: skip


def _oid_name(oid: x509.ObjectIdentifier) -> str:
    if oid == x509.OCSPNonce.oid:
        return "OCSP Nonce"
    name = getattr(oid, "_name", "Unknown OID")
    return oid.dotted_string if name == "Unknown OID" else name


def _status_name(response: ocsp.OCSPResponse) -> str:
    return RESPONSE_STATUS_NAMES.get(response.response_status, str(response.response_status))


def describe(der: bytes, source: str = "response") -> dict[str, Any]:
    """Everything the response says, with times as ISO 8601 (UTC).

    Raises MalformedResponseError when ``der`` is not an OCSPResponse, or a
    field of it cannot be read.
    """
    with reading(source):
        response = parse_response(der, source)
        return _jsonable(_decode(response, _written(der, response, source)))


def _written(der: bytes, response: ocsp.OCSPResponse, source: str) -> written.Written | None:
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return None
    try:
        return written.read(der)
    except ValueError as exc:  # cryptography read it, so this would be our walker's gap
        raise MalformedResponseError(f"{source}: cannot read its ResponseData ({exc})") from None


def _hash_name(single: ocsp.OCSPSingleResponse, as_written: written.Single) -> str:
    try:
        return single.hash_algorithm.name
    except UnsupportedAlgorithm:  # a hash cryptography does not know: its OID
        return openssl_text.long_name(as_written.hash_oid)


def _decode(response: ocsp.OCSPResponse, data: written.Written | None) -> dict[str, Any]:
    status = _status_name(response)
    decoded: dict[str, Any] = {"response_status": status, "response_status_code": response.response_status.value}
    if data is None:
        return decoded
    if response.responder_name is not None:
        responder = {"name": response.responder_name.rfc4514_string()}
    else:
        responder = {"key_hash": (response.responder_key_hash or b"").hex().upper()}
    singles = []
    for single, as_written in zip(response.responses, data.singles, strict=True):
        revoked = single.certificate_status == ocsp.OCSPCertStatus.REVOKED
        reason = single.revocation_reason.value if revoked and single.revocation_reason else None
        singles.append({
            "hash_algorithm": _hash_name(single, as_written),
            "issuer_name_hash": single.issuer_name_hash.hex().upper(),
            "issuer_key_hash": single.issuer_key_hash.hex().upper(),
            "serial": serial_text(single.serial_number),
            "cert_status": _CERT_STATUS[single.certificate_status],
            "revocation_time": _ts(single.revocation_time_utc) if revoked else None,
            "revocation_reason": reason,
            "this_update": _ts(single.this_update_utc),
            "next_update": _ts(single.next_update_utc),
            "extensions": _extensions(as_written.extensions),
        })  # fmt: skip
    certificates = [
        {
            "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(),
            "serial": serial_text(cert.serial_number),
            "not_before": cert.not_valid_before_utc.timestamp(),
            "not_after": cert.not_valid_after_utc.timestamp(),
            "pem": cert.public_bytes(serialization.Encoding.PEM).decode(),
        }
        for cert in response.certificates
    ]
    decoded.update(
        responder_id=responder,
        produced_at=_ts(response.produced_at_utc),
        responses=singles,
        extensions=_extensions(data.extensions),
        signature_algorithm=_oid_name(response.signature_algorithm_oid),
        signature=response.signature.hex(),
        certificates=certificates,
    )
    return decoded


_TIME_KEYS = {"produced_at", "revocation_time", "this_update", "next_update", "not_before", "not_after"}


def _jsonable(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return iso(value) if key in _TIME_KEYS else value


def _hex_lines(data: bytes, indent: str, per_line: int = 18) -> list[str]:
    text = [f"{b:02x}" for b in data]
    return [indent + ":".join(text[i : i + per_line]) + (":" if i + per_line < len(text) else "")
            for i in range(0, len(text), per_line)]  # fmt: skip


def render(der: bytes, source: str = "response") -> str:
    """The response as ``openssl ocsp -resp_text`` lays it out, field for
    field (OCSP_RESPONSE_print); the certificates it carries summarised. Or
    the MalformedResponseError describe would raise."""
    with reading(source):
        return _render(der, source)


def _render(der: bytes, source: str) -> str:
    response = parse_response(der, source)
    data = _written(der, response, source)
    code = response.response_status.value
    status = _status_name(response)
    lines = ["OCSP Response Data:", f"    OCSP Response Status: {_OPENSSL_STATUS.get(status, status)} (0x{code:x})"]
    if data is None:
        return "\n".join(lines) + "\n"
    if response.responder_name is not None:
        responder = openssl_text.name(response.responder_name)
    else:
        responder = openssl_text.hex_upper(response.responder_key_hash or b"")
    lines += [
        "    Response Type: Basic OCSP Response",
        f"    Version: {data.version + 1} (0x{data.version:x})",
        f"    Responder Id: {responder}",
        f"    Produced At: {openssl_text.time(data.produced_at)}",
        "    Responses:",
    ]
    for single, as_written in zip(response.responses, data.singles, strict=True):
        lines += _single_lines(single, as_written)
    lines += openssl_text.extension_lines("Response Extensions", data.extensions, 4)
    lines.append(f"    Signature Algorithm: {openssl_text.long_name(response.signature_algorithm_oid.dotted_string)}")
    lines.append("    Signature Value:")
    lines += _hex_lines(response.signature, "        ")
    for cert in response.certificates:
        lines += [
            "Certificate:",
            # a summary, not X509_print's dump: the PEM that follows is exact
            f"    Subject: {cert.subject.rfc4514_string()}",
            f"    Issuer: {cert.issuer.rfc4514_string()}",
            f"    Serial Number: {format(cert.serial_number, 'X')}",
            f"    Not Before: {openssl_text.timestamp(cert.not_valid_before_utc.timestamp())}",
            f"    Not After : {openssl_text.timestamp(cert.not_valid_after_utc.timestamp())}",
            cert.public_bytes(serialization.Encoding.PEM).decode().rstrip("\n"),
        ]
    return "\n".join(lines) + "\n"


def _single_lines(single: ocsp.OCSPSingleResponse, as_written: written.Single) -> list[str]:
    status = _CERT_STATUS[single.certificate_status]
    lines = [
        "    Certificate ID:",
        f"      Hash Algorithm: {openssl_text.long_name(as_written.hash_oid)}",
        f"      Issuer Name Hash: {openssl_text.hex_upper(single.issuer_name_hash)}",
        f"      Issuer Key Hash: {openssl_text.hex_upper(single.issuer_key_hash)}",
        f"      Serial Number: {openssl_text.serial(single.serial_number)}",
        f"    Cert Status: {status}",
    ]
    if status == "revoked" and as_written.revocation_time is not None:
        lines.append(f"    Revocation Time: {openssl_text.time(as_written.revocation_time)}")
        reason = single.revocation_reason.value if single.revocation_reason else None
        if reason:
            lines.append(f"    Revocation Reason: {reason} (0x{_REASON_CODES.get(reason, 0):x})")
    lines.append(f"    This Update: {openssl_text.time(as_written.this_update)}")
    if as_written.next_update is not None:
        lines.append(f"    Next Update: {openssl_text.time(as_written.next_update)}")
    lines += openssl_text.extension_lines("Response Single Extensions", as_written.extensions, 8)
    return [*"\n".join(lines).split("\n"), ""]
