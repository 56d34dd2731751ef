"""Loading leaves and issuers, and what we know of a certificate."""

from __future__ import annotations

import hashlib

import pytest

from engine.ocsp.certs import load_leaf, read_certificates, serial_text
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
    assert leaf.serial_hex == serial_text(pki.good.cert.serial_number)
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


# -- choosing the issuer: by name and key identifier, else by signature ----------------


def _cert(subject, issuer_name, key, signing_key, *, ski=None, aki=None, ca=False):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ski is not None:
        builder = builder.add_extension(x509.SubjectKeyIdentifier(ski), critical=False)
    if aki is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _chain_file(path, *certs):
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


def _key_id(cert):
    from cryptography import x509

    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.key_identifier


def test_the_issuer_named_by_key_identifier_is_chosen_among_others(pki, tmp_path):
    # the root first: same chain, but not the leaf's issuer by name or key identifier
    path = _chain_file(tmp_path / "chain.pem", pki.good.cert, pki.root.cert, pki.intermediate.cert)
    assert load_leaf(path).issuer == pki.intermediate.cert


def test_an_impostor_with_the_issuers_name_and_key_identifier_is_never_chosen(pki, tmp_path):
    """A forged "issuer" copying the real one's name and key identifier, with
    a key of its own, would vouch for responses signed with that key: an
    issuer is chosen only once its key verified the leaf."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from engine.errors import IssuerNotFoundError

    impostor_key = ec.generate_private_key(ec.SECP256R1())
    impostor = _cert("intermediate", pki.root.cert.subject, impostor_key, impostor_key,
                     ski=_key_id(pki.intermediate.cert), ca=True)  # fmt: skip
    assert impostor.subject == pki.intermediate.cert.subject
    # first in the chain, the impostor is passed over for the real issuer
    path = _chain_file(tmp_path / "chain.pem", pki.good.cert, impostor, pki.intermediate.cert)
    assert load_leaf(path).issuer == pki.intermediate.cert
    # alone, it is no issuer at all
    alone = _chain_file(tmp_path / "alone.pem", pki.good.cert, impostor)
    with pytest.raises(IssuerNotFoundError):
        load_leaf(alone)
    # the operator's own issuer file wins over what the chain holds
    issuer_file = _chain_file(tmp_path / "issuer.pem", pki.intermediate.cert)
    assert load_leaf(alone, issuer_path=issuer_file).issuer == pki.intermediate.cert


def test_without_key_identifiers_the_signature_decides(pki, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    other_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert("bare-leaf", pki.intermediate.cert.subject, key, pki.intermediate.key)  # no AKI
    same_name = _cert("intermediate", pki.root.cert.subject, other_key, other_key, ca=True)
    path = _chain_file(tmp_path / "chain.pem", leaf, same_name, pki.intermediate.cert)
    assert load_leaf(path).issuer == pki.intermediate.cert


def test_a_key_identifier_naming_no_candidate_falls_back_to_the_signature(pki, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert("odd-aki", pki.intermediate.cert.subject, key, pki.intermediate.key, aki=b"\x01" * 20)
    path = _chain_file(tmp_path / "chain.pem", leaf, pki.intermediate.cert)
    assert load_leaf(path).issuer == pki.intermediate.cert
    with pytest.raises(IssuerNotFoundError, match=r"issuer of CN=odd-aki not found among the 1 chain certificate"):
        load_leaf(_chain_file(tmp_path / "wrong.pem", leaf, pki.root.cert))


@pytest.mark.parametrize("key_type", ["rsa:2048", "ec"])
def test_a_sha1_signature_is_checked_not_refused(tmp_path, key_type):
    """CAs signed delegated responder certificates with SHA-1 for years, and
    OpenSSL accepts them; cryptography's verify_directly_issued_by refuses
    them (and will not even sign one, so openssl does it here)."""
    import subprocess

    from cryptography import x509

    from engine.ocsp.issuers import issued_by

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    new_key = ["-newkey", key_type] if key_type != "ec" else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    for name in ("ca", "other"):
        openssl("req", "-x509", *new_key, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
                "-subj", "/CN=sha1 ca", "-days", "2")  # fmt: skip
    openssl("req", "-new", *new_key, "-nodes", "-keyout", "r.key", "-out", "r.csr", "-subj", "/CN=responder")
    for name in ("ca", "other"):
        openssl("x509", "-req", "-in", "r.csr", "-CA", f"{name}.pem", "-CAkey", f"{name}.key", "-CAcreateserial",
                "-out", f"by-{name}.pem", "-sha1", "-days", "1")  # fmt: skip
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    signed = x509.load_pem_x509_certificate((tmp_path / "by-ca.pem").read_bytes())
    forged = x509.load_pem_x509_certificate((tmp_path / "by-other.pem").read_bytes())  # same names, other key
    assert signed.signature_hash_algorithm.name == "sha1"
    assert issued_by(signed, ca)
    assert not issued_by(forged, ca)


def test_serials_read_as_openssl_prints_them(pki):
    """09FAC1, not 9FAC1: what an operator compares with openssl x509 -serial."""
    import subprocess

    from tests.corpus_cases import openssl_binary

    assert serial_text(0x9FAC1) == "09FAC1" and serial_text(0x9FAC) == "9FAC" and serial_text(0) == "00"
    for name in ("good", "other", "rsa"):
        issued = pki.leaves[name]
        said = subprocess.run([openssl_binary(), "x509", "-noout", "-serial", "-in", str(issued.cert_path)],
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        assert said == f"serial={load_leaf(issued.chain_path).serial_hex}"


def test_names_read_off_the_der_are_cryptographys_byte_for_byte(pki):
    """tbs_names reads the issuer and subject by hand (a CertID hashes the
    issuer name; find_issuer compares names): the same bytes cryptography
    gives, for every certificate of the test PKI and the real ones of the corpus."""

    from cryptography.hazmat.primitives.serialization import Encoding

    from engine.ocsp.issuers import tbs_names

    certs = _every_certificate(pki)
    assert len(certs) > 40
    for cert in certs:
        assert tbs_names(cert.public_bytes(Encoding.DER)) == (cert.issuer.public_bytes(), cert.subject.public_bytes())


def test_a_leaf_loaded_without_its_der_is_the_same_leaf(pki):
    """What the prefetch service holds (keep_der=False) reads as the full leaf does."""
    full = load_leaf(pki.good.chain_path)
    light = load_leaf(pki.good.chain_path, keep_der=False)
    assert light.der is None
    assert full.der is not None
    for field in ("cert_id", "serial", "not_after", "must_staple", "aia_urls", "issuer_name", "subject", "name"):
        assert getattr(light, field) == getattr(full, field), field
    assert light == full
    assert hash(light) == hash(full)
    assert light.cert == pki.good.cert  # read from its file again
    moved = light.replace(url_override="http://127.0.0.1:1/")
    assert moved.der is None
    assert moved.cert_id == full.cert_id


def test_a_leaf_without_its_der_reads_only_the_certificate_it_was_loaded_from(pki, tmp_path):
    """Its file since replaced (a renewal before the reload): the new
    certificate is not passed off as the one loaded."""
    path = tmp_path / "site.pem"
    path.write_bytes(pki.good.chain_path.read_bytes())
    light = load_leaf(path, keep_der=False)
    path.write_bytes(pki.other.chain_path.read_bytes())
    with pytest.raises(CertificateFileError, match=r"site\.pem: holds another certificate"):
        light.cert  # noqa: B018
    assert "CN=good" in light.subject  # kept: staple metadata never reads the file


def test_a_leaf_without_its_der_needs_a_file():
    from engine.ocsp.certs import Leaf

    with pytest.raises(ValueError, match="needs the file"):
        Leaf(None, None, keep_der=False)  # type: ignore[arg-type]


def test_the_signed_part_sliced_off_the_der_is_cryptographys_byte_for_byte(pki):
    """signed_part slices tbsCertificate off the DER (find_issuer verifies the
    leaf's signature over it): the bytes tbs_certificate_bytes writes."""

    from cryptography.hazmat.primitives.serialization import Encoding

    from engine.ocsp.issuers import signed_part

    certs = _every_certificate(pki)
    for cert in certs:
        assert signed_part(cert.public_bytes(Encoding.DER)) == cert.tbs_certificate_bytes


def test_a_shared_issuer_is_found_by_identity_and_an_equal_copy_by_its_der(pki):
    """The caches find the shared issuer object by identity, and a copy equal
    by DER (a fresh parse) still by the lru_cache behind: the same answers."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from engine.ocsp.issuers import fingerprint, subject_der

    issuer = pki.intermediate.cert
    copy = x509.load_der_x509_certificate(issuer.public_bytes(Encoding.DER))
    assert copy is not issuer
    assert subject_der(issuer) == subject_der(copy) == issuer.subject.public_bytes()
    assert fingerprint(issuer) == fingerprint(copy) == hashlib.sha256(issuer.public_bytes(Encoding.DER)).digest()
    assert subject_der(pki.root.cert) == pki.root.cert.subject.public_bytes()


def _every_certificate(pki):
    """The test PKI's certificates and every one in the corpus (real CAs' among them)."""
    from pathlib import Path

    from cryptography import x509

    corpus = Path(__file__).resolve().parent / "corpus"
    certs = [getattr(pki, name).cert for name in ("root", "intermediate", "good", "must_staple", "no_aia")]
    for path in sorted(corpus.rglob("*.pem")):
        data = path.read_bytes()
        if b"-----BEGIN CERTIFICATE-----" in data:
            certs += x509.load_pem_x509_certificates(data)
    return certs
