"""The corpus (tests/corpus): on every real response, OpenSSL says what the
manifest says, the engine says what the manifest says, and the two agree.

The goal (issue 15): accept every response `openssl ocsp -verify` accepts
for the given issuer, refuse the rest with an engine error naming why. Only
times are ours alone to judge: OpenSSL's verify does not look at them.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from engine.ocsp.validate import validate
from tests.corpus_cases import ACCEPTED, CORPUS, cases, engine_verdict, openssl_binary, openssl_verdict, subject

CASES = cases()
#: refusals for time, which OpenSSL's verify does not judge
TIME_REASONS = {"bad_validity", "expired", "not_yet_valid", "too_old"}
REASONS = {
    "malformed", "response_status", "certid_mismatch", "bad_signature", "unauthorized_responder",
    "responder_certificate", "issuer_not_found", *TIME_REASONS,
}  # fmt: skip


@pytest.fixture(scope="module")
def openssl() -> str:
    return openssl_binary()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_openssl_says_what_the_manifest_says(case, openssl):
    verdict, said = openssl_verdict(case, openssl)
    assert verdict == case.openssl, f"{case}: openssl {verdict}s it, the manifest says {case.openssl}\n{said}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_engine_says_what_the_manifest_says(case):
    assert engine_verdict(case) == case.verdict


@pytest.mark.parametrize("case", [c for c in CASES if c.accepted], ids=str)
def test_an_accepted_response_is_kept_as_the_responder_wrote_it(case):
    leaf, cert_id = subject(case)
    staple = validate(case.der, leaf, case.at, cert_id=cert_id)
    # the bytes stored and served are the original ones, even when
    # cryptography could only read a canonical copy of them
    assert staple.der == case.der
    assert staple.serial_number == cert_id.serial_number
    if case.leaf is not None:
        # a cached staple is re-validated without the CertID asked with
        again = validate(case.der, leaf, case.at, check_time=False)
        assert (again.status, again.serial_number) == (staple.status, staple.serial_number)


def test_we_accept_exactly_what_openssl_accepts():
    # the manifest's two verdicts, each checked against the real thing above
    for case in CASES:
        if case.issuer is None:
            assert (case.openssl == "accept") == (case.verdict == "unverifiable"), case
        elif case.verdict not in TIME_REASONS:
            assert (case.openssl == "accept") == case.accepted, case


def test_every_verdict_is_a_status_or_an_engine_reason():
    assert {c.verdict for c in CASES} <= {*ACCEPTED, "unverifiable", *REASONS}
    assert {c.openssl for c in CASES} <= {"accept", "refuse"}
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))


def test_every_case_can_be_judged():
    for case in CASES:
        assert case.response.is_file(), case
        assert case.issuer is None or case.issuer.is_file(), case
        assert case.leaf is None or case.leaf.is_file(), case
        if case.issuer is not None:
            assert case.at is not None and (case.leaf is not None or case.serial is not None), case
            assert case.leaf is None or case.serial is None, f"{case}: a leaf, or a serial, not both"


def test_every_file_is_used_and_every_source_documented():
    used = {c.response for c in CASES} | {c.issuer for c in CASES} | {c.leaf for c in CASES}
    data = {p for p in CORPUS.rglob("*") if p.is_file() and p.parent.name != "LICENSES"}
    data -= {CORPUS / "README.md", CORPUS / "manifest.toml"}
    assert sorted(map(str, data - used)) == []
    readme = (CORPUS / "README.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9]+)/` \|", readme, re.M))
    assert {p.parent.name for p in data} <= documented
    for licence in re.findall(r"`LICENSES/([^`]+)`", readme):
        assert (CORPUS / "LICENSES" / licence).is_file(), licence


def test_cases_without_a_public_leaf_ask_with_a_certid_of_their_own():
    # the CertID is written from the issuer and the serial, never copied
    # from the response: another issuer, or another serial, does not match
    case = next(c for c in CASES if c.name == "golang-gts1c3")
    assert engine_verdict(case) == "good"
    assert engine_verdict(replace(case, issuer=CORPUS / "vectors" / "letsencryptx3.pem")) == "certid_mismatch"
    assert engine_verdict(replace(case, serial=(case.serial or 0) + 1)) == "certid_mismatch"
