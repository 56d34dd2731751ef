"""OpenSSL's spellings, for showing a response as ``openssl ocsp -resp_text`` does.

An operator puts our ``inspect --text`` beside OpenSSL's output; every
field must read the same. What OpenSSL calls things (its long names for
OIDs), how it writes a name (X509_NAME_print_ex with XN_FLAG_ONELINE), a
time (ASN1_TIME_print, fraction of a second kept), a hash or serial
(i2a_ASN1_STRING: upper-case hex, a backslash-newline every 35 bytes) and
the extensions an OCSP response carries (X509V3_extensions_print) is
written here, from OpenSSL 3.0's crypto/ocsp/ocsp_prn.c, crypto/x509 and
crypto/ct/ct_prn.c. An extension OpenSSL has no printer for is shown as
it shows one: its bytes as text, '.' for what is not printable.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cryptography import x509

from engine.ocsp import der
from engine.ocsp.written import Extension

# OpenSSL's long names (OBJ_nid2ln), for the OIDs an OCSP response names
LONG_NAMES = {
    # hashes (CertID)
    "1.3.14.3.2.26": "sha1", "2.16.840.1.101.3.4.2.1": "sha256", "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512", "2.16.840.1.101.3.4.2.4": "sha224", "2.16.840.1.101.3.4.2.5": "sha512-224",
    "2.16.840.1.101.3.4.2.6": "sha512-256", "2.16.840.1.101.3.4.2.7": "sha3-224", "2.16.840.1.101.3.4.2.8": "sha3-256",
    "2.16.840.1.101.3.4.2.9": "sha3-384", "2.16.840.1.101.3.4.2.10": "sha3-512", "1.2.840.113549.2.5": "md5",
    "1.2.840.113549.2.2": "md2", "1.2.840.113549.2.4": "md4", "1.3.36.3.2.1": "ripemd160",
    # signature algorithms
    "1.2.840.113549.1.1.2": "md2WithRSAEncryption", "1.2.840.113549.1.1.4": "md5WithRSAEncryption",
    "1.2.840.113549.1.1.5": "sha1WithRSAEncryption", "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.2.840.113549.1.1.12": "sha384WithRSAEncryption", "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
    "1.2.840.113549.1.1.14": "sha224WithRSAEncryption", "1.2.840.113549.1.1.10": "rsassaPss",
    "1.3.14.3.2.29": "sha1WithRSA", "1.2.840.10045.4.1": "ecdsa-with-SHA1", "1.2.840.10045.4.3.1": "ecdsa-with-SHA224",
    "1.2.840.10045.4.3.2": "ecdsa-with-SHA256", "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
    "1.2.840.10045.4.3.4": "ecdsa-with-SHA512", "1.3.101.112": "ED25519", "1.3.101.113": "ED448",
    "1.2.840.10040.4.3": "dsaWithSHA1", "2.16.840.1.101.3.4.3.1": "dsa_with_SHA224",
    "2.16.840.1.101.3.4.3.2": "dsa_with_SHA256",
    # extensions
    "1.3.6.1.5.5.7.48.1.2": "OCSP Nonce", "1.3.6.1.5.5.7.48.1.3": "OCSP CRL ID",
    "1.3.6.1.5.5.7.48.1.4": "Acceptable OCSP Responses", "1.3.6.1.5.5.7.48.1.5": "OCSP No Check",
    "1.3.6.1.5.5.7.48.1.6": "OCSP Archive Cutoff", "1.3.6.1.5.5.7.48.1.7": "OCSP Service Locator",
    "1.3.6.1.5.5.7.48.1.8": "Extended OCSP Status", "2.5.29.21": "X509v3 CRL Reason Code",
    "2.5.29.24": "Invalidity Date", "2.5.29.23": "Hold Instruction Code",
    "2.5.29.29": "X509v3 Certificate Issuer", "1.3.6.1.4.1.11129.2.4.5": "CT Certificate SCTs",
}  # fmt: skip

# the short names X509_NAME_print_ex writes (XN_FLAG_FN_SN)
_ATTRIBUTES = {
    "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O", "2.5.4.11": "OU",
    "2.5.4.5": "serialNumber", "2.5.4.4": "SN", "2.5.4.42": "GN", "2.5.4.12": "title", "2.5.4.9": "street",
    "2.5.4.17": "postalCode", "2.5.4.15": "businessCategory", "2.5.4.97": "organizationIdentifier",
    "2.5.4.13": "description", "2.5.4.43": "initials", "2.5.4.44": "generationQualifier", "2.5.4.46": "dnQualifier",
    "2.5.4.65": "pseudonym", "2.5.4.41": "name", "2.5.4.18": "postOfficeBox", "2.5.4.72": "role",
    "1.2.840.113549.1.9.1": "emailAddress", "0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL", "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
}  # fmt: skip

# i2s_ASN1_ENUMERATED_TABLE's crl_reasons (v3_enum.c)
_CRL_REASONS = {
    0: "Unspecified", 1: "Key Compromise", 2: "CA Compromise", 3: "Affiliation Changed", 4: "Superseded",
    5: "Cessation Of Operation", 6: "Certificate Hold", 8: "Remove From CRL", 9: "Privilege Withdrawn",
    10: "AA Compromise",
}  # fmt: skip
_NONCE, _CRL_REASON, _SCTS = "1.3.6.1.5.5.7.48.1.2", "2.5.29.21", "1.3.6.1.4.1.11129.2.4.5"
_TIMES = ("1.3.6.1.5.5.7.48.1.6", "2.5.29.24")  # archive cutoff, invalidity date: i2r_ocsp_acutoff
_QUOTED = frozenset(",+<>;")  # RFC 2253 specials that ESC_QUOTE quotes the value for


def long_name(oid: str) -> str:
    """What i2a_ASN1_OBJECT writes: the long name, or the dotted OID."""
    return LONG_NAMES.get(oid, oid)


def name(value: x509.Name) -> str:
    """X509_NAME_print_ex(..., XN_FLAG_ONELINE): "C = US, O = Let's Encrypt, CN = R3"."""
    def attribute(a: x509.NameAttribute) -> str:
        return f"{_ATTRIBUTES.get(a.oid.dotted_string, a.oid.dotted_string)} = {_escape(str(a.value))}"

    return ", ".join(" + ".join(map(attribute, rdn)) for rdn in value.rdns)


def _escape(value: str) -> str:
    # do_buf/do_esc_char with ASN1_STRFLGS_RFC2253 | ESC_QUOTE: the value as
    # UTF-8; every byte past 0x7E and every control byte as \XX; '"' and
    # '\' behind a backslash; and a value holding another RFC 2253 special
    # (or a leading '#', a leading or trailing space) put in quotes
    raw = value.encode("utf-8")
    out, quoted = [], False
    for index, byte in enumerate(raw):
        char = chr(byte)
        if byte > 0x7E or byte < 0x20:
            out.append(f"\\{byte:02X}")
        elif char in '"\\':
            out.append("\\" + char)
        else:
            if char in _QUOTED or (char == "#" and index == 0) or (char == " " and index in (0, len(raw) - 1)):
                quoted = True
            out.append(char)
    text = "".join(out)
    return f'"{text}"' if quoted else text


def time(text: str) -> str:
    """ASN1_TIME_print of a GeneralizedTime as written: "Nov  5 08:54:30 2026 GMT",
    a fraction of a second kept as written ("Nov 15 15:51:33.992 2019 GMT")."""
    moment = datetime.strptime(text[:14], "%Y%m%d%H%M%S")
    fraction = text[14:-1] if text[14:15] == "." else ""
    return f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S}{fraction} {moment.year} GMT"


def timestamp(ts: float) -> str:
    """The same for a time we hold as seconds (a fraction is not kept)."""
    return time(datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y%m%d%H%M%SZ"))


def hex_upper(data: bytes) -> str:
    """i2a_ASN1_STRING / i2a_ASN1_INTEGER: upper-case hex, "\\" and a newline
    before every 35th byte (a SHA-512 hash wraps)."""
    if not data:
        return "00"
    return "\\\n".join(data[i : i + 35].hex().upper() for i in range(0, len(data), 35))


def serial(number: int) -> str:
    """An INTEGER as i2a_ASN1_INTEGER writes it: its magnitude's bytes."""
    magnitude = abs(number)
    text = hex_upper(magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "big"))
    return "-" + text if number < 0 else text


def extension_lines(title: str, extensions: tuple[Extension, ...], indent: int) -> list[str]:
    """X509V3_extensions_print: the title, then each extension's name
    (": critical" after it when it is) and its value, four spaces in."""
    if not extensions:
        return []
    lines = [f"{' ' * indent}{title}:"]
    for ext in extensions:
        lines.append(f"{' ' * (indent + 4)}{long_name(ext.oid)}: {'critical' if ext.critical else ''}")
        lines += _value(ext, indent + 8).split("\n")
    return lines


def _value(ext: Extension, indent: int) -> str:
    pad = " " * indent
    try:
        if ext.oid == _NONCE:  # i2r_ocsp_nonce: the raw value, in hex
            return pad + hex_upper(ext.value)
        tag, start, end = der.header(ext.value, 0)
        content = ext.value[start:end]
        if ext.oid == _CRL_REASON and tag == 0x0A:
            code = int.from_bytes(content, "big", signed=True)
            return pad + _CRL_REASONS.get(code, str(code))
        if ext.oid in _TIMES and tag == 0x18:
            return pad + time(content.decode("ascii"))
        if ext.oid == _SCTS and tag == 0x04:
            return _scts(content, indent)
    except (ValueError, UnicodeDecodeError, IndexError):
        pass  # OpenSSL's printer fails too, and it falls back to the bytes as text
    return pad + "".join(chr(b) if 0x20 <= b <= 0x7E or b in (0x0A, 0x0D) else "." for b in ext.value)


def _scts(data: bytes, indent: int) -> str:
    """SCT_LIST_print: each Signed Certificate Timestamp of a TLS-encoded
    SignedCertificateTimestampList (RFC 6962 3.3), a newline between them."""
    total = int.from_bytes(data[:2], "big")
    if total != len(data) - 2:
        raise ValueError("bad SCT list length")
    items, offset = [], 2
    while offset < len(data):
        size = int.from_bytes(data[offset : offset + 2], "big")
        items.append(_sct(data[offset + 2 : offset + 2 + size], indent))
        offset += 2 + size
    if offset != len(data):
        raise ValueError("bad SCT length")
    return "\n".join(items)


def _sct(sct: bytes, indent: int) -> str:
    pad, field, cont = " " * indent, " " * (indent + 4), indent + 16
    if not sct or sct[0] != 0:
        return f"{pad}Signed Certificate Timestamp:\n{field}Version   : unknown\n{' ' * cont}{_hex_string(sct, cont)}"
    log_id, millis = sct[1:33], int.from_bytes(sct[33:41], "big")
    ext_len = int.from_bytes(sct[41:43], "big")
    extensions, rest = sct[43 : 43 + ext_len], sct[43 + ext_len :]
    hash_alg, sig_alg, sig_len = rest[0], rest[1], int.from_bytes(rest[2:4], "big")
    signature = rest[4 : 4 + sig_len]
    if len(log_id) != 32 or len(signature) != sig_len:
        raise ValueError("truncated SCT")
    when = datetime(1970, 1, 1) + timedelta(milliseconds=millis)
    algorithm = {(4, 3): "ecdsa-with-SHA256", (4, 1): "sha256WithRSAEncryption"}.get(
        (hash_alg, sig_alg), f"{hash_alg:02X}{sig_alg:02X}"
    )
    return "\n".join([
        f"{pad}Signed Certificate Timestamp:",
        f"{field}Version   : v1 (0x0)",
        f"{field}Log ID    : {_hex_string(log_id, cont)}",
        f"{field}Timestamp : {time(when.strftime('%Y%m%d%H%M%S') + f'.{millis % 1000:03d}Z')}",
        f"{field}Extensions: {_hex_string(extensions, cont) if extensions else 'none'}",
        f"{field}Signature : {algorithm}",
        f"{field}            {_hex_string(signature, cont)}",
    ])  # fmt: skip


def _hex_string(data: bytes, indent: int, width: int = 16) -> str:
    """BIO_hex_string: "AB:CD:..." sixteen bytes a line, the next lines indented."""
    rows = [":".join(f"{b:02X}" for b in data[i : i + width]) for i in range(0, len(data), width)]
    return (":\n" + " " * indent).join(rows)

