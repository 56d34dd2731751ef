"""The test helpers themselves: PKI, ScriptedResponder, OpenSSLResponder.

Kept small: each check is something every engine or CLI test silently relies on.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import os
import shutil
import subprocess
import threading
import time
import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.openssl_responder import OpenSSLResponder, live_group_members
from tests.pki import PKI
from tests.responder import Behaviour, ScriptedResponder


@pytest.fixture(scope="module")
def responder(tmp_path_factory):
    responder = ScriptedResponder()
    responder.pki = PKI(tmp_path_factory.mktemp("pki"), responder.url)
    with responder:
        yield responder


@pytest.fixture
def scripted(responder):
    # One responder for the module (fast); each test starts from a clean script.
    responder.reset()
    return responder


@pytest.fixture
def openssl():
    path = shutil.which("openssl")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl not installed; CI=true requires it", pytrace=False)
        pytest.skip("openssl not installed")
    return path


def request_der(pki: PKI, leaf, nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf.cert, pki.intermediate.cert, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def post(url: str, der: bytes, timeout: float = 5) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("POST", parts.path, der, {"Content-Type": "application/ocsp-request"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def openssl_query(openssl: str, pki: PKI, leaf, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [openssl, "ocsp", "-issuer", str(pki.intermediate.cert_path), "-cert", str(leaf.cert_path),
         "-url", url, "-CAfile", str(pki.bundle_path), "-resp_text"],
        capture_output=True, text=True, timeout=10,
    )


class TestPKI:
    def test_chain_and_signers_are_issued_as_named(self, responder):
        pki = responder.pki
        pki.intermediate.cert.verify_directly_issued_by(pki.root.cert)
        for leaf in pki.leaves.values():
            leaf.cert.verify_directly_issued_by(pki.intermediate.cert)
            assert leaf.issuer is pki.intermediate
        for name in ("delegate", "delegate_no_eku", "delegate_expired"):
            getattr(pki, name).cert.verify_directly_issued_by(pki.intermediate.cert)
        pki.delegate_other_ca.cert.verify_directly_issued_by(pki.root.cert)
        pki.rogue.cert.verify_directly_issued_by(pki.rogue.cert)
        eku = pki.delegate.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.OCSP_SIGNING in eku
        with pytest.raises(x509.ExtensionNotFound):
            pki.delegate_no_eku.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        assert pki.delegate_expired.cert.not_valid_after_utc < dt.datetime.now(dt.timezone.utc)

    def test_leaves_and_files(self, responder):
        pki = responder.pki
        assert len({leaf.cert.serial_number for leaf in pki.leaves.values()}) == len(pki.leaves)
        features = pki.must_staple.cert.extensions.get_extension_for_class(x509.TLSFeature).value
        assert list(features) == [x509.TLSFeatureType.status_request]
        with pytest.raises(x509.ExtensionNotFound):
            pki.good.cert.extensions.get_extension_for_class(x509.TLSFeature)
        with pytest.raises(x509.ExtensionNotFound):
            pki.no_aia.cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
        aia = pki.good.cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        assert [d.access_location.value for d in aia] == [responder.url]
        assert pki.expired.cert.not_valid_after_utc < dt.datetime.now(dt.timezone.utc)
        assert isinstance(pki.rsa.key, rsa.RSAPrivateKey)
        san = pki.good.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["good.test"]

        chain = x509.load_pem_x509_certificates(pki.good.chain_path.read_bytes())
        assert chain == [pki.good.cert, pki.intermediate.cert]
        assert x509.load_der_x509_certificate(pki.good.der_path.read_bytes()) == pki.good.cert
        assert pki.good.key_path.stat().st_mode & 0o777 == 0o600
        bundle = x509.load_pem_x509_certificates(pki.bundle_path.read_bytes())
        assert bundle == [pki.intermediate.cert, pki.root.cert]


class TestScriptedResponder:
    def test_answers_with_the_scripted_status_and_counts(self, scripted):
        pki = scripted.pki
        scripted.script(pki.other, Behaviour(cert_status="revoked"))

        status, body = post(scripted.url, request_der(pki, pki.good, nonce=b"n" * 16))
        response = ocsp.load_der_ocsp_response(body)
        assert status == 200
        assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
        assert response.serial_number == pki.good.cert.serial_number
        assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16

        response = ocsp.load_der_ocsp_response(post(scripted.url, request_der(pki, pki.other))[1])
        assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
        assert response.revocation_reason == x509.ReasonFlags.key_compromise

        # RFC 5019 GET
        path = urllib.parse.quote(base64.b64encode(request_der(pki, pki.other)).decode(), safe="")
        connection = http.client.HTTPConnection("127.0.0.1", scripted.port, timeout=5)
        connection.request("GET", "/" + path)
        response = ocsp.load_der_ocsp_response(connection.getresponse().read())
        connection.close()
        assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
        assert scripted.last_method == "GET"

        assert scripted.request_count == 3
        assert scripted.requests_for(pki.good) == 1
        assert scripted.requests_for(pki.other.cert.serial_number) == 2
        assert scripted.requests_for(pki.rsa) == 0

    def test_pad_to_gives_an_exact_size_that_still_parses(self, scripted):
        scripted.default = Behaviour(pad_to=12_000, signer="delegate")
        _, body = post(scripted.url, request_der(scripted.pki, scripted.pki.good))
        assert len(body) == 12_000
        assert ocsp.load_der_ocsp_response(body).certificate_status == ocsp.OCSPCertStatus.GOOD

    def test_stop_returns_promptly_while_a_request_hangs(self, tmp_path):
        responder = ScriptedResponder()
        responder.pki = PKI(tmp_path, responder.url)
        responder.default = Behaviour(hang=True)
        responder.start()
        outcome: list[object] = []

        def client():
            try:
                outcome.append(post(responder.url, request_der(responder.pki, responder.pki.good), timeout=10))
            except Exception as exc:  # the dropped connection
                outcome.append(exc)

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        while responder.request_count == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert responder.request_count == 1

        started = time.monotonic()
        responder.stop()
        assert time.monotonic() - started < 2
        thread.join(timeout=2)
        assert outcome and isinstance(outcome[0], Exception)  # never answered


class TestWithOpenSSL:
    def test_openssl_responder_answers_good_and_revoked(self, openssl, tmp_path):
        pki = PKI(tmp_path / "pki", "http://127.0.0.1:1/")
        with OpenSSLResponder(pki, tmp_path / "ocsp", revoked=["other"]) as server:
            good = openssl_query(openssl, pki, pki.good, server.url)
            assert f"{pki.good.cert_path}: good" in good.stdout, good.stderr
            assert "Response verify OK" in good.stderr
            assert f"{pki.other.cert_path}: revoked" in openssl_query(openssl, pki, pki.other, server.url).stdout

            late = pki.leaf("late")
            server.add(late, revoked=True)
            assert f"{late.cert_path}: revoked" in openssl_query(openssl, pki, late, server.url).stdout
            pgid = server.pid
            assert len(live_group_members(pgid)) >= 2  # -multi: the parent and its responders
        assert live_group_members(pgid) == []

    @pytest.mark.parametrize("signer", ["issuer", "delegate"])
    def test_openssl_accepts_scripted_responses(self, openssl, scripted, signer):
        scripted.default = Behaviour(signer=signer)
        result = openssl_query(openssl, scripted.pki, scripted.pki.good, scripted.url)
        assert f"{scripted.pki.good.cert_path}: good" in result.stdout, result.stderr
        assert "Response verify OK" in result.stderr
        assert "WARNING" not in result.stderr  # openssl sends a nonce; it was echoed
