"""Responses OpenSSL reads and cryptography refuses: read from a canonical
copy (engine.ocsp.written), verified over the bytes the responder signed,
kept as they came.

Each response here is what a responder writing that form would send: built
with cryptography, its ResponseData rewritten, then signed again with the
test PKI's key. tests/test_corpus.py has the real ones (Go's encoder wrote
the default version until 2016).
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from engine.errors import MalformedResponseError, SignatureError
from engine.ocsp import written
from engine.ocsp.certs import load_leaf
from engine.ocsp.staple import Reencoded, parse_response
from engine.ocsp.validate import validate
from tests.resigning import resigned

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
_NONCE_OID = bytes.fromhex("06092b0601050507300102")


def built(pki, *, algorithm=hashes.SHA1(), nonce: bool = False) -> bytes:
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=pki.good.cert, issuer=pki.intermediate.cert, algorithm=algorithm,
        cert_status=ocsp.OCSPCertStatus.GOOD, this_update=NOW - dt.timedelta(minutes=1),
        next_update=NOW + dt.timedelta(days=1), revocation_time=None, revocation_reason=None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, pki.intermediate.cert)  # fmt: skip
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(b"\x07" * 16), critical=False)
    return builder.sign(pki.intermediate.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def explicit_version(tag: int, content: bytes) -> bytes:
    # ResponseData is the only SEQUENCE starting with its responderID ([1] or [2])
    return b"\xa0\x03\x02\x01\x00" + content if tag == 0x30 and content[:1] in (b"\xa1", b"\xa2") else content


def fractional_seconds(tag: int, content: bytes) -> bytes:
    return content[:-1] + b".25Z" if tag == 0x18 else content


def critical_false(tag: int, content: bytes) -> bytes:
    if tag == 0x30 and content.startswith(_NONCE_OID):
        return _NONCE_OID + b"\x01\x01\x00" + content[len(_NONCE_OID) :]
    return content


@pytest.fixture
def leaf(pki):
    return load_leaf(pki.good.chain_path)


@pytest.mark.parametrize("edit", [explicit_version, fractional_seconds, critical_false], ids=lambda f: f.__name__)
def test_a_form_openssl_reads_is_accepted_and_kept_as_sent(pki, leaf, edit):
    sent = resigned(pki, built(pki, nonce=True), edit)
    assert sent != built(pki, nonce=True)
    with pytest.raises(ValueError):
        ocsp.load_der_ocsp_response(sent)  # what the engine met before
    response = parse_response(sent)
    assert isinstance(response, Reencoded)
    assert response.tbs_response_bytes == written.read(sent).tbs  # the bytes that were signed
    staple = validate(sent, leaf, NOW.timestamp())
    assert staple.good and staple.der == sent


def test_fractional_seconds_are_cut_to_the_second(pki, leaf):
    staple = validate(resigned(pki, built(pki), fractional_seconds), leaf, NOW.timestamp())
    assert staple.this_update == (NOW - dt.timedelta(minutes=1)).timestamp()
    assert staple.produced_at == int(staple.produced_at)


@pytest.mark.parametrize("edit", [explicit_version, fractional_seconds], ids=lambda f: f.__name__)
def test_the_canonical_copy_never_verifies_in_the_originals_place(pki, leaf, edit):
    # signed over the canonical bytes, sent in another form: the signature
    # is checked over what was sent, so it fails, as it does for OpenSSL
    forged = resigned(pki, built(pki), edit, sign_first=True)
    assert written.canonical(forged) is not None
    with pytest.raises(SignatureError, match="does not verify"):
        validate(forged, leaf, NOW.timestamp())


def test_a_response_cryptography_reads_is_not_copied(pki):
    normal = built(pki, nonce=True)
    assert written.canonical(normal) is None
    assert type(parse_response(normal)) is ocsp.OCSPResponse


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda d: d + b"\x00", id="trailing-byte"),
        pytest.param(lambda d: d[:-1], id="truncated"),
        pytest.param(lambda d: d.replace(b"\x0a\x01\x00", b"\x0a\x01\x07", 1), id="no-such-status"),
    ],
)
def test_what_is_not_an_ocsp_response_stays_malformed(pki, broken):
    with pytest.raises(MalformedResponseError, match="not a DER OCSPResponse"):
        parse_response(broken(resigned(pki, built(pki), explicit_version)))


def test_version_2_stays_malformed(pki):
    def version_2(tag: int, content: bytes) -> bytes:
        return b"\xa0\x03\x02\x01\x01" + content if tag == 0x30 and content[:1] == b"\xa2" else content

    with pytest.raises(MalformedResponseError, match="version"):
        parse_response(resigned(pki, built(pki), version_2))


def test_read_gives_what_cryptography_does_not(pki):
    sent = resigned(pki, built(pki, algorithm=hashes.SHA256(), nonce=True), fractional_seconds)
    data = written.read(sent)
    assert data.version == 0
    assert re.fullmatch(r"\d{14}\.25Z", data.produced_at)
    (single,) = data.singles
    assert single.hash_oid == "2.16.840.1.101.3.4.2.1"
    assert single.this_update.endswith(".25Z") and single.next_update and single.revocation_time is None
    (nonce,) = data.extensions
    assert (nonce.oid, nonce.critical, nonce.value) == ("1.3.6.1.5.5.7.48.1.2", False, b"\x04\x10" + b"\x07" * 16)
