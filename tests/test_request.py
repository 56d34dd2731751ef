"""The OCSP request, written by hand (engine.ocsp.der), byte for byte what
cryptography's OCSPRequestBuilder writes; and the DER reader's refusals."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from engine.ocsp import der
from engine.ocsp.certs import Leaf
from engine.ocsp.request import build_request

_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}

#: serials at DER length boundaries (a leading 0 byte when the top bit is
#: set), up to the 159 bits cryptography allows (20 octets, RFC 5280 4.1.2.2)
SERIALS = [1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 2**63, 2**152 + 12345, 2**158 + 1, 2**159 - 1]


def _leaf_with_serial(pki, serial: int) -> Leaf:
    now = dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"serial {serial}")]))
        .issuer_name(pki.intermediate.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(pki.intermediate.key, hashes.SHA256())
    )
    return Leaf(cert=cert, issuer=pki.intermediate.cert)


def _reference(leaf: Leaf, hash_name: str, nonce: bytes | None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf.cert, leaf.issuer, _HASHES[hash_name]())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("serial", SERIALS)
@pytest.mark.parametrize("hash_name", list(_HASHES))
def test_request_is_what_cryptography_writes(pki, serial, hash_name):
    leaf = _leaf_with_serial(pki, serial)
    query = build_request(leaf, hash_name=hash_name)
    assert query.nonce is None
    assert query.der == _reference(leaf, hash_name, None)
    parsed = ocsp.load_der_ocsp_request(query.der)
    assert parsed.serial_number == serial
    assert (query.cert_id.issuer_name_hash, query.cert_id.issuer_key_hash) == (
        parsed.issuer_name_hash, parsed.issuer_key_hash,
    )  # fmt: skip


@pytest.mark.parametrize("hash_name", ["sha1", "sha256"])
def test_request_with_a_nonce_is_what_cryptography_writes(pki, hash_name):
    leaf = Leaf(cert=pki.good.cert, issuer=pki.intermediate.cert)
    first, second = build_request(leaf, hash_name=hash_name, nonce=True), build_request(leaf, nonce=True)
    assert first.nonce is not None and len(first.nonce) == 16 and first.nonce != second.nonce
    assert first.der == _reference(leaf, hash_name, first.nonce)
    extension = ocsp.load_der_ocsp_request(first.der).extensions.get_extension_for_class(x509.OCSPNonce)
    assert extension.value.nonce == first.nonce and not extension.critical


def test_unknown_hash_is_refused(pki):
    with pytest.raises(ValueError, match="unsupported CertID hash 'md5'"):
        build_request(Leaf(cert=pki.good.cert, issuer=pki.intermediate.cert), hash_name="md5")


@pytest.mark.parametrize("size, head", [(0, "0400"), (127, "047f"), (128, "048180"), (255, "0481ff"), (256, "04820100")])
def test_lengths_short_and_long_form(size, head):
    encoded = der.tlv(der.OCTET_STRING, b"\0" * size)
    assert encoded.hex().startswith(head) and len(encoded) == len(head) // 2 + size
    assert der.header(encoded, 0) == (der.OCTET_STRING, len(head) // 2, len(encoded))


@pytest.mark.parametrize("value", [0, 1, 127, 128, 255, 256, -1, -128, -129, 2**64])
def test_integer_is_minimal_twos_complement(value):
    encoded = der.integer(value)
    content = encoded[2:]
    assert int.from_bytes(content, "big", signed=True) == value
    # minimal: no leading byte that only repeats the sign of the next
    assert len(content) == 1 or not (
        (content[0] == 0 and content[1] < 0x80) or (content[0] == 0xFF and content[1] >= 0x80)
    )


@pytest.mark.parametrize(
    "data, why",
    [
        (b"\x30", "truncated"),
        (b"\x30\x05\x01", "truncated"),
        (b"\x30\x80\x00\x00", "bad DER length"),  # indefinite length
        (b"\x30\x85\x01\x01\x01\x01\x01", "bad DER length"),  # more length octets than we accept
        (b"\x30\x82\x01", "bad DER length"),  # length octets cut short
        (b"\x1f\x01\x00", "multi-byte"),
    ],
)
def test_header_refuses_what_der_forbids(data, why):
    with pytest.raises(ValueError, match=why):
        der.header(data, 0)
