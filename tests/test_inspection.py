"""engine.inspection and engine.ocsp.response_text: entries -> rows, responses -> text.

Responses are built here with cryptography and the test PKI's keys, so each
case (tryLater, expired, bad signature, delegate...) is exact and offline.
The text rendering is compared with what `openssl ocsp -resp_text` prints.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from engine.ocsp.certs import load_leaf, serial_text
from engine.refresh.freshness import DEFAULT_POLICY
from engine.inspection import Found, KnownCertificates, inspect_entry
from engine.ocsp.certs import cert_sha1
from engine.store.providers.base import Entry
from engine.ocsp.response_text import describe, render
from engine.refresh.worker_state import CertState
from tests.pki import PKI

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
T = NOW.timestamp()


def response_der(
    pki: PKI,
    issued,
    *,
    cert_status: str = "good",
    this_update: float = -60,
    next_update: float | None = 86400,
    signer=None,
    corrupt: bool = False,
    nonce: bytes | None = None,
    status: ocsp.OCSPResponseStatus | None = None,
) -> bytes:
    """A DER OCSPResponse about ``issued``; times are seconds from NOW."""
    if status is not None:
        return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)
    signer = signer or pki.intermediate
    revoked = cert_status == "revoked"
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=issued.cert,
        issuer=pki.intermediate.cert,
        algorithm=hashes.SHA1(),
        cert_status={"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
                     "unknown": ocsp.OCSPCertStatus.UNKNOWN}[cert_status],
        this_update=NOW + dt.timedelta(seconds=this_update),
        next_update=None if next_update is None else NOW + dt.timedelta(seconds=next_update),
        revocation_time=NOW - dt.timedelta(hours=1) if revoked else None,
        revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH if signer is pki.intermediate else ocsp.OCSPResponderEncoding.NAME, signer.cert)
    if signer is not pki.intermediate:
        builder = builder.certificates([signer.cert])
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    response = builder.sign(signer.key, hashes.SHA256())
    der = response.public_bytes(serialization.Encoding.DER)
    if corrupt:
        at = der.rindex(response.signature) + len(response.signature) - 1
        der = der[:at] + bytes([der[at] ^ 0x01]) + der[at + 1 :]
    return der


def sha1(issued) -> str:
    return hashlib.sha1(issued.der_path.read_bytes()).hexdigest()


def entry(issued, der: bytes, flag: int = 1, meta=None) -> Entry:
    cert_id = sha1(issued)
    return Entry(cert_id=cert_id, key=f"mod_ssl-staple:{cert_id}", der=der, flag=flag, meta=meta)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"), "http://127.0.0.1:9/")


@pytest.fixture(scope="module")
def good(pki):
    return load_leaf(pki.good.chain_path)


def known(leaf) -> Found:
    return Found(leaf=leaf, path=str(leaf.path))


class TestRows:
    def test_good_known_certificate(self, pki, good):
        row = inspect_entry(entry(pki.good, response_der(pki, pki.good)), T, found=known(good))
        assert row.valid and row.flags == ()
        assert row.status == "good" and row.response_status == "successful"
        assert row.cert == str(pki.good.chain_path) and row.subject == "CN=good"
        assert row.serial == serial_text(pki.good.cert.serial_number)
        assert row.this_update == T - 60 and row.next_update == T + 86400
        assert row.time_left == 86400 and row.age == 60

    def test_unknown_certificate_is_decoded_and_unverified(self, pki):
        row = inspect_entry(entry(pki.good, response_der(pki, pki.good)), T)
        assert row.valid and row.flags == ("unverified",)
        assert row.cert is None and row.subject is None
        assert row.serial == serial_text(pki.good.cert.serial_number)  # from the response itself

    def test_error_entry(self, pki):
        der = response_der(pki, pki.good, status=ocsp.OCSPResponseStatus.TRY_LATER)
        row = inspect_entry(entry(pki.good, der, flag=0), T)
        assert not row.valid and row.flags == ("error-entry",)
        assert row.status == "try_later" and row.entry_flag == 0

    def test_error_entry_with_a_successful_response(self, pki, good):
        row = inspect_entry(entry(pki.good, response_der(pki, pki.good), flag=0), T, found=known(good))
        assert not row.valid and row.flags == ("error-entry",)

    @pytest.mark.parametrize("status", [ocsp.OCSPResponseStatus.TRY_LATER, ocsp.OCSPResponseStatus.INTERNAL_ERROR])
    def test_fake_try_later_cached_as_valid(self, pki, status):
        row = inspect_entry(entry(pki.good, response_der(pki, pki.good, status=status)), T)
        assert not row.valid and row.flags == ("try-later",)
        assert row.problem.startswith("responseStatus is")

    def test_bad_signature_names_the_check(self, pki, good):
        row = inspect_entry(entry(pki.good, response_der(pki, pki.good, corrupt=True)), T, found=known(good))
        assert not row.valid and row.flags == ("invalid: bad_signature",)
        assert "signature does not verify" in row.problem
        assert row.status == "good" and row.this_update is not None  # still decoded for display

    def test_rogue_signer(self, pki, good):
        row = inspect_entry(entry(pki.good, response_der(pki, pki.good, signer=pki.rogue)), T, found=known(good))
        assert row.flags == ("invalid: unauthorized_responder",)

    def test_delegate_is_valid(self, pki, good):
        row = inspect_entry(entry(pki.good, response_der(pki, pki.good, signer=pki.delegate)), T, found=known(good))
        assert row.valid, row.problem

    def test_response_for_another_certificate(self, pki, good):
        der = response_der(pki, pki.other)
        row = inspect_entry(entry(pki.good, der), T, found=known(good))
        assert row.flags == ("invalid: certid_mismatch",)

    def test_expired(self, pki, good):
        der = response_der(pki, pki.good, this_update=-7200, next_update=-3600)
        row = inspect_entry(entry(pki.good, der), T, found=known(good))
        assert not row.valid and row.flags == ("expired",) and row.time_left == -3600

    def test_not_yet_valid(self, pki, good):
        der = response_der(pki, pki.good, this_update=3600, next_update=7200)
        row = inspect_entry(entry(pki.good, der), T, found=known(good))
        assert not row.valid and row.flags == ("not-yet-valid",)

    def test_due(self, pki, good):
        der = response_der(pki, pki.good, this_update=-3000, next_update=600)
        row = inspect_entry(entry(pki.good, der), T, found=known(good))
        assert row.valid and row.flags == ("due",)

    def test_no_next_update_uses_max_age(self, pki, good):
        der = response_der(pki, pki.good, this_update=-(DEFAULT_POLICY.max_age + 10), next_update=None)
        row = inspect_entry(entry(pki.good, der), T, found=known(good))
        assert row.flags == ("expired",) and row.next_update is None

    def test_revoked_is_valid_and_says_so(self, pki, good):
        row = inspect_entry(entry(pki.good, response_der(pki, pki.good, cert_status="revoked")), T, found=known(good))
        assert row.valid and row.status == "revoked"

    def test_garbage(self, pki):
        row = inspect_entry(entry(pki.good, b"not an ocsp response"), T)
        assert not row.valid and row.flags == ("invalid: malformed",)
        assert "not a DER OCSPResponse" in row.problem

    def test_metadata_only(self, pki):
        meta = {"subject": "CN=good", "serial": "AB", "cert_path": "/x.pem"}
        row = inspect_entry(entry(pki.good, b"", meta=meta), T)
        assert not row.valid and row.flags == ("metadata-only",)
        assert row.subject == "CN=good" and row.serial == "AB" and row.status is None

    def test_to_dict_is_plain_json(self, pki, good):
        state = CertState(cert_id=sha1(pki.good), name="good", failures=2, last_error="boom", next_attempt=T + 60)
        row = inspect_entry(entry(pki.good, response_der(pki, pki.good)), T, found=known(good), state=state)
        data = row.to_dict()
        assert data["this_update"].endswith("Z") and data["time_left_seconds"] == 86400
        assert data["flags"] == [] and data["valid"] is True
        assert (data["failures"], data["last_error"]) == (2, "boom")
        for key in ("cache_key", "cert_sha1", "serial", "status", "this_update", "next_update", "produced_at", "valid", "cert"):
            assert key in data


class TestKnownCertificates:
    def test_configured_first(self, good):
        found = KnownCertificates([good]).find(good.cert_id)
        assert found.leaf is good

    def test_metadata_path_is_loaded_and_matched(self, pki):
        cert_id = sha1(pki.good)
        found = KnownCertificates().find(cert_id, [str(pki.good.chain_path)])
        assert found.leaf is not None and found.leaf.cert_id == cert_id

    def test_a_file_now_holding_another_certificate_is_not_used(self, pki):
        found = KnownCertificates().find(sha1(pki.good), [str(pki.other.chain_path)])
        assert found.leaf is None and "now holds another certificate" in found.note

    def test_file_without_issuer_gives_the_certificate_only(self, pki):
        found = KnownCertificates().find(sha1(pki.good), [str(pki.good.cert_path)])
        assert found.leaf is None and cert_sha1(found.cert) == sha1(pki.good)
        assert "issuer not found" in found.note

    def test_missing_file(self, tmp_path, pki):
        found = KnownCertificates().find(sha1(pki.good), [str(tmp_path / "gone.pem")])
        assert found.leaf is None and "no such file" in found.note


class TestResponseText:
    def test_describe(self, pki):
        der = response_der(pki, pki.good, signer=pki.delegate, nonce=b"\x01" * 16)
        data = describe(der)
        assert data["response_status"] == "successful"
        assert data["responder_id"] == {"name": "CN=delegate"}
        (single,) = data["responses"]
        assert single["serial"] == serial_text(pki.good.cert.serial_number)
        assert single["hash_algorithm"] == "sha1" and single["cert_status"] == "good"
        assert single["this_update"].endswith("Z")
        assert data["extensions"][0]["name"] == "OCSP Nonce"
        assert data["extensions"][0]["value"] == "0410" + "01" * 16
        assert data["certificates"][0]["subject"] == "CN=delegate"

    def test_describe_unsuccessful(self, pki):
        der = response_der(pki, pki.good, status=ocsp.OCSPResponseStatus.TRY_LATER)
        assert describe(der) == {"response_status": "try_later", "response_status_code": 3}
        assert "OCSP Response Status: trylater (0x3)" in render(der)

    @pytest.mark.parametrize("case", ["good-by-key", "revoked-by-name-with-nonce"])
    def test_render_matches_openssl(self, pki, tmp_path, case):
        if case == "good-by-key":
            der = response_der(pki, pki.good)
        else:
            der = response_der(pki, pki.good, cert_status="revoked", signer=pki.delegate, nonce=b"\x02" * 16)
        path = tmp_path / "r.der"
        path.write_bytes(der)
        done = subprocess.run(
            ["openssl", "ocsp", "-respin", str(path), "-resp_text", "-noverify"], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        ours = render(der).splitlines()
        theirs = [line.rstrip() for line in done.stdout.splitlines()]
        # Everything up to the certificates is laid out line for line as
        # openssl does, a responder's name spelled as openssl spells it
        # (tests/test_corpus_text.py holds real responses to the same).
        cut = theirs.index("Certificate:") if "Certificate:" in theirs else len(theirs)
        assert [line.rstrip() for line in ours[:cut]] == theirs[:cut]


def test_headless_modules_import_no_ui():
    # the dashboard reuses these: they must not drag in the CLI or a UI toolkit
    import sys

    code = (
        "import sys, engine.inspection, engine.ocsp.response_text\n"
        "print(sorted({'staplectl', 'typer', 'rich', 'textual'} & {m.split('.')[0] for m in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
