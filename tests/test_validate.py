"""Fetch and validation against the scripted responder: every way an answer
can be wrong has its own error class and a message naming the check."""

from __future__ import annotations

from dataclasses import replace

from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from engine import errors
from engine.ocsp.certs import load_leaf
from engine.clock import FrozenClock, SYSTEM_CLOCK
from engine.refresh.fetch import FetchOptions, fetch
from engine.ocsp.request import build_request
from engine.ocsp.staple import GOOD, REVOKED, UNKNOWN
from engine.responders.transport import TransportOptions, post
from engine.ocsp.validate import ValidationOptions, validate
from tests.loopback import FETCH, TRANSPORT, local
from tests.responder import Behaviour


@pytest.fixture
def leaf(pki):
    return load_leaf(pki.good.chain_path)


def answer(responder, pki, behaviour, options=FETCH, name="good"):
    issued = pki.leaves[name]
    responder.script(issued, behaviour)
    return fetch(load_leaf(issued.chain_path), replace(options, transport=local(options.transport)))


class TestGoodAnswers:
    def test_good_signed_by_the_issuer(self, responder, pki, leaf):
        staple = fetch(leaf, FETCH)
        assert staple.status == GOOD
        assert staple.serial_number == pki.good.cert.serial_number
        assert staple.this_update < staple.next_update
        assert responder.requests_for(pki.good) == 1
        request = responder.last_request
        assert request.hash_algorithm.name == "sha1"  # what httpd matches on

    def test_good_signed_by_a_delegate(self, responder, pki):
        assert answer(responder, pki, Behaviour(signer="delegate")).status == GOOD

    def test_responder_id_by_name(self, responder, pki):
        assert answer(responder, pki, Behaviour(responder_id="name")).status == GOOD

    def test_responder_id_by_name_of_a_delegate(self, responder, pki):
        assert answer(responder, pki, Behaviour(signer="delegate", responder_id="name")).status == GOOD

    def test_rsa_leaf(self, responder, pki):
        assert answer(responder, pki, Behaviour(), name="rsa").status == GOOD

    def test_revoked_is_valid_but_not_good(self, responder, pki):
        staple = answer(responder, pki, Behaviour(cert_status="revoked"))
        assert staple.status == REVOKED
        assert staple.revocation_time is not None
        assert staple.revocation_reason == "key_compromise"

    def test_unknown_is_valid_but_not_good(self, responder, pki):
        assert answer(responder, pki, Behaviour(cert_status="unknown")).status == UNKNOWN

    def test_nonce_round_trip(self, responder, pki):
        staple = answer(responder, pki, Behaviour(), FetchOptions(nonce=True))
        assert staple.status == GOOD
        assert responder.last_request.extensions.get_extension_for_class(x509.OCSPNonce)

    def test_get_request(self, responder, pki):
        answer(responder, pki, Behaviour(), FetchOptions(transport=TransportOptions(use_get=True)))
        assert responder.last_method == "GET"

    def test_sha256_certid_when_asked(self, responder, pki):
        assert answer(responder, pki, Behaviour(), FetchOptions(hash_name="sha256")).status == GOOD
        assert responder.last_request.hash_algorithm.name == "sha256"

    def test_no_next_update_within_max_age(self, responder, pki):
        staple = answer(responder, pki, Behaviour(next_update_offset=None))
        assert staple.next_update is None


@pytest.mark.parametrize(
    ("behaviour", "error", "message"),
    [
        (Behaviour(response_status="try_later"), errors.ResponseStatusError, "responseStatus is try_later"),
        (Behaviour(response_status="internal_error"), errors.ResponseStatusError, "internal_error"),
        (Behaviour(response_status="unauthorized"), errors.ResponseStatusError, "unauthorized"),
        (Behaviour(response_status="malformed_request"), errors.ResponseStatusError, "malformed_request"),
        (Behaviour(response_status="sig_required"), errors.ResponseStatusError, "sig_required"),
        (Behaviour(signer="rogue"), errors.UnauthorizedResponderError, "not issued by the certificate's issuer"),
        (Behaviour(corrupt_signature=True), errors.SignatureError, "signature does not verify"),
        (Behaviour(signer="delegate_no_eku"), errors.ResponderCertificateError, "lacks the OCSPSigning"),
        (Behaviour(signer="delegate_expired"), errors.ResponderCertificateError, "is not valid now"),
        (Behaviour(signer="delegate_other_ca"), errors.UnauthorizedResponderError, "not issued by"),
        (Behaviour(wrong_certid=True), errors.CertIDMismatchError, "different certificate"),
        (Behaviour(this_update_offset=3600), errors.NotYetValidError, "thisUpdate .* is in the future"),
        (Behaviour(this_update_offset=-7200, next_update_offset=-3600), errors.ExpiredResponseError, "nextUpdate .* has passed"),
        (Behaviour(this_update_offset=-7200, next_update_offset=None), errors.TooOldError, "no nextUpdate"),
        (Behaviour(pad_to=70_000), errors.ResponseTooLargeError, "exceeds the cap"),
        (Behaviour(content_type="text/plain"), errors.ContentTypeError, "text/plain"),
        (Behaviour(http_status=500), errors.ResponderHTTPError, "HTTP 500"),
        (Behaviour(http_status=404), errors.ResponderHTTPError, "HTTP 404"),
        (Behaviour(redirect_to="http://127.0.0.1:1/"), errors.RedirectRefusedError, "redirect"),
        (Behaviour(body=b"not DER at all"), errors.MalformedResponseError, "not a DER OCSPResponse"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_bad_answers(responder, pki, behaviour, error, message):
    with pytest.raises(error, match=message):
        answer(responder, pki, behaviour)


def test_each_failure_class_is_distinct():
    # no class doubles as another: a front end can tell every failure apart
    classes = [
        errors.ResponseStatusError, errors.CertIDMismatchError, errors.SignatureError,
        errors.UnauthorizedResponderError, errors.ResponderCertificateError, errors.NotYetValidError,
        errors.ExpiredResponseError, errors.TooOldError, errors.NonceMismatchError,
        errors.BeyondCertificateError, errors.MalformedResponseError,
    ]
    assert len({c.reason for c in classes}) == len(classes)
    assert all(issubclass(c, errors.ValidationError) for c in classes)


def test_expired_within_skew_is_valid_but_never_stored(responder, pki):
    # RFC 6960 tolerance lets validate() accept it; fetch() refuses to hand
    # back a staple nobody may serve
    with pytest.raises(errors.ExpiredResponseError, match="already passed"):
        answer(responder, pki, Behaviour(next_update_offset=-10))


def test_nonce_omitted_when_we_sent_one(responder, pki):
    with pytest.raises(errors.NonceMismatchError, match="carries none"):
        answer(responder, pki, Behaviour(nonce="omit"), FetchOptions(nonce=True))


def test_wrong_nonce(responder, pki):
    with pytest.raises(errors.NonceMismatchError, match="does not match"):
        answer(responder, pki, Behaviour(nonce="wrong"), FetchOptions(nonce=True))


def test_hanging_responder_times_out(responder, pki):
    with pytest.raises(errors.ResponderTimeoutError, match="within 0.5 s"):
        answer(responder, pki, Behaviour(hang=True), FetchOptions(transport=TransportOptions(timeout=0.5)))


def test_slow_responder_within_the_deadline(responder, pki):
    staple = answer(responder, pki, Behaviour(delay=0.2), FetchOptions(transport=TransportOptions(timeout=5)))
    assert staple.status == GOOD


def test_no_responder_url(pki):
    with pytest.raises(errors.NoResponderURLError):
        fetch(load_leaf(pki.no_aia.chain_path), FETCH)


class TestTimeWithInjectedClock:
    """The same response judged at different moments, no sleeping."""

    @pytest.fixture
    def der(self, responder, pki, leaf):
        return post(pki.ocsp_url, build_request(leaf).der, TRANSPORT)

    def test_valid_now(self, der, leaf):
        assert validate(der, leaf, SYSTEM_CLOCK.now()).status == GOOD

    def test_expired_a_day_later_beyond_skew(self, der, leaf):
        staple = validate(der, leaf, SYSTEM_CLOCK.now())
        clock = FrozenClock(staple.next_update + 301)
        with pytest.raises(errors.ExpiredResponseError):
            validate(der, leaf, clock.now())
        # within the skew it still validates (the responder's clock may differ)
        assert validate(der, leaf, staple.next_update + 299).status == GOOD

    def test_not_yet_valid_before_this_update_minus_skew(self, der, leaf):
        staple = validate(der, leaf, SYSTEM_CLOCK.now())
        with pytest.raises(errors.NotYetValidError):
            validate(der, leaf, staple.this_update - 301)

    def test_next_update_after_not_after_refused_only_when_asked(self, responder, pki):
        # a certificate that ends in an hour, a response valid for a day
        issued = pki.leaf("ends_soon", not_after=datetime.now(timezone.utc) + timedelta(hours=1))
        leaf = load_leaf(issued.chain_path)
        der = post(pki.ocsp_url, build_request(leaf).der, TRANSPORT)
        now = SYSTEM_CLOCK.now()
        assert validate(der, leaf, now).status == GOOD
        with pytest.raises(errors.BeyondCertificateError, match="after the certificate's notAfter"):
            validate(der, leaf, now, options=ValidationOptions(check_not_after=True))

    def test_signature_checked_on_the_bytes(self, der, leaf):
        tampered = bytearray(der)
        tampered[-5] ^= 0xFF
        with pytest.raises((errors.SignatureError, errors.MalformedResponseError)):
            validate(bytes(tampered), leaf, SYSTEM_CLOCK.now())

    def test_response_for_another_leaf(self, der, pki):
        other = load_leaf(pki.other.chain_path)
        with pytest.raises(errors.CertIDMismatchError):
            validate(der, other, SYSTEM_CLOCK.now())


def test_unsuccessful_status_parses(pki):
    response = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
    der = response.public_bytes(serialization.Encoding.DER)
    with pytest.raises(errors.ResponseStatusError) as info:
        validate(der, load_leaf(pki.good.chain_path), SYSTEM_CLOCK.now())
    assert info.value.status == "try_later"
    assert info.value.temporary


def _signed_by_issuer_naming(pki, responder_cert: x509.Certificate) -> bytes:
    """A good response for pki.good, signed with the issuer's key, whose
    ResponderID is ``responder_cert``'s subject (byName)."""
    now = datetime.now(timezone.utc)
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=pki.good.cert, issuer=pki.intermediate.cert, algorithm=hashes.SHA1(),
            cert_status=ocsp.OCSPCertStatus.GOOD, this_update=now - timedelta(minutes=1),
            next_update=now + timedelta(days=1), revocation_time=None, revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.NAME, responder_cert)
        .sign(pki.intermediate.key, hashes.SHA256())
    )
    return response.public_bytes(serialization.Encoding.DER)


def _named(pki, name: x509.Name) -> x509.Certificate:
    """A throwaway certificate named ``name`` with the issuer's public key
    (what OCSPResponseBuilder checks): only its name ends up in the response."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pki.intermediate.key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip


def test_responder_name_written_with_another_string_type_is_the_same_name(pki):
    # The issuer's name as UTF8String in its certificate, PrintableString in
    # the response: not the same bytes (the fast DER comparison misses), the
    # same name (RFC 5280 7.1), so the issuer's signature is what counts.
    printable = x509.Name([
        x509.NameAttribute(a.oid, a.value, _type=_ASN1Type.PrintableString) for a in pki.intermediate.cert.subject
    ])  # fmt: skip
    twin = _named(pki, printable)
    assert twin.subject.public_bytes() != pki.intermediate.cert.subject.public_bytes()
    leaf = load_leaf(pki.good.chain_path)
    assert validate(_signed_by_issuer_naming(pki, twin), leaf, SYSTEM_CLOCK.now()).status == GOOD


def test_responder_named_but_not_the_issuer_is_refused(pki):
    stranger = _named(pki, x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "someone else")]))
    with pytest.raises(errors.UnauthorizedResponderError, match="name CN=someone else, which is not the issuer"):
        validate(_signed_by_issuer_naming(pki, stranger), load_leaf(pki.good.chain_path), SYSTEM_CLOCK.now())


@pytest.mark.parametrize(
    "tbs, written",
    [
        # ResponseData { responderID [1] Name, producedAt ... }: v1, the version left out
        (bytes.fromhex("300aa1053003310100180130"), (0xA1, bytes.fromhex("3003310100"))),
        # an explicit version [0] first (DER leaves v1 out, but it is read past all the same)
        (bytes.fromhex("3010a003020101a2060404aabbccdd180130"), (0xA2, bytes.fromhex("0404aabbccdd"))),
        (bytes.fromhex("3003a401ff"), None),  # no ResponderID where one must be
        (bytes.fromhex("3004a1053003"), None),  # cut short
    ],
    ids=["by name", "version then by key", "no responder id", "cut short"],
)
def test_responder_id_read_from_the_signed_bytes(tbs, written):
    from types import SimpleNamespace

    from engine.ocsp.validate import _written_id

    assert _written_id(SimpleNamespace(tbs_response_bytes=tbs)) == written
