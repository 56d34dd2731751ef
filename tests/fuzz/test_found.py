"""Each escape the fuzzing found (and the reported ones), as a fixed example.

Hypothesis may not draw the same input twice; these do, every run. Each
builds the input by editing a valid one in its DER tree (tests.fuzz.der_tree)
and, where the edit would break a signature that a check needs intact,
signing it again with the test PKI's keys.
"""

from __future__ import annotations

import base64
import sqlite3
import time

import pytest

from engine.clock import FrozenClock
from engine.errors import (
    CertIDMismatchError, CertificateFileError, MalformedResponseError, ResponderUnreachableError,
    ResponseTooLargeError, SignatureError,
)  # fmt: skip
from engine.inspection import inspect_entry
from engine.ocsp.certs import load_leaf
from engine.ocsp.response_text import describe, render
from engine.ocsp.validate import validate
from engine.responders.transport import BufferReader, fetch_error, plan, read_answer
from engine.store.providers.base import Entry
from engine.store.providers.local import LocalProvider
from engine.store.providers.meta import load_meta
from tests.fuzz import der_tree
from tests.fuzz.der_tree import OID, oid
from tests.fuzz.responses import SHA224, UNKNOWN_HASH, certid_hashed_with, md2_signed, signed_response
from tests.fuzz.strategies import BASIC_RESPONSE, CERTIFICATE

# -- OCSP responses -------------------------------------------------------------


def _edited(der: bytes, edit, sign=None, signed_at=BASIC_RESPONSE) -> bytes:
    root = der_tree.parse(der)
    edit(root)
    if sign is not None:
        der_tree.sign_again(root, signed_at, sign)
    return der_tree.encode(root)


def _checks(seeds, der, **options):
    return validate(der, seeds.leaf, time.time(), source="planted", **options)


def test_md2_signature_algorithm(seeds):
    """Reported: UnsupportedAlgorithm out of validate (signature_hash_algorithm)."""
    with pytest.raises(SignatureError, match="1.2.840.113549.1.1.2, a signature algorithm we cannot verify"):
        _checks(seeds, md2_signed(seeds.pki, seeds.pki.good))


def test_certid_hash_nobody_knows(seeds):
    """Reported: UnsupportedAlgorithm out of validate, describe and render (CertID hashAlgorithm)."""
    der = certid_hashed_with(seeds.pki, seeds.pki.good, UNKNOWN_HASH)
    with pytest.raises(CertIDMismatchError, match=f"unsupported hash {UNKNOWN_HASH}"):
        _checks(seeds, der)
    # shown as OpenSSL shows a hash it does not know: by its OID
    assert describe(der)["responses"][0]["hash_algorithm"] == UNKNOWN_HASH
    assert f"Hash Algorithm: {UNKNOWN_HASH}" in render(der)


def test_certid_hash_we_never_ask_with(seeds):
    """Reported: a cached staple re-validated (no CertID asked) with a sha224
    CertID: ValueError out of build_request, which stopped warm for all."""
    with pytest.raises(CertIDMismatchError, match="sha224"):
        _checks(seeds, certid_hashed_with(seeds.pki, seeds.pki.good, SHA224))


def _responder_name(root):
    """The byName ResponderID's Name (ResponseData's first field)."""
    return der_tree.at(root, BASIC_RESPONSE + (0, 0, 0))


@pytest.mark.parametrize("why", ["an empty RDN", "an attribute twice in one RDN"])
def test_a_responder_name_that_does_not_parse(seeds, why):
    """ValueError from response.responder_name, read lazily by validate, describe and render."""

    def edit(root):
        rdn = _responder_name(root).children[0]
        rdn.children = [] if why == "an empty RDN" else rdn.children * 2

    der = _edited(signed_response(seeds.pki, seeds.pki.good, by_name=True), edit)
    for read in (lambda: _checks(seeds, der), lambda: describe(der, "planted"), lambda: render(der, "planted")):
        with pytest.raises(MalformedResponseError, match="planted: a field of the response cannot be read"):
            read()


def test_an_extension_twice(seeds):
    """DuplicateExtension from response.extensions: validate's nonce check, describe."""

    def edit(root):
        extensions = der_tree.at(root, BASIC_RESPONSE + (0,)).children[-1].children[0]
        extensions.children *= 2

    der = _edited(signed_response(seeds.pki, seeds.pki.good, nonce=b"n" * 16), edit, seeds.sign_as_issuer)
    with pytest.raises(MalformedResponseError, match="DuplicateExtension"):
        _checks(seeds, der, nonce=b"n" * 16)
    # inspect reads the extensions as written (engine.ocsp.written), as OpenSSL
    # prints them: both copies shown, nothing raised
    assert render(der).count("OCSP Nonce") == 2


def test_a_revocation_reason_that_is_not_one(seeds):
    """CRLReason 7 (unused): ValueError from revocation_reason, in validate and,
    for a certificate not known, inspect's row."""

    def edit(root):
        der_tree.at(root, der_tree.find(root, 0x0A, b"\x01")).content = b"\x07"  # keyCompromise -> 7

    der = _edited(signed_response(seeds.pki, seeds.pki.good, cert_status="revoked"), edit, seeds.sign_as_issuer)
    with pytest.raises(MalformedResponseError, match="reason code"):
        _checks(seeds, der)
    row = inspect_entry(Entry("a" * 40, "k", der), time.time())
    assert row.flags == ("unverified", "invalid: malformed") and "reason code" in row.problem


# -- certificate files ------------------------------------------------------------


def _leaf_file(seeds, tmp_path, issued, edit) -> object:
    der = _edited(issued.der_path.read_bytes(), edit, seeds.sign_as_issuer, CERTIFICATE)
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
    path = tmp_path / "leaf.pem"
    path.write_bytes(pem + seeds.pki.intermediate.cert_path.read_bytes())
    return path


def _tls_feature_99(root):
    extension = der_tree.at(root, der_tree.find(root, OID, oid("1.3.6.1.5.5.7.1.24"))[:-1])
    extension.children[-1].children[0].children[0].content = b"\x63"  # status_request (5) -> 99


def _empty_subject_rdn(root):
    der_tree.at(root, (0, 5, 0)).children = []  # tbsCertificate.subject's first RDN


def _version_10(root):
    der_tree.at(root, (0, 0, 0)).content = b"\x0a"  # [0] EXPLICIT Version: v3 (2) -> 10


@pytest.mark.parametrize(
    "edit, said",
    [(_tls_feature_99, "KeyError: 99"), (_empty_subject_rdn, "ValueError"), (_version_10, "not a valid X509 version")],
    ids=["a TLS feature cryptography does not know", "an empty RDN in the subject", "version 10"],
)
def test_a_certificate_that_does_not_read(seeds, tmp_path, edit, said):
    """From cryptography, lazily: a KeyError (its table of TLS features), a
    ValueError (a Name); and at once an InvalidVersion (no ValueError)."""
    path = _leaf_file(seeds, tmp_path, seeds.pki.must_staple, edit)
    with pytest.raises(CertificateFileError, match=said) as raised:
        load_leaf(path)
    assert str(raised.value).startswith(f"{path}: ")


# -- the HTTP reader ------------------------------------------------------------

URL = "http://127.0.0.1:9/"
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\n"


def _read(data: bytes) -> bytes:
    try:
        return read_answer(URL, BufferReader(data, True), 65536)
    except Exception as exc:
        raise fetch_error(exc, plan(URL, b"")) or exc from None


def test_a_status_code_in_superscript_digits():
    """"2²0".isdigit() is True, int("2²0") a ValueError (the line is read as latin-1)."""
    with pytest.raises(ResponderUnreachableError, match="not an HTTP status line"):
        _read(b"HTTP/1.1 2\xb20 OK\r\n\r\n")


def test_a_content_length_of_5000_digits():
    """Past Python's 4,300-digit limit on int() of text: a ValueError."""
    with pytest.raises(ResponseTooLargeError, match="a 5000-digit number of bytes"):
        _read(HEAD + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\nbody")


def test_a_content_length_in_superscript_is_no_length():
    assert _read(HEAD + b"Content-Length: \xb2\r\n\r\nbody") == b"body"  # framed by the end of the connection


# -- cache values ---------------------------------------------------------------


def test_metadata_nested_past_the_stack():
    """RecursionError out of json.loads, for 5,000 bytes of "["."""
    assert load_meta(b"[" * 5000) == (None, "metadata is JSON nested too deeply to read")


def test_a_local_store_row_of_other_types(tmp_path):
    """TypeError comparing a text expires_at with the clock: SQLite keeps any type in any column."""
    path = tmp_path / "staples.db"
    provider = LocalProvider(path, clock=FrozenClock(1_800_000_000))
    provider.set_meta("a" * 40, {"status": "good"}, 60)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE staples SET der = x'3003', expires_at = 'soon'")
    entry = provider.get("a" * 40)
    assert entry.der == b"" and entry.problem == "local store row: expires_at is str, not what staplectl writes"
    assert [e.problem for e in provider.entries()] == [entry.problem]
    provider.close()
