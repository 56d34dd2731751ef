"""inspect --text beside `openssl ocsp -respin R -resp_text -noverify`, on
every response of the corpus: the same fields, in the same order, spelled
the same (names, serials with their leading zeros, times, hashes, the
responder, every extension), up to the certificates the response carries,
of which ours is a summary followed by the same PEM.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from engine.errors import MalformedResponseError
from engine.ocsp.response_text import describe, render
from tests.corpus_cases import cases, openssl_binary

CASES = cases()
_RESPONDER_ERROR = re.compile(r"Responder Error: (\S+) \((\d+)\)")
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----", re.S)


@pytest.fixture(scope="module")
def openssl() -> str:
    return openssl_binary()


def openssl_text(openssl: str, case) -> str:
    done = subprocess.run(
        [openssl, "ocsp", "-respin", str(case.response), "-resp_text", "-noverify"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.stdout


def fields(text: str) -> list[str]:
    """The response's lines, up to the certificates it carries."""
    lines = [line.rstrip() for line in text.splitlines()]
    return lines[: lines.index("Certificate:")] if "Certificate:" in lines else lines


@pytest.mark.parametrize("case", CASES, ids=str)
def test_text_is_openssls(case, openssl):
    theirs = openssl_text(openssl, case)
    if case.verdict == "malformed":
        # OpenSSL prints what it could read before it stopped, or nothing;
        # we print nothing and say why
        with pytest.raises(MalformedResponseError, match="not a DER OCSPResponse"):
            render(case.der)
        return
    ours = render(case.der)
    error = _RESPONDER_ERROR.fullmatch(theirs.strip())
    if error:
        # the openssl program says "Responder Error: trylater (3)" where the
        # library's OCSP_RESPONSE_print, which we follow, says the same
        # status with its label: the same field, the same value
        assert fields(ours) == ["OCSP Response Data:", f"    OCSP Response Status: {error[1]} (0x{int(error[2]):x})"]
        return
    assert fields(ours) == fields(theirs)
    assert _PEM.findall(ours) == _PEM.findall(theirs)


@pytest.mark.parametrize("case", [c for c in CASES if c.verdict != "malformed"], ids=str)
def test_json_says_what_the_text_says(case):
    data = describe(case.der)
    text = render(case.der)
    for single in data.get("responses", []):
        # serials in the JSON without the leading zero the text pads them with
        assert f"Serial Number: {single['serial'].zfill(len(single['serial']) + len(single['serial']) % 2)}" in text
        assert f"Hash Algorithm: {single['hash_algorithm']}" in text
    extensions = [e for s in data.get("responses", []) for e in s["extensions"]] + data.get("extensions", [])
    assert len(extensions) == text.count(": critical") + len(re.findall(r"^ +\S[^:\n]*: $", text, re.M))
