"""Re-signing a response after rewriting its ResponseData: how a test
writes what a responder using another encoder would send (the test PKI's
issuer key signs it again)."""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from engine.ocsp import der

_BASIC_OID = bytes.fromhex("06092b0601050507300101")


def rewrite(data: bytes, start: int, end: int, edit: Callable[[int, bytes], bytes]) -> bytes:
    """The elements in data[start:end], rebuilt; ``edit(tag, content)`` gives each one's new content."""
    out = b""
    for tag, _, first, last in der.children(data, start, end):
        content = rewrite(data, first, last, edit) if tag & 0x20 else data[first:last]
        out += der.tlv(tag, edit(tag, content))
    return out


def parts(response: bytes) -> tuple[bytes, bytes, list[bytes]]:
    """The BasicOCSPResponse's tbsResponseData, signatureAlgorithm and certificates, each as DER."""
    # OCSPResponse { status, [0] { ResponseBytes { OID, OCTET STRING { BasicOCSPResponse } } } }
    _, start, end = der.header(response, 0)
    wrapper = der.children(response, start, end)[1]
    response_bytes = der.children(response, wrapper[2], wrapper[3])[0]
    octets = der.children(response, response_bytes[2], response_bytes[3])[1]
    basic = der.children(response, octets[2], octets[3])[0]
    tbs, algorithm, _, *certs = der.children(response, basic[2], basic[3])
    return response[tbs[1] : tbs[3]], response[algorithm[1] : algorithm[3]], [response[c[1] : c[3]] for c in certs]


def resigned(pki, response: bytes, edit: Callable[[int, bytes], bytes], *, sign_first: bool = False) -> bytes:
    """``response`` with its ResponseData rewritten by ``edit`` and signed by the
    issuer. With ``sign_first``, the signature is over the unedited bytes: a
    forgery whose canonical copy is what was signed."""
    original, algorithm, certs = parts(response)
    edited = rewrite(original, 0, len(original), edit)
    key = pki.intermediate.key
    signed = original if sign_first else edited
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(signed, ec.ECDSA(hashes.SHA256()))
    else:
        signature = key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    body = edited + algorithm + der.tlv(0x03, b"\x00" + signature) + b"".join(certs)
    return der.tlv(0x30, b"\x0a\x01\x00" + der.tlv(0xA0, der.tlv(0x30, _BASIC_OID + der.tlv(0x04, der.tlv(0x30, body)))))
