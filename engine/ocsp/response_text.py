"""An OCSP response decoded for people and scripts, without judging it.

``describe(der)`` gives a plain dict (ISO times, hex strings) for ``--json``;
``render(der)`` gives text laid out like ``openssl ocsp -resp_text``, with
openssl's labels and date format, so that an operator can put the two side
by side. Neither verifies anything: that is engine.ocsp.validate's job, and
inspect reports its verdict separately. A response with a non-successful
status carries nothing but that status (RFC 6960 4.2.1), and is shown so.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from engine.clock import iso, to_datetime
from engine.ocsp.staple import RESPONSE_STATUS_NAMES, certid_hash_name, parse_response, reading

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


def _extensions(extensions: x509.Extensions) -> list[dict[str, Any]]:
    out = []
    for ext in extensions:
        try:
            value = ext.value.public_bytes().hex().upper()
        except (AttributeError, NotImplementedError, ValueError):
            value = None
        out.append({"oid": ext.oid.dotted_string, "name": _oid_name(ext.oid), "critical": ext.critical, "value": value})
    return out


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
        return _jsonable(_decode(parse_response(der, source)))


def _decode(response: ocsp.OCSPResponse) -> dict[str, Any]:
    status = _status_name(response)
    data: dict[str, Any] = {"response_status": status, "response_status_code": response.response_status.value}
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return data
    if response.responder_name is not None:
        responder = {"name": response.responder_name.rfc4514_string()}
    else:
        responder = {"key_hash": (response.responder_key_hash or b"").hex().upper()}
    singles = []
    for single in response.responses:
        revoked = single.certificate_status == ocsp.OCSPCertStatus.REVOKED
        reason = single.revocation_reason.value if revoked and single.revocation_reason else None
        singles.append({
            "hash_algorithm": certid_hash_name(single),
            "issuer_name_hash": single.issuer_name_hash.hex().upper(),
            "issuer_key_hash": single.issuer_key_hash.hex().upper(),
            "serial": format(single.serial_number, "X"),
            "cert_status": _CERT_STATUS[single.certificate_status],
            "revocation_time": _ts(single.revocation_time_utc) if revoked else None,
            "revocation_reason": reason,
            "this_update": _ts(single.this_update_utc),
            "next_update": _ts(single.next_update_utc),
            "extensions": [],
        })  # fmt: skip
    if len(singles) == 1:
        # cryptography exposes singleExtensions for a one-answer response only
        singles[0]["extensions"] = _extensions(response.single_extensions)
    certificates = [
        {
            "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(),
            "serial": format(cert.serial_number, "X"),
            "not_before": cert.not_valid_before_utc.timestamp(),
            "not_after": cert.not_valid_after_utc.timestamp(),
            "pem": cert.public_bytes(serialization.Encoding.PEM).decode(),
        }
        for cert in response.certificates
    ]
    data.update(
        responder_id=responder,
        produced_at=_ts(response.produced_at_utc),
        responses=singles,
        extensions=_extensions(response.extensions),
        signature_algorithm=_oid_name(response.signature_algorithm_oid),
        signature=response.signature.hex(),
        certificates=certificates,
    )
    return data


_TIME_KEYS = {"produced_at", "revocation_time", "this_update", "next_update", "not_before", "not_after"}


def _jsonable(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return iso(value) if key in _TIME_KEYS else value


def _openssl_time(ts: float) -> str:
    # ASN1_TIME_print: "Nov  5 08:54:30 2026 GMT"
    moment = to_datetime(ts)
    return f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S %Y} GMT"


def _even(hex_digits: str) -> str:
    # openssl prints an INTEGER's bytes: always an even number of digits
    return hex_digits.zfill(len(hex_digits) + len(hex_digits) % 2)


def _hex_lines(data: bytes, indent: str, per_line: int = 18) -> list[str]:
    text = [f"{b:02x}" for b in data]
    return [indent + ":".join(text[i : i + per_line]) + (":" if i + per_line < len(text) else "")
            for i in range(0, len(text), per_line)]  # fmt: skip


def render(der: bytes, source: str = "response") -> str:
    """The response as ``openssl ocsp -resp_text`` lays it out (certificates
    summarised), or the MalformedResponseError describe would raise."""
    with reading(source):
        return _render(der, source)


def _render(der: bytes, source: str) -> str:
    response = parse_response(der, source)
    data = _decode(response)
    status = data["response_status"]
    lines = [
        "OCSP Response Data:",
        f"    OCSP Response Status: {_OPENSSL_STATUS.get(status, status)} (0x{data['response_status_code']:x})",
    ]
    if status != "successful":
        return "\n".join(lines) + "\n"
    responder = data["responder_id"]
    lines += [
        "    Response Type: Basic OCSP Response",
        "    Version: 1 (0x0)",
        f"    Responder Id: {responder.get('name') or responder.get('key_hash')}",
        f"    Produced At: {_openssl_time(data['produced_at'])}",
        "    Responses:",
    ]
    for single in data["responses"]:
        lines += [
            "    Certificate ID:",
            f"      Hash Algorithm: {single['hash_algorithm']}",
            f"      Issuer Name Hash: {single['issuer_name_hash']}",
            f"      Issuer Key Hash: {single['issuer_key_hash']}",
            f"      Serial Number: {_even(single['serial'])}",
            f"    Cert Status: {single['cert_status']}",
        ]
        if single["cert_status"] == "revoked":
            lines.append(f"    Revocation Time: {_openssl_time(single['revocation_time'])}")
            reason = single["revocation_reason"]
            if reason:
                lines.append(f"    Revocation Reason: {reason} (0x{_REASON_CODES.get(reason, 0):x})")
        lines.append(f"    This Update: {_openssl_time(single['this_update'])}")
        if single["next_update"] is not None:
            lines.append(f"    Next Update: {_openssl_time(single['next_update'])}")
        lines += _render_extensions("    Response Single Extensions:", single["extensions"])
        lines.append("")
    lines += _render_extensions("    Response Extensions:", data["extensions"])
    lines.append(f"    Signature Algorithm: {data['signature_algorithm']}")
    lines.append("    Signature Value:")
    lines += _hex_lines(response.signature, "        ")
    for cert in data["certificates"]:
        lines += [
            "Certificate:",
            f"    Subject: {cert['subject']}",
            f"    Issuer: {cert['issuer']}",
            f"    Serial Number: {cert['serial']}",
            f"    Not Before: {_openssl_time(cert['not_before'])}",
            f"    Not After : {_openssl_time(cert['not_after'])}",
            cert["pem"].rstrip("\n"),
        ]
    return "\n".join(lines) + "\n"


def _render_extensions(title: str, extensions: list[dict[str, Any]]) -> list[str]:
    if not extensions:
        return []
    lines = [title]
    for ext in extensions:
        lines.append(f"        {ext['name']}:{' critical' if ext['critical'] else ''}")
        lines.append(f"            {ext['value'] if ext['value'] is not None else '(not decodable)'}")
    return lines
