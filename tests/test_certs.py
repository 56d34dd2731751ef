"""Loading leaves and issuers, and what we know of a certificate."""

from __future__ import annotations

import hashlib

import pytest

from engine.certs import load_leaf, read_certificates
from engine.errors import CertificateFileError, IssuerNotFoundError, NoResponderURLError


def test_pem_with_chain_finds_the_issuer(pki):
    leaf = load_leaf(pki.good.chain_path)
    assert leaf.cert == pki.good.cert
    assert leaf.issuer == pki.intermediate.cert


def test_issuer_from_its_own_file(pki):
    leaf = load_leaf(pki.good.cert_path, issuer_path=pki.intermediate.cert_path)
    assert leaf.issuer == pki.intermediate.cert


def test_issuer_from_a_bundle_picks_the_right_one(pki):
    leaf = load_leaf(pki.good.cert_path, issuer_path=pki.bundle_path)
    assert leaf.issuer == pki.intermediate.cert


def test_der_leaf(pki):
    leaf = load_leaf(pki.good.der_path, issuer_path=pki.intermediate.cert_path)
    assert leaf.cert == pki.good.cert


def test_no_chain_and_no_issuer_is_a_clear_error(pki):
    with pytest.raises(IssuerNotFoundError, match=r"good\.pem.*--issuer"):
        load_leaf(pki.good.cert_path)


def test_wrong_issuer_file(pki):
    with pytest.raises(IssuerNotFoundError, match="root"):
        load_leaf(pki.good.cert_path, issuer_path=pki.root.cert_path)


def test_missing_file(tmp_path):
    with pytest.raises(CertificateFileError, match=r"nope\.pem: no such file"):
        read_certificates(tmp_path / "nope.pem")


def test_not_a_certificate(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    with pytest.raises(CertificateFileError, match=r"junk\.pem: not a certificate"):
        read_certificates(junk)


def test_a_private_key_is_not_a_certificate_and_is_not_printed(pki):
    with pytest.raises(CertificateFileError) as info:
        read_certificates(pki.good.key_path)
    assert "PRIVATE KEY" not in str(info.value)


def test_directory(tmp_path):
    with pytest.raises(CertificateFileError, match="is a directory"):
        read_certificates(tmp_path)


def test_what_we_know_of_a_leaf(pki):
    leaf = load_leaf(pki.good.chain_path)
    assert leaf.cert_id == hashlib.sha1(pki.good.der_path.read_bytes()).hexdigest()
    assert leaf.serial == pki.good.cert.serial_number
    assert leaf.serial_hex == format(pki.good.cert.serial_number, "X")
    assert "CN=good" in leaf.subject
    assert leaf.not_after == pki.good.cert.not_valid_after_utc.timestamp()
    assert leaf.responder_url() == pki.ocsp_url
    assert not leaf.must_staple


def test_must_staple(pki):
    assert load_leaf(pki.must_staple.chain_path).must_staple


def test_no_aia_needs_an_override(pki):
    leaf = load_leaf(pki.no_aia.chain_path)
    with pytest.raises(NoResponderURLError, match="no OCSP URL.*--url"):
        leaf.responder_url()
    assert load_leaf(pki.no_aia.chain_path, url_override="http://127.0.0.1:1/").responder_url() == "http://127.0.0.1:1/"


def test_override_wins_over_aia(pki):
    leaf = load_leaf(pki.good.chain_path, url_override="http://127.0.0.1:9/ocsp")
    assert leaf.responder_url() == "http://127.0.0.1:9/ocsp"
