"""Hashes and signature algorithms: a CertID under any hash is matched for
what it is, and what cryptography cannot compute is an engine error, never
a raw exception."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from engine.errors import CertIDMismatchError, IssuerNotFoundError, SignatureError
from engine.ocsp import der
from engine.ocsp.certs import load_leaf, read_certificates
from engine.ocsp.request import build_request, key_hash
from engine.ocsp.validate import validate
from tests.corpus_cases import CORPUS, Case, cases, subject
from tests.resigning import parts, resigned

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def answer(pki, *algorithms: hashes.HashAlgorithm) -> bytes:
    """One response about the good leaf under each CertID hash, in order."""
    builder = ocsp.OCSPResponseBuilder()
    for algorithm in algorithms:
        builder = builder.add_response(
            cert=pki.good.cert, issuer=pki.intermediate.cert, algorithm=algorithm,
            cert_status=ocsp.OCSPCertStatus.GOOD, this_update=NOW - dt.timedelta(minutes=1),
            next_update=NOW + dt.timedelta(days=1), revocation_time=None, revocation_reason=None,
        )  # fmt: skip
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, pki.intermediate.cert)
    return builder.sign(pki.intermediate.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("algorithm", [hashes.SHA224(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()], ids=lambda a: a.name)
def test_a_cached_staple_is_matched_under_its_own_certid_hash(pki, algorithm):
    # re-validating a cached staple: no CertID asked with, so the leaf's is
    # computed under the response's hash (SHA-224 used to raise ValueError)
    leaf = load_leaf(pki.good.chain_path)
    assert validate(answer(pki, algorithm), leaf, NOW.timestamp()).good


def test_the_certid_asked_with_is_matched_exactly(pki):
    # httpd finds a staple's status by the SHA-1 CertID it builds: an answer
    # under another hash only would be a staple it cannot use
    leaf = load_leaf(pki.good.chain_path)
    asked = build_request(leaf).cert_id
    with pytest.raises(CertIDMismatchError, match="under sha256 only, where sha1 was asked"):
        validate(answer(pki, hashes.SHA256()), leaf, NOW.timestamp(), cert_id=asked)
    # among several answers, the one under the hash asked with is found
    first = answer(pki, hashes.SHA512())
    both = resigned(pki, first, appending(first, answer(pki, hashes.SHA1())))
    assert [s.hash_algorithm.name for s in ocsp.load_der_ocsp_response(both).responses] == ["sha512", "sha1"]
    staple = validate(both, leaf, NOW.timestamp(), cert_id=asked)
    assert staple.serial_number == pki.good.cert.serial_number


def responses_of(response: bytes) -> bytes:
    """The content of ResponseData's responses: its SingleResponses."""
    tbs = parts(response)[0]
    _, start, end = der.header(tbs, 0)
    fields = der.children(tbs, start, end)
    return tbs[fields[2][2] : fields[2][3]]


def appending(response: bytes, other: bytes):
    """An edit for tests.resigning.resigned: ``other``'s SingleResponses after ``response``'s."""
    mine, theirs = responses_of(response), responses_of(other)
    return lambda tag, content: content + theirs if tag == 0x30 and content == mine else content


def corpus_case(name: str) -> Case:
    return next(c for c in cases() if c.name == name)


def test_a_certid_hash_nobody_knows_is_no_match():
    # DigiCert's response with its CertID hash OID changed (cryptography_vectors)
    case = corpus_case("vectors-digicert-unknown-hash")
    leaf, cert_id = subject(case)
    for asked in (cert_id, None):  # fetched, or cached and re-validated
        with pytest.raises(CertIDMismatchError, match="unsupported hash 1.3.14.3.2.26.17"):
            validate(case.der, leaf, case.at or 0, cert_id=asked)


def test_a_signature_algorithm_nobody_verifies_is_a_signature_error():
    # Let's Encrypt's response relabelled md2WithRSAEncryption (cryptography_vectors)
    case = corpus_case("vectors-md2-signature-oid")
    leaf, cert_id = subject(case)
    with pytest.raises(SignatureError, match=r"1\.2\.840\.113549\.1\.1\.2, a signature algorithm we cannot verify"):
        validate(case.der, leaf, case.at or 0, cert_id=cert_id)


def test_a_key_cryptography_cannot_load_still_has_a_key_hash_and_verifies_nothing():
    # Botan's SLH-DSA test PKI: cryptography 50 does not load SLH-DSA keys
    root = read_certificates(CORPUS / "botan" / "slhdsa_root.pem")[0]
    response = ocsp.load_der_ocsp_response((CORPUS / "botan" / "slhdsa_ocsp.der").read_bytes())
    assert key_hash(root, "sha1") == response.issuer_key_hash  # read from the certificate's DER
    with pytest.raises(IssuerNotFoundError):
        load_leaf(CORPUS / "botan" / "slhdsa_ee.pem", issuer_path=CORPUS / "botan" / "slhdsa_root.pem")
